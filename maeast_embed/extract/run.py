"""`run_extract`: a whole run over an output folder (resume, shards, manifest, progress, summary)."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import FULL_DISK, append_line, output_error, writing
from ..errors import ConfigError
from ..features import Embedder
from .engine import check_layer, iter_results
from .jobs import Job, collect_jobs, shard_of
from .lock import lock_path, run_lock
from .manifest import manifest_name, read_manifest, run_header, run_signature
from .npz import FrameSpool, remove_leftovers, write_npz_atomic
from .options import ExtractOptions
from .partrun import PartOutput, parts_of_run
from .result import Result
from .rows import Row


@dataclass
class Summary:
    """What a run did (files counted in this shard)."""

    manifest: Path
    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    audio_seconds: float = 0.0
    seconds: float = 0.0
    taken_over: str | None = None  # the holder of a lock a killed run left
    ignored: str = ""  # what folder scans did not treat as audio
    repaired: list[tuple[str, str]] = field(default_factory=list)  # broken parts found, set aside

    @property
    def ok(self) -> bool:
        return not self.failed

    def lines(self) -> list[str]:
        rate = (
            f", {self.done / self.seconds:.2f} files/s, real-time x{self.audio_seconds / self.seconds:.1f}"
            if self.seconds > 0 and self.done
            else ""
        )
        out = [f"took over the lock of a killed run ({self.taken_over})"] if self.taken_over else []
        out += [self.ignored] if self.ignored else []
        out += [f"BROKEN PART {path}: {reason}" for path, reason in self.repaired]
        out += [
            f"{self.done} embedded, {self.skipped} skipped (already done), {len(self.failed)} failed "
            f"in {self.seconds:.1f} s ({self.audio_seconds:.1f} s of audio{rate})",
            f"manifest: {self.manifest}",
        ]
        out += [f"FAILED {path}: {reason}" for path, reason in self.failed]
        return out


class Progress:
    """tqdm bar (TTY only, unless forced) with files/s and audio seconds per second."""

    def __init__(self, total: int, enabled: bool | None) -> None:
        from tqdm import tqdm

        self.start = time.perf_counter()
        self.audio = 0.0
        self.bar = tqdm(
            total=total,
            unit="file",
            disable=(None if enabled is None else not enabled),
            dynamic_ncols=True,
            file=sys.stderr,
        )

    def update(self, audio_seconds: float) -> None:
        self.audio += audio_seconds
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix_str(f"{self.audio / elapsed:.0f} audio-s/s", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def run_extract(
    inputs: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    embedder: Embedder,
    options: ExtractOptions,
    *,
    progress: bool | None = None,
) -> Summary:
    """Embed every input file not done yet into `output_dir`; never raises for a bad file.

    Raises ConfigError when `output_dir` holds results made with different settings (model,
    layer, granularity, pooling, dtype, chunking) unless `options.overwrite` is set.
    """
    started = time.perf_counter()
    check_layer(embedder, options.layer)
    output_dir = Path(output_dir)
    with writing(output_dir, "create"):  # read-only, full, not a folder: an OutputError naming it
        output_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = output_dir / manifest_name(options.shard)
    with run_lock(lock_path(output_dir, manifest_path.name)) as left_by:
        return _run_locked(inputs, output_dir, manifest_path, embedder, options, progress, started, left_by)


def _run_locked(
    inputs: Sequence[str | os.PathLike],
    output_dir: Path,
    manifest_path: Path,
    embedder: Embedder,
    options: ExtractOptions,
    progress: bool | None,
    started: float,
    left_by: str | None,
) -> Summary:
    headers, previous = read_manifest(manifest_path)
    signature = run_signature(embedder, options)
    if headers and not options.overwrite and headers[-1].get("signature") != signature:
        old = headers[-1].get("signature", {})
        changed = ", ".join(f"{k}: {old.get(k)!r} -> {signature.get(k)!r}"
                            for k in dict.fromkeys([*signature, *old]) if old.get(k) != signature.get(k))
        raise ConfigError(
            f"{output_dir} holds embeddings made with other settings ({changed}); "
            "pass --overwrite to redo them or choose another output folder"
        )
    collected = collect_jobs(inputs, output_dir)
    index, count = options.shard
    jobs = [job for job in collected.jobs if shard_of(job.rel, count) == index]
    summary = Summary(manifest_path, taken_over=left_by, ignored=collected.ignored)

    with writing(manifest_path, "append to"):
        if manifest_path.is_file() and manifest_path.stat().st_size:
            with open(manifest_path, "rb") as handle:  # a run killed mid-line leaves no newline
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    append_line(manifest_path, "")

    def record(entry: dict[str, Any]) -> None:
        append_line(manifest_path, json.dumps(entry))

    def record_file(name: str, status: str, job: Job | None = None, output: Path | None = None,
                    **fields: Any) -> None:
        entry = {"type": "file", "input": name, "output": str(output) if output else None,
                 "status": status, "duration": None, "frames": None, "error": None, **fields}
        if job is not None and job.key is not None:
            entry.update(shard=job.shard, key=job.key)
        if job is not None and job.renamed:  # an unsafe input name (see outpaths.safe_relative)
            entry["renamed"] = job.renamed
        entry["elapsed"] = round(time.perf_counter() - started, 3)
        record(entry)

    header = run_header(embedder, options, [str(i) for i in inputs], files=len(jobs), taken_over=left_by,
                        ignored=collected.ignored)
    record(header)
    pending: dict[str, tuple[Job, float, int | None]] = {}  # rows in the open part: job, seconds, frames

    def committed(part: Path, rows: list[Row]) -> None:
        for row in rows:
            job, duration, frames = pending.pop(row.key)
            summary.done += 1
            summary.audio_seconds += duration
            record_file(job.name, "ok", job, part, duration=round(duration, 6), frames=frames,
                        shape=list(row.embedding.shape))

    parts = None if options.format == "npz" else PartOutput(output_dir, options, header, committed)
    if parts is not None:
        summary.repaired = parts.problems
    for path, reason in collected.problems:
        summary.failed.append((path, reason))
        record_file(path, "failed", error=reason)
    todo = []
    for job in jobs:
        out = job.output(output_dir) if parts is None else parts.done.get(job.rel)
        if (out.exists() if parts is None else out is not None) and not options.overwrite:
            before = previous.get(job.name, {})
            summary.skipped += 1
            record_file(job.name, "skipped", job, out, duration=before.get("duration"),
                        frames=before.get("frames"))
        else:
            todo.append(job)
    if parts is None:
        remove_leftovers([job.output(output_dir) for job in jobs])  # temporary files of killed runs

    with closing(Progress(len(todo), progress)) as bar, parts_of_run(parts):
        for result in iter_results(embedder, todo, options, spool_dir=output_dir):
            job = result.job
            if parts is not None:
                if result.error is None:
                    pending[job.rel] = (job, result.duration, result.frames)
                    write_row(parts, job, result, options.storage_dtype)
                else:
                    summary.failed.append((job.name, result.error))
                    record_file(job.name, "failed", job, duration=result.duration, error=result.error)
                bar.update(result.duration or 0.0)
                continue
            out = job.output(output_dir)
            if result.error is None:
                try:
                    embedding = result.embedding
                    if not isinstance(embedding, FrameSpool):
                        embedding = embedding.astype(options.storage_dtype, copy=False)
                    write_npz_atomic(out, {"embedding": embedding, "timestamps": result.timestamps},
                                     root=output_dir, spool_dtype=options.storage_dtype)
                except OSError as err:  # an OutputError naming `out`
                    if err.errno in FULL_DISK:  # every later file would fail too: stop, clearly
                        raise output_error(out, err) from err
                    result.error = str(output_error(out, err))
                finally:
                    if isinstance(result.embedding, FrameSpool):
                        result.embedding.close()
            if result.error is None:
                summary.done += 1
                summary.audio_seconds += result.duration
                record_file(job.name, "ok", job, out, duration=round(result.duration, 6),
                            frames=result.frames, shape=list(result.embedding.shape))
            else:
                summary.failed.append((job.name, result.error))
                record_file(job.name, "failed", job, duration=result.duration, error=result.error)
            bar.update(result.duration or 0.0)
    summary.seconds = time.perf_counter() - started
    return summary


def write_row(parts: PartOutput, job: Job, result: Result, storage_dtype: str) -> None:
    """Add a result to the open part; an error writing it stops the run (every later row would
    go to the same part), as an OutputError naming the part."""
    embedding = result.embedding
    try:
        if isinstance(embedding, FrameSpool):
            array = embedding.array(storage_dtype)
        else:
            array = embedding.astype(storage_dtype, copy=False)
    finally:
        if isinstance(embedding, FrameSpool):
            embedding.close()
    row = Row(job.rel, job.name, job.shard, result.duration, result.frames, result.timestamps, array)
    parts.add(row)
