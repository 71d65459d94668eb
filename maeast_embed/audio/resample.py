"""Resampling to 16 kHz: whole signals, consecutive blocks, and windows of a longer signal.

The filter is torchaudio's default one (`torchaudio.functional.resample`: Hann-windowed sinc,
6 zero crossings, roll-off 0.99), computed here so the core needs no torchaudio; the samples
equal torchaudio's to float rounding. All three forms give the samples of one whole-signal
call: a block or window is resampled with enough input on each side that the filter never sees
an edge the whole signal does not have.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import AudioError
from ..frontend import SAMPLE_RATE

_FILTER_WIDTH = 6  # torchaudio.functional.resample defaults
_ROLLOFF = 0.99
_BLOCK_SPAN = 4  # a phase block spans about this many filter lengths of input


def resampled_length(frames: int, sample_rate: int) -> int:
    """Samples after resampling `frames` at `sample_rate` to 16 kHz (torchaudio's ceil rule)."""
    if sample_rate == SAMPLE_RATE:
        return frames
    g = math.gcd(sample_rate, SAMPLE_RATE)
    return -(-frames * (SAMPLE_RATE // g) // (sample_rate // g))


class _Filter:
    """The polyphase filter for `orig` input samples -> `new` output samples (a rate pair
    reduced by its gcd), in blocks of consecutive output phases.

    Output sample u * new + j is the dot product of filter row j with the input padded by
    `width` zeros, from u * orig on (torchaudio's conv1d of stride `orig`). Row j is non-zero
    on about 2 * 6 * orig / cutoff inputs only, so each block of phases keeps the columns its
    rows use: one conv1d per block instead of a kernel of orig + 2 * width columns per phase.
    """

    def __init__(self, orig: int, new: int) -> None:
        cutoff = min(orig, new) * _ROLLOFF
        self.orig, self.new = orig, new
        self.width = math.ceil(_FILTER_WIDTH * orig / cutoff)
        span = 2 * self.width + orig  # torchaudio's kernel length
        taps = math.ceil(2 * _FILTER_WIDTH * orig / cutoff) + 2
        phase = torch.arange(new)
        first = (self.width + orig * phase.double() / new - _FILTER_WIDTH * orig / cutoff).floor().long()
        first = first.clamp_(min=0)
        cols = first[:, None] + torch.arange(taps)
        # torchaudio's arithmetic for the float32 kernel (Resample(dtype=float32), or
        # functional.resample of a float32 signal), at the columns each row uses
        t = torch.arange(0, -new, -1, dtype=torch.float32)[:, None] / new + (cols - self.width).float() / orig
        t *= cutoff
        t = t.clamp_(-_FILTER_WIDTH, _FILTER_WIDTH)
        window = torch.cos(t * math.pi / _FILTER_WIDTH / 2) ** 2
        t *= math.pi
        rows = torch.where(t == 0, torch.tensor(1.0), t.sin() / t) * (window * (cutoff / orig))
        rows[cols >= span] = 0
        size = max(1, min(new, round(_BLOCK_SPAN * taps * new / orig)))
        self.blocks: list[tuple[int, Tensor]] = []  # (first input column, kernel [phases, 1, columns])
        for p0 in range(0, new, size):
            p1 = min(new, p0 + size)
            start, stop = int(first[p0]), min(span, int(first[p1 - 1]) + taps)
            kernel = torch.zeros(p1 - p0, stop - start + taps)
            kernel[torch.arange(p1 - p0)[:, None], cols[p0:p1] - start] = rows[p0:p1]
            self.blocks.append((start, kernel[:, None, : stop - start].contiguous()))

    def __call__(self, wave: Tensor) -> Tensor:
        shape, frames = wave.shape[:-1], wave.shape[-1]
        target = -(-frames * self.new // self.orig)
        units = -(-target // self.new)
        if units == 0:
            return wave.new_zeros(*shape, 0)
        padded = F.pad(wave.reshape(-1, 1, frames), (self.width, self.width + self.orig))
        outs = [
            F.conv1d(padded[..., start : start + (units - 1) * self.orig + kernel.shape[-1]],
                     kernel.to(wave.device), stride=self.orig)
            for start, kernel in self.blocks
        ]
        out = outs[0] if len(outs) == 1 else torch.cat(outs, 1)  # [B, new, units]
        return out.transpose(1, 2).reshape(*shape, units * self.new)[..., :target]


@lru_cache(maxsize=16)
def _filter(sample_rate: int) -> _Filter:
    # built once per rate (for 44.1 kHz building takes longer than applying it to seconds of audio)
    g = math.gcd(sample_rate, SAMPLE_RATE)
    return _Filter(sample_rate // g, SAMPLE_RATE // g)


def resample(wave: Tensor, sample_rate: int) -> Tensor:
    """Resample waveforms [..., N] to 16 kHz in float32 (torchaudio's default windowed-sinc filter)."""
    if sample_rate == SAMPLE_RATE:
        return wave
    if sample_rate <= 0:
        raise AudioError(f"invalid sample rate {sample_rate}")
    return _filter(int(sample_rate))(wave.float())


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
