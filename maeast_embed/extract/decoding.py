"""Decoding threads: files read and resampled ahead of the encoder, in input order."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from torch import Tensor

from ..audio import load_audio, probe
from ..errors import AudioError, MAEASTError
from ..frontend import FRAME_LENGTH
from .jobs import Job
from .options import ExtractOptions


@dataclass
class Decoded:
    job: Job
    wave: Tensor | None = None  # None: stream it
    error: str | None = None


def describe_error(err: BaseException) -> str:
    return str(err) if isinstance(err, MAEASTError) else f"{type(err).__name__}: {err}"


def decode(job: Job, options: ExtractOptions) -> Decoded:
    if job.error is not None:
        return Decoded(job, error=job.error)
    try:
        info = probe(job.input)
        if info.samples_16k < FRAME_LENGTH:
            raise AudioError(f"audio of {info.duration * 1000:.1f} ms is shorter than one 25 ms fbank frame")
        if info.duration > options.stream_seconds:
            return Decoded(job)
        wave = load_audio(job.input)
        if wave.numel() < FRAME_LENGTH:
            raise AudioError(f"audio of {wave.numel()} samples is shorter than one 25 ms fbank frame")
        return Decoded(job, wave)
    except Exception as err:  # noqa: BLE001 - one bad file must not stop the run
        return Decoded(job, error=describe_error(err))


def decoded_stream(jobs: Sequence[Job], options: ExtractOptions, ahead: int) -> Iterator[Decoded]:
    """Decode in input order, `num_workers` threads working up to `ahead` files in advance."""
    if options.num_workers == 0:
        yield from (decode(job, options) for job in jobs)
        return
    with ThreadPoolExecutor(options.num_workers, thread_name_prefix="decode") as pool:
        pending: deque[Future[Decoded]] = deque()
        queue = iter(jobs)
        for job in queue:
            pending.append(pool.submit(decode, job, options))
            if len(pending) >= ahead:
                break
        while pending:
            done = pending.popleft().result()
            job = next(queue, None)
            if job is not None:
                pending.append(pool.submit(decode, job, options))
            yield done

