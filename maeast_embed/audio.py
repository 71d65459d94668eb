"""Audio in: decode anything libsndfile reads, average to mono, resample to 16 kHz, find files.

Whole files are read with `load_audio`; files too long to hold in memory are read with
`iter_audio_blocks`, which resamples block by block with enough context on each side that the
concatenated blocks equal the whole-file resampling (to float rounding).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from torch import Tensor

from .errors import AudioError
from .frontend import SAMPLE_RATE

# libsndfile major format -> file extensions it is usually stored under
_FORMAT_EXTENSIONS = {
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
LIST_EXTENSIONS = (".txt", ".lst", ".list", ".csv", ".tsv")
_RESAMPLE_FILTER_WIDTH = 6  # torchaudio.functional.resample defaults
_RESAMPLE_ROLLOFF = 0.99


def audio_extensions() -> tuple[str, ...]:
    """Extensions (with dot) of the formats the installed libsndfile can read."""
    available = set(sf.available_formats())
    found = {f".{ext}" for fmt, exts in _FORMAT_EXTENSIONS.items() if fmt in available for ext in exts}
    return tuple(sorted(found))


def supported_formats_text() -> str:
    """One line for --help: libsndfile version and the readable formats."""
    names = [fmt for fmt in _FORMAT_EXTENSIONS if fmt in sf.available_formats() and fmt != "WAVEX"]
    mp3 = "with" if "MP3" in sf.available_formats() else "without"
    return f"libsndfile {sf.__libsndfile_version__} ({mp3} mp3): {', '.join(names).lower()}"


@dataclass(frozen=True)
class AudioInfo:
    """What the header says: native rate, channels, frames, and the duration in seconds."""

    path: str
    sample_rate: int
    channels: int
    frames: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0

    @property
    def samples_16k(self) -> int:
        """Samples after resampling to 16 kHz (torchaudio's ceil rule)."""
        return resampled_length(self.frames, self.sample_rate)


def resampled_length(frames: int, sample_rate: int) -> int:
    if sample_rate == SAMPLE_RATE:
        return frames
    g = math.gcd(sample_rate, SAMPLE_RATE)
    return -(-frames * (SAMPLE_RATE // g) // (sample_rate // g))


def _open(path: str | os.PathLike) -> sf.SoundFile:
    """Open for reading, turning every failure into an AudioError that says why."""
    path = Path(path)
    if not path.exists():
        raise AudioError(f"file not found: {path}")
    if path.is_dir():
        raise AudioError(f"is a directory, not an audio file: {path}")
    if not os.access(path, os.R_OK):
        raise AudioError(f"permission denied: {path}")
    if path.stat().st_size == 0:
        raise AudioError(f"empty file (0 bytes): {path}")
    try:
        return sf.SoundFile(str(path))
    except PermissionError as err:
        raise AudioError(f"permission denied: {path}") from err
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        reason = getattr(err, "error_string", None) or str(err)
        raise AudioError(f"not a readable audio file ({reason.rstrip('.')}): {path}") from err


def probe(path: str | os.PathLike) -> AudioInfo:
    """Read the header only; raises AudioError for files that cannot be decoded."""
    with _open(path) as handle:
        info = AudioInfo(str(path), int(handle.samplerate), int(handle.channels), int(handle.frames))
    if info.frames <= 0:
        raise AudioError(f"no audio samples in file: {path}")
    return info


def _to_mono(block: np.ndarray, path: str | os.PathLike) -> Tensor:
    """[frames, channels] float32 -> [frames] mono, checked for NaN/Inf."""
    mono = torch.from_numpy(block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0])
    if not bool(torch.isfinite(mono).all()):
        raise AudioError(f"audio contains NaN or Inf samples: {path}")
    return mono


def _read(handle: sf.SoundFile, frames: int, path: str | os.PathLike) -> np.ndarray:
    try:
        return handle.read(frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        reason = getattr(err, "error_string", None) or str(err)
        raise AudioError(f"decoding failed ({reason.rstrip('.')}): {path}") from err


def resample(wave: Tensor, sample_rate: int) -> Tensor:
    """Resample a mono waveform to 16 kHz (torchaudio's default windowed-sinc filter)."""
    if sample_rate == SAMPLE_RATE:
        return wave
    if sample_rate <= 0:
        raise AudioError(f"invalid sample rate {sample_rate}")
    return AF.resample(wave, int(sample_rate), SAMPLE_RATE)


def load_audio(path: str | os.PathLike) -> Tensor:
    """Decode a whole file to a float32 16 kHz mono tensor in [-1, 1]."""
    with _open(path) as handle:
        rate = int(handle.samplerate)
        data = _read(handle, -1, path)
    if data.shape[0] == 0:
        raise AudioError(f"no audio samples in file: {path}")
    return resample(_to_mono(data, path), rate)


class StreamResampler:
    """Resamples consecutive blocks so that their concatenation equals one whole-signal call.

    torchaudio's output unit k (new_freq / gcd samples) depends on input samples
    [k * orig - width, (k + 1) * orig + width); each call therefore keeps `context` samples on
    both sides of the part it emits, and emits only whole units.
    """

    def __init__(self, sample_rate: int) -> None:
        g = math.gcd(sample_rate, SAMPLE_RATE)
        self.rate = sample_rate
        self.orig, self.new = sample_rate // g, SAMPLE_RATE // g
        width = math.ceil(_RESAMPLE_FILTER_WIDTH * self.orig / (_RESAMPLE_ROLLOFF * min(self.orig, self.new)))
        self.context = self.orig * ((width + 1) // self.orig + 2)  # >= width + orig, whole units
        self.buffer = torch.zeros(0)
        self.left = 0  # samples of left context at the start of the buffer

    def push(self, block: Tensor, final: bool = False) -> Tensor:
        if self.rate == SAMPLE_RATE:
            return block
        buffer = torch.cat([self.buffer, block])
        skip = self.left // self.orig * self.new
        if final:
            self.buffer = torch.zeros(0)
            return resample(buffer, self.rate)[skip:] if buffer.numel() > self.left else buffer[:0]
        usable = (buffer.numel() - self.left - self.context) // self.orig * self.orig
        if usable <= 0:
            self.buffer = buffer
            return buffer[:0]
        out = resample(buffer[: self.left + usable + self.context], self.rate)
        out = out[skip : skip + usable // self.orig * self.new]
        start = self.left + usable
        keep = max(0, start - self.context)
        self.buffer, self.left = buffer[keep:].clone(), start - keep
        return out


def iter_audio_blocks(path: str | os.PathLike, block_seconds: float = 300.0) -> Iterator[Tensor]:
    """Yield a file as consecutive 16 kHz mono blocks (about `block_seconds` each, the last
    shorter) without ever holding the whole file; concatenated they equal `load_audio`."""
    with _open(path) as handle:
        rate = int(handle.samplerate)
        resampler = StreamResampler(rate)
        frames = max(resampler.orig, int(block_seconds * rate) // resampler.orig * resampler.orig)
        total = 0
        while True:
            data = _read(handle, frames, path)
            total += data.shape[0]
            final = data.shape[0] < frames
            out = resampler.push(_to_mono(data, path), final=final)
            if out.numel():
                yield out
            if final:
                break
    if total == 0:
        raise AudioError(f"no audio samples in file: {path}")


def _is_audio_name(path: Path, extensions: tuple[str, ...]) -> bool:
    return path.suffix.lower() in extensions and not path.name.startswith(".")


def find_audio(folder: str | os.PathLike) -> list[Path]:
    """Audio files under a folder, recursively, sorted; hidden files and folders are skipped."""
    folder = Path(folder)
    extensions = audio_extensions()
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(root) / name for name in files if _is_audio_name(Path(name), extensions))
    return sorted(found)


def read_path_list(list_file: str | os.PathLike) -> tuple[Path, list[str]]:
    """Paths named in a list file -> (root they are relative to, entries as written).

    .txt/.lst/.list: one path per line ('#' comments). .csv: the column named path, file,
    filename or audio if the first row names one, else the first column. .tsv: a fairseq
    manifest (first line the root folder, then `relative/path<TAB>samples`) or first column.
    Relative entries are relative to the list file's folder (or the manifest root).
    """
    list_file = Path(list_file)
    root = list_file.parent
    try:
        text = list_file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise AudioError(f"cannot read the list file {list_file}: {err}") from err
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    suffix = list_file.suffix.lower()
    if suffix == ".csv":
        rows = [row for row in csv.reader(lines) if row]
        column = 0
        if rows:
            header = [cell.strip().lower() for cell in rows[0]]
            named = [i for i, cell in enumerate(header) if cell in ("path", "file", "filename", "audio")]
            if named:
                column, rows = named[0], rows[1:]
        entries = [row[column].strip() for row in rows if len(row) > column]
    elif suffix == ".tsv":
        if lines and "\t" not in lines[0] and (list_file.parent / lines[0].strip()).is_dir():
            root, lines = list_file.parent / lines[0].strip(), lines[1:]
        entries = [line.split("\t")[0].strip() for line in lines]
    else:
        entries = [line.strip() for line in lines]
    return root, [entry for entry in entries if entry]


def common_root(paths: Iterable[Path]) -> Path:
    """Deepest folder that contains every path."""
    parents = [str(p.parent) for p in paths]
    return Path(os.path.commonpath(parents)) if parents else Path(".")
