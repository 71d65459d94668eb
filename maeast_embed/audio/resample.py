"""Resampling to 16 kHz: whole signals, consecutive blocks, and windows of a longer signal.

All three give the same samples as one `torchaudio.functional.resample` call on the whole
signal (to float rounding): a block or window is resampled with enough input on each side that
the filter never sees an edge the whole signal does not have.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torchaudio.transforms as T
from torch import Tensor

from ..errors import AudioError
from ..frontend import SAMPLE_RATE

_FILTER_WIDTH = 6  # torchaudio.functional.resample defaults
_ROLLOFF = 0.99


def resampled_length(frames: int, sample_rate: int) -> int:
    """Samples after resampling `frames` at `sample_rate` to 16 kHz (torchaudio's ceil rule)."""
    if sample_rate == SAMPLE_RATE:
        return frames
    g = math.gcd(sample_rate, SAMPLE_RATE)
    return -(-frames * (SAMPLE_RATE // g) // (sample_rate // g))


@lru_cache(maxsize=16)
def _resampler(sample_rate: int) -> T.Resample:
    # the filter `torchaudio.functional.resample` builds on every call (for 44.1 kHz that takes
    # far longer than applying it), built once per rate; the same float32 numbers
    return T.Resample(sample_rate, SAMPLE_RATE, dtype=torch.float32)


def resample(wave: Tensor, sample_rate: int) -> Tensor:
    """Resample a mono waveform to 16 kHz (torchaudio's default windowed-sinc filter)."""
    if sample_rate == SAMPLE_RATE:
        return wave
    if sample_rate <= 0:
        raise AudioError(f"invalid sample rate {sample_rate}")
    return _resampler(int(sample_rate))(wave.float())


class Ratio:
    """The rate ratio in whole units: `orig` input samples make `new` output samples, and
    output unit k depends only on input [k * orig - width, (k + 1) * orig + width)."""

    def __init__(self, sample_rate: int) -> None:
        if sample_rate <= 0:
            raise AudioError(f"invalid sample rate {sample_rate}")
        g = math.gcd(sample_rate, SAMPLE_RATE)
        self.rate = sample_rate
        self.orig, self.new = sample_rate // g, SAMPLE_RATE // g
        width = math.ceil(_FILTER_WIDTH * self.orig / (_ROLLOFF * min(self.orig, self.new)))
        self.context = self.orig * ((width + 1) // self.orig + 2)  # >= width + orig, whole units


def window_input(ratio: Ratio, start: int, length: int) -> tuple[int, int]:
    """Input samples [first, last) that give 16 kHz samples [start, start + length) exactly;
    `first` is a whole number of units (resampling from there keeps the unit grid)."""
    if ratio.rate == SAMPLE_RATE:
        return start, start + length
    first_unit, end_unit = start // ratio.new, -(-(start + length) // ratio.new)
    return max(0, first_unit * ratio.orig - ratio.context), end_unit * ratio.orig + ratio.context


def resample_window(chunk: Tensor, ratio: Ratio, first: int, start: int, length: int) -> Tensor:
    """16 kHz samples [start, start + length) from `chunk` = input from sample `first` on (as
    given by `window_input`; a chunk shorter than asked for means the signal ends there)."""
    if ratio.rate == SAMPLE_RATE:
        return chunk[start - first : start - first + length]
    out = resample(chunk, ratio.rate)
    skip = first // ratio.orig * ratio.new
    return out[start - skip : start - skip + length]


class StreamResampler:
    """Resamples consecutive blocks so that their concatenation equals one whole-signal call.

    Each call keeps `context` samples on both sides of the part it emits, and emits only
    whole units.
    """

    def __init__(self, sample_rate: int) -> None:
        self.ratio = Ratio(sample_rate)
        self.rate, self.orig, self.new = sample_rate, self.ratio.orig, self.ratio.new
        self.context = self.ratio.context
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
