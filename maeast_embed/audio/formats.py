"""Which file extensions are audio, and which decoder reads them (for listings and --help).

Decoding never trusts an extension (libsndfile and FFmpeg both look at the bytes); extensions
only decide what a folder scan treats as audio.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import soundfile as sf

# libsndfile major format -> file extensions it is usually stored under
SNDFILE_EXTENSIONS = {
    "WAV": ("wav", "wave"),
    "WAVEX": ("wav",),
    "FLAC": ("flac",),
    "OGG": ("ogg", "oga", "opus"),
    "MP3": ("mp3",),
    "AIFF": ("aif", "aiff", "aifc"),
    "AU": ("au", "snd"),
    "CAF": ("caf",),
    "W64": ("w64",),
    "RF64": ("rf64",),
    "NIST": ("nist", "sph"),
    "VOC": ("voc",),
}
# FFmpeg demuxer -> (label for --help, None where libsndfile reads it first; extensions),
# listed only when the demuxer is built in
FFMPEG_EXTENSIONS = {
    "mov": ("mp4/m4a/mov/3gp (AAC, ALAC)", ("m4a", "m4b", "mp4", "m4v", "mov", "3gp", "3g2")),
    "matroska": ("mkv/webm (Opus, Vorbis)", ("mkv", "mka", "webm", "weba")),
    "ogg": (None, ("ogg", "oga", "opus", "spx")),
    "asf": ("wma/asf", ("wma", "wmv", "asf")),
    "aac": ("aac (ADTS)", ("aac", "adts")),
    "amr": ("amr", ("amr", "awb")),
    "ac3": ("ac3", ("ac3",)),
    "eac3": ("eac3", ("eac3", "ec3")),
    "dts": ("dts", ("dts",)),
    "mp3": (None, ("mp3", "mp2", "mpa")),
    "flac": (None, ("flac",)),
    "wav": (None, ("wav", "wave")),
    "aiff": (None, ("aif", "aiff", "aifc")),
    "caf": (None, ("caf",)),
    "wv": ("wavpack", ("wv",)),
    "ape": ("ape", ("ape",)),
    "tta": ("tta", ("tta",)),
    "tak": ("tak", ("tak",)),
    "truehd": ("truehd", ("thd",)),
    "mpc": ("musepack", ("mpc",)),
    "rm": ("realaudio", ("ra", "rm")),
    "avi": ("avi", ("avi",)),
    "flv": ("flv", ("flv",)),
    "mpegts": ("mpeg-ts", ("mts", "m2ts")),  # not .ts: TypeScript sources use it too
    "mpeg": ("mpeg-ps", ("mpg", "mpeg", "vob")),
    "gsm": ("gsm", ("gsm",)),
}
LIST_EXTENSIONS = (".txt", ".lst", ".list", ".csv", ".tsv")


def _ffmpeg_demuxers() -> set[str]:
    import av

    return set(av.formats_available)


@cache
def audio_extensions() -> tuple[str, ...]:
    """Extensions (with dot) of the formats libsndfile or the bundled FFmpeg can read."""
    available = set(sf.available_formats())
    found = {f".{ext}" for fmt, exts in SNDFILE_EXTENSIONS.items() if fmt in available for ext in exts}
    demuxers = _ffmpeg_demuxers()
    found |= {f".{ext}" for fmt, (_, exts) in FFMPEG_EXTENSIONS.items() if fmt in demuxers for ext in exts}
    return tuple(sorted(found))


def is_audio_name(name: str | Path) -> bool:
    """True for a visible file whose extension is one of `audio_extensions()`."""
    path = Path(name)
    return path.suffix.lower() in audio_extensions() and not path.name.startswith(".")


def supported_formats_text() -> str:
    """One line for --help: the libsndfile and FFmpeg versions and what each reads."""
    import av

    names = [fmt for fmt in SNDFILE_EXTENSIONS if fmt in sf.available_formats() and fmt != "WAVEX"]
    mp3 = "with" if "MP3" in sf.available_formats() else "without"
    demuxers = _ffmpeg_demuxers()
    more = [label for fmt, (label, _) in FFMPEG_EXTENSIONS.items() if fmt in demuxers and label]
    return (
        f"libsndfile {sf.__libsndfile_version__} ({mp3} mp3): {', '.join(names).lower()}; "
        f"FFmpeg {av.ffmpeg_version_info} (PyAV {av.__version__}), first audio stream of video "
        f"files too: {', '.join(more)} and the rest FFmpeg reads"
    )
