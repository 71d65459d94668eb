"""Decoded audio at 16 kHz mono: headers (`probe`), whole files, consecutive blocks, windows.

Lengths in `probe` come from headers or container metadata (`AudioInfo.exact` says which);
what `load_audio`, `iter_audio_blocks` and `read_window` return is what was decoded, and that
is what outputs should record.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..errors import AudioError
from .decoders import Decoder, Source, open_decoder, source_name
from .resample import Ratio, StreamResampler, resample, resample_window, resampled_length, window_input


@dataclass(frozen=True)
class AudioInfo:
    """What the header says: native rate, channels, frames, and the duration in seconds.

    `exact` is False when frames is an estimate from container metadata (FFmpeg formats):
    the decoded length may differ.
    """

    path: str
    sample_rate: int
    channels: int
    frames: int
    exact: bool = True
    backend: str = "libsndfile"

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0

    @property
    def samples_16k(self) -> int:
        """Samples after resampling to 16 kHz (torchaudio's ceil rule)."""
        return resampled_length(self.frames, self.sample_rate)


def probe(path: Source) -> AudioInfo:
    """Read the header only (FFmpeg: the metadata and the first packet); raises AudioError for
    files that cannot be decoded."""
    with open_decoder(path) as decoder:
        frames = decoder.frames
        exact = decoder.frames_exact and frames is not None
        if frames is None:  # no length anywhere in the metadata: decode to count
            frames = _count(decoder)
            exact = True
        info = AudioInfo(source_name(path), decoder.sample_rate, decoder.channels, int(frames), exact,
                         decoder.backend)
    if info.frames <= 0:
        raise AudioError(f"no audio samples in file: {info.path}")
    return info


def _count(decoder: Decoder) -> int:
    total = 0
    while block := decoder.read(1 << 18).shape[0]:
        total += block
    return total


def _to_mono(block: np.ndarray, name: str) -> Tensor:
    """[frames, channels] float32 -> [frames] mono, checked for NaN/Inf."""
    channels = block.shape[1]
    mono = block[:, 0]
    if channels > 1:  # column sums in order: numpy's mean(axis=1), without its slow small-axis reduce
        mono = mono.copy()
        for c in range(1, channels):
            mono += block[:, c]
        mono /= np.float32(channels)
    if not np.isfinite(mono).all():
        raise AudioError(f"audio contains NaN or Inf samples: {name}")
    return torch.from_numpy(np.ascontiguousarray(mono))


def load_audio(path: Source) -> Tensor:
    """Decode a whole file to a float32 16 kHz mono tensor in [-1, 1]."""
    with open_decoder(path) as decoder:
        rate = decoder.sample_rate
        data = decoder.read(-1)
    if data.shape[0] == 0:
        raise AudioError(f"no audio samples in file: {source_name(path)}")
    return resample(_to_mono(data, source_name(path)), rate)


def iter_audio_blocks(path: Source, block_seconds: float = 300.0) -> Iterator[Tensor]:
    """Yield a file as consecutive 16 kHz mono blocks (about `block_seconds` each, the last
    shorter) without ever holding the whole file; concatenated they equal `load_audio`."""
    name = source_name(path)
    with open_decoder(path) as decoder:
        rate = decoder.sample_rate
        resampler = StreamResampler(rate)
        frames = max(resampler.orig, int(block_seconds * rate) // resampler.orig * resampler.orig)
        total = 0
        while True:
            data = decoder.read(frames)
            total += data.shape[0]
            final = data.shape[0] < frames
            out = resampler.push(_to_mono(data, name), final=final)
            if out.numel():
                yield out
            if final:
                break
    if total == 0:
        raise AudioError(f"no audio samples in file: {name}")


def read_window(path: Source, start: int, length: int) -> Tensor:
    """16 kHz mono samples [start, start + length) of a file, decoding only that part (plus the
    resampler's context and the decoder's pre-roll); equal to slicing `load_audio(path)`.
    Shorter (possibly empty) where the file ends sooner."""
    if start < 0 or length < 0:
        raise ValueError(f"window start {start} and length {length} must be >= 0")
    name = source_name(path)
    with open_decoder(path) as decoder:
        ratio = Ratio(decoder.sample_rate)
        first, last = window_input(ratio, start, length)
        if first:
            decoder.seek(first)
        data = decoder.read(last - first)
    if data.shape[0] == 0:
        return torch.zeros(0)
    return resample_window(_to_mono(data, name), ratio, first, start, length)
