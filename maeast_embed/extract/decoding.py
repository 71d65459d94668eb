"""Decoding threads: files read and resampled ahead of the encoder, in input order, each within
its time limit.

A decoder stuck inside native code (libsndfile, FFmpeg) cannot be interrupted from Python, so
the limit is kept from outside: every file is decoded in a daemon thread, the consumer waits for
it at most `ExtractOptions.decode_limit` seconds from the moment it started, and a file past
its limit is recorded as failed while a fresh thread takes its place. The stuck thread is
abandoned (it may keep a core busy until it returns, and what it returns is dropped); being a
daemon, it never keeps the process alive at exit. With `file_timeout=0` and `num_workers=0`,
files are decoded in the calling thread with no limit.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from torch import Tensor

from ..audio import LongerThan, load_audio, probe
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


def decode(job: Job, options: ExtractOptions, on_duration: Callable[[float], None] | None = None) -> Decoded:
    """Decode one job (whole, or marked for streaming when longer than `stream_seconds`, by its
    header or by what decoding finds); `on_duration(seconds)` hears the header's duration (or,
    for a file without one, the seconds counted so far)."""
    if job.error is not None:
        return Decoded(job, error=job.error)
    try:
        info = probe(job.input, progress=on_duration)
        if on_duration is not None:
            on_duration(info.duration)
        if info.samples_16k < FRAME_LENGTH:
            raise AudioError(f"audio of {info.duration * 1000:.1f} ms is shorter than one 25 ms fbank frame")
        if info.duration > options.stream_seconds:
            return Decoded(job)
        try:
            wave = load_audio(job.input, max_seconds=options.stream_seconds)
        except LongerThan:  # the header said less: stream it, never hold it
            return Decoded(job)
        if wave.numel() < FRAME_LENGTH:
            raise AudioError(f"audio of {wave.numel()} samples is shorter than one 25 ms fbank frame")
        return Decoded(job, wave)
    except Exception as err:  # noqa: BLE001 - one bad file must not stop the run
        return Decoded(job, error=describe_error(err))


class _Task:
    """One file being decoded in its own daemon thread."""

    def __init__(self, job: Job) -> None:
        self.job, self.future = job, Future()
        self.started: float | None = None  # when its thread got a slot
        self.duration: float | None = None  # from the header, once read
        self.finished = self.abandoned = False


class _Workers:
    """At most `count` files decoding at once, each in a daemon thread of its own; a file past
    its limit gives its slot back to the others when it is abandoned."""

    def __init__(self, count: int, options: ExtractOptions) -> None:
        self.options = options
        self.slots = threading.Semaphore(count)
        self.lock = threading.Lock()

    def submit(self, job: Job) -> _Task:
        task = _Task(job)
        threading.Thread(target=self._run, args=(task,), daemon=True, name="decode").start()
        return task

    def _run(self, task: _Task) -> None:
        self.slots.acquire()
        task.started = time.monotonic()
        try:
            result = decode(task.job, self.options, on_duration=lambda s: setattr(task, "duration", s))
        except BaseException as err:  # noqa: BLE001 - decode catches Exception; keep the slot honest
            result = Decoded(task.job, error=describe_error(err))
        with self.lock:
            task.finished = True
            if not task.abandoned:
                self.slots.release()
        task.future.set_result(result)

    def wait(self, task: _Task) -> Decoded:
        while True:
            try:
                return task.future.result(timeout=0.25)
            except FutureTimeout:
                pass
            with self.lock:
                if task.finished or task.started is None:
                    continue
                limit = self.options.decode_limit(task.duration)
                if limit is None or time.monotonic() - task.started <= limit:
                    continue
                task.abandoned = True
                self.slots.release()
            what = f"{task.duration:.1f} s of audio" if task.duration is not None else "a file"
            return Decoded(task.job, error=(
                f"decoding did not finish within {limit:.0f} s (--file-timeout; {what}): the decoder "
                "was left behind and the run went on"))


def decoded_stream(jobs: Sequence[Job], options: ExtractOptions, ahead: int) -> Iterator[Decoded]:
    """Decode in input order, `num_workers` threads (at least one when a time limit is set)
    working up to `ahead` files in advance."""
    if options.num_workers == 0 and options.file_timeout == 0:
        yield from (decode(job, options) for job in jobs)
        return
    workers = _Workers(max(1, options.num_workers), options)
    pending: deque[_Task] = deque()
    queue = iter(jobs)
    for job in queue:
        pending.append(workers.submit(job))
        if len(pending) >= ahead:
            break
    while pending:
        done = workers.wait(pending.popleft())
        job = next(queue, None)
        if job is not None:
            pending.append(workers.submit(job))
        yield done
