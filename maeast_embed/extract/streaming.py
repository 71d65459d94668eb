"""Long files in bounded memory: blocks in, aligned windows through the encoder, a running clip
pool or a disk spool out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..atomic import writing
from ..audio import iter_audio_blocks
from ..errors import AudioError, OutputError
from ..features import Embedder, keeps_layer_axis, plan_windows
from ..frontend import FRAME_LENGTH, FRAME_SHIFT, SAMPLE_RATE
from .decoding import describe_error
from .jobs import Job
from .npz import FrameSpool
from .options import ExtractOptions
from .result import Result


class ClipPool:
    """Running mean (float64 sum) and max over time of [layers, t, dim] features."""

    def __init__(self) -> None:
        self.total: Tensor | None = None
        self.peak: Tensor | None = None
        self.steps = 0

    def add(self, features: Tensor) -> None:
        total, peak = features.double().sum(1), features.amax(1)
        self.total = total if self.total is None else self.total + total
        self.peak = peak if self.peak is None else torch.maximum(self.peak, peak)
        self.steps += features.shape[1]

    def result(self, how: str) -> Tensor:
        mean = (self.total / self.steps).float()
        return torch.cat([mean, self.peak], dim=-1) if how == "meanmax" else mean


def stream_windows(
    embedder: Embedder, path: Path, block_seconds: float, timeout: float | None = None
) -> Iterator[tuple[list[Tensor], int]]:
    """Aligned windows of a file read block by block: the windows `plan_windows` would cut from
    the whole file, yielded with the count of 16 kHz samples read so far."""
    kernel_time = embedder.model.cfg.kernel_time
    chunk = embedder.chunk_steps
    hop = chunk * kernel_time * FRAME_SHIFT  # window starts, as in plan_windows
    length = (chunk * kernel_time - 1) * FRAME_SHIFT + FRAME_LENGTH  # a full window
    buffer = torch.zeros(0)
    total = 0
    for block in iter_audio_blocks(path, block_seconds, timeout):
        total += block.numel()
        buffer = torch.cat([buffer, block])
        count = (buffer.numel() - length) // hop + 1 if buffer.numel() >= length else 0
        if count:
            yield [buffer[k * hop : k * hop + length] for k in range(count)], total
            buffer = buffer[count * hop :].clone()
    if total < FRAME_LENGTH:
        raise AudioError(f"audio of {total} samples is shorter than one 25 ms fbank frame")
    if buffer.numel() and total < embedder.min_samples:
        buffer = embedder.prepare(buffer)
    tail = plan_windows(buffer.numel(), kernel_time, chunk)
    if tail:
        yield [buffer[w.start : w.start + w.length] for w in tail], total


def embed_streamed(embedder: Embedder, job: Job, options: ExtractOptions, spool_dir: Path | None) -> Result:
    """Embed a long file within bounded memory (blocks in, running pool or disk spool out)."""
    sink: ClipPool | FrameSpool | list[Tensor]
    if options.granularity == "clip":
        sink = ClipPool()
    elif spool_dir is not None:
        layers = (
            len(embedder.model.encoder.layers)
            if options.layer == "all"
            else (len(options.layer) if keeps_layer_axis(options.layer) else 1)
        )
        with writing(spool_dir, SPOOL_WRITE):
            sink = FrameSpool(
                spool_dir, layers, embedder.feature_dim(options.freq_pool), keeps_layer_axis(options.layer)
            )
    else:
        sink = []
    try:
        total = 0
        add = sink.append if isinstance(sink, list) else sink.add
        if isinstance(sink, FrameSpool):
            add = _spool_adder(sink, spool_dir)
        block_limit = options.decode_limit(options.block_seconds)  # --file-timeout, per block
        for windows, seen in stream_windows(embedder, job.input, options.block_seconds, block_limit):
            total = seen
            for features in embedder.encode_windows(
                windows, layer=options.layer, freq_pool=options.freq_pool
            ):
                add(features)
        duration = total / SAMPLE_RATE
        if isinstance(sink, ClipPool):
            values = sink.result(options.pool)
            values = values if keeps_layer_axis(options.layer) else values[0]
            return Result(job, values.numpy(), np.array([duration / 2]), duration, sink.steps)
        if isinstance(sink, FrameSpool):
            return Result(job, sink, embedder.timestamps(sink.steps), duration, sink.steps)
        packed = embedder.package(torch.cat(sink, dim=1), duration, granularity="frame", layer=options.layer)
        return Result(job, packed.embedding, packed.timestamps, duration, packed.frames)
    except Exception as err:  # noqa: BLE001
        if isinstance(sink, FrameSpool):
            sink.close()
        if isinstance(err, OutputError):  # the output folder, not this file: stop the run
            raise
        return Result(job, error=describe_error(err))


SPOOL_WRITE = "write the spool of a long file (temporary, unnamed) in"


def _spool_adder(spool: FrameSpool, folder: Path):
    """spool.add, an OSError (a full disk above all) raised as an OutputError naming `folder`."""

    def add(features: Tensor) -> None:
        with writing(folder, SPOOL_WRITE):
            spool.add(features)

    return add

