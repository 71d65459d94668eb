"""Decoded audio at 16 kHz mono: headers (`probe`), whole files, consecutive blocks, windows.

Lengths in `probe` come from headers or container metadata (`AudioInfo.exact` says which);
what `load_audio`, `iter_audio_blocks` and `read_window` return is what was decoded, and that
is what outputs should record. Every read goes in blocks of bounded size, each averaged to mono
at once, so memory follows the decoded mono length whatever the header claims; `load_audio`
can stop at a length (`LongerThan`) so that a file longer than its header said is streamed.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import AudioError
from .decoders import Decoder, Source, block_frames, open_decoder, source_name
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


def probe(path: Source, progress: Callable[[float], None] | None = None) -> AudioInfo:
    """Read the header only (FFmpeg: the metadata and the first packet); raises AudioError for
    files that cannot be decoded. Where no metadata gives the length, the file is decoded to
    count it, and `progress(seconds)` hears the seconds counted so far (for time limits)."""
    with open_decoder(path) as decoder:
        frames = decoder.frames
        exact = decoder.frames_exact and frames is not None
        if frames is None:  # no length anywhere in the metadata: decode to count
            frames = _count(decoder, progress)
            exact = True
        info = AudioInfo(source_name(path), decoder.sample_rate, decoder.channels, int(frames), exact,
                         decoder.backend)
    if info.frames <= 0:
        raise AudioError(f"no audio samples in file: {info.path}")
    return info


class LongerThan(AudioError):
    """The decoded audio runs past the length `load_audio` was allowed to hold."""


def _count(decoder: Decoder, progress: Callable[[float], None] | None = None) -> int:
    total = 0
    while block := decoder.read(block_frames(decoder.channels)).shape[0]:
        total += block
        if progress is not None:
            progress(total / decoder.sample_rate)
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


def _read_mono(decoder: Decoder, frames: int, name: str, limit: int | None = None) -> np.ndarray:
    """Up to `frames` samples (< 0: all) as native-rate mono, read in bounded blocks; LongerThan
    once more than `limit` samples were decoded."""
    parts: list[np.ndarray] = []
    total, step = 0, block_frames(decoder.channels)
    while frames < 0 or total < frames:
        data = decoder.read(step if frames < 0 else min(step, frames - total))
        if not data.shape[0]:
            break
        total += data.shape[0]
        if limit is not None and total > limit:
            raise LongerThan(f"more than {limit} samples at {decoder.sample_rate} Hz: {name}")
        parts.append(_to_mono(data, name).numpy())
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def load_audio(path: Source, max_seconds: float | None = None) -> Tensor:
    """Decode a whole file to a float32 16 kHz mono tensor in [-1, 1]; with `max_seconds`,
    raise LongerThan as soon as more than that was decoded (nothing long is ever held)."""
    name = source_name(path)
    with open_decoder(path) as decoder:
        rate = decoder.sample_rate
        limit = None if max_seconds is None else int(max_seconds * rate)
        data = _read_mono(decoder, -1, name, limit)
    if data.shape[0] == 0:
        raise AudioError(f"no audio samples in file: {name}")
    return resample(torch.from_numpy(data), rate)


def iter_audio_blocks(
    path: Source, block_seconds: float = 300.0, timeout: float | None = None
) -> Iterator[Tensor]:
    """Yield a file as consecutive 16 kHz mono blocks (about `block_seconds` each, the last
    shorter) without ever holding the whole file; concatenated they equal `load_audio`.

    With `timeout`, decoding runs in a daemon thread one block ahead, and a block that takes
    longer than `timeout` seconds raises DecodeTimeout (the thread, which Python cannot stop,
    is left behind and drops what it decodes)."""
    if timeout is None:
        yield from _blocks(path, block_seconds)
        return
    yield from _ahead(_blocks(path, block_seconds), timeout, source_name(path))


class DecodeTimeout(AudioError):
    """A decoder that did not return within its time limit."""


_END = object()


def _ahead(blocks: Iterator[Tensor], timeout: float, name: str) -> Iterator[Tensor]:
    """`blocks` produced in a daemon thread, each awaited at most `timeout` seconds."""
    found: queue.Queue[Any] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def hand(item: Any) -> bool:  # False once the consumer is gone
        while not stop.is_set():
            try:
                found.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in blocks:
                if not hand(item):
                    return
            hand(_END)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            hand(err)
        finally:
            blocks.close()

    threading.Thread(target=produce, daemon=True, name=f"decode-blocks {name}"[:60]).start()
    try:
        while True:
            try:
                item = found.get(timeout=timeout)
            except queue.Empty:
                raise DecodeTimeout(
                    f"decoding did not return a block within {timeout:.0f} s (--file-timeout): {name}"
                ) from None
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def _blocks(path: Source, block_seconds: float) -> Iterator[Tensor]:
    name = source_name(path)
    with open_decoder(path) as decoder:
        rate = decoder.sample_rate
        resampler = StreamResampler(rate)
        frames = min(int(block_seconds * rate), 16 * block_frames(decoder.channels))
        frames = max(resampler.orig, frames // resampler.orig * resampler.orig)
        total = 0
        while True:
            data = _read_mono(decoder, frames, name)
            total += data.shape[0]
            final = data.shape[0] < frames
            out = resampler.push(torch.from_numpy(data), final=final)
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
        data = _read_mono(decoder, last - first, name)
    if data.shape[0] == 0:
        return torch.zeros(0)
    return resample_window(torch.from_numpy(data), ratio, first, start, length)
