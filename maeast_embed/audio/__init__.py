"""Audio in: decode every common container, average to mono, resample to 16 kHz, find files.

libsndfile reads what it recognises (WAV, FLAC, OGG, MP3, AIFF, ...); everything else goes
through FFmpeg (PyAV): AAC/M4A/MP4/MOV/3GP, MKV/WebM (Opus, Vorbis), WMA, AMR, AC-3, ...,
taking the first audio stream of video files. Whole files are read with `load_audio`; long
files with `iter_audio_blocks`, which resamples block by block with enough context on each
side that the concatenated blocks equal the whole-file resampling (to float rounding);
`read_window` decodes only a window. Sources are paths, `EncodedAudio` (bytes) or `FileRange`
(a byte range of a larger file, e.g. a tar member).

Modules: `formats` (extensions), `decoders` (libsndfile/FFmpeg behind one interface),
`resample`, `read` (probe, whole files, blocks, windows), `files` (folder scans, list files).
"""

from ..errors import AudioError
from ..frontend import SAMPLE_RATE
from .decoders import Decoder, EncodedAudio, FileRange, Source, open_decoder, source_name
from .files import FolderScan, common_root, find_audio, read_path_list, scan_folder
from .formats import LIST_EXTENSIONS, audio_extensions, is_audio_name, supported_formats_text
from .read import AudioInfo, DecodeTimeout, LongerThan, iter_audio_blocks, load_audio, probe, read_window
from .resample import StreamResampler, resample, resampled_length

__all__ = [
    "SAMPLE_RATE", "AudioError", "AudioInfo", "DecodeTimeout", "Decoder", "EncodedAudio", "FileRange",
    "FolderScan", "LIST_EXTENSIONS", "LongerThan", "Source", "StreamResampler", "audio_extensions",
    "common_root", "find_audio", "is_audio_name", "iter_audio_blocks", "load_audio", "open_decoder", "probe",
    "read_path_list", "read_window", "resample", "resampled_length", "scan_folder", "source_name",
    "supported_formats_text",
]
