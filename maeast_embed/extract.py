"""Embedding extraction over many files: output layout, atomic .npz, manifest, resume, shards.

Every input file becomes `OUTPUT_DIR/<path relative to its input>.npz` holding `embedding`
(float32) and `timestamps` (float64 seconds). `OUTPUT_DIR/manifest.jsonl` is an append-only
log: each run adds a header record (model, options) and then one record per file; the latest
record of a file is its state. Outputs are written to a temporary name and renamed, so a killed
run never leaves a truncated .npz, and a rerun skips what is done. Short files are decoded in
worker threads and batched across files; long files are streamed block by block.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import zipfile
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch import Tensor

from . import __version__
from .audio import (
    LIST_EXTENSIONS,
    common_root,
    find_audio,
    iter_audio_blocks,
    load_audio,
    probe,
    read_path_list,
)
from .errors import AudioError, ConfigError, MAEASTError
from .features import Embedder, Embedding, LayerSpec, keeps_layer_axis, plan_windows, select_layers
from .frontend import FRAME_LENGTH, FRAME_SHIFT, SAMPLE_RATE

MANIFEST = "manifest.jsonl"
TMP_SUFFIX = ".tmp"


@dataclass(frozen=True)
class ExtractOptions:
    """What to extract and how to run (the embedder holds device, dtype, batch and chunk size).

    Files longer than `stream_seconds` are never held whole: they are read in blocks of
    `block_seconds`, frame outputs are spooled to disk and clip outputs pooled on the fly.
    """

    granularity: str = "frame"
    layer: LayerSpec = "last"
    pool: str = "mean"
    freq_pool: str = "concat"
    num_workers: int = 0
    overwrite: bool = False
    shard: tuple[int, int] = (0, 1)
    stream_seconds: float = 600.0
    block_seconds: float = 120.0

    def __post_init__(self) -> None:
        if self.granularity not in ("clip", "frame"):
            raise ConfigError(f"granularity must be 'clip' or 'frame', got {self.granularity!r}")
        if self.pool not in ("mean", "meanmax"):
            raise ConfigError(f"pool must be 'mean' or 'meanmax', got {self.pool!r}")
        if self.freq_pool not in ("concat", "mean"):
            raise ConfigError(f"freq_pool must be 'concat' or 'mean', got {self.freq_pool!r}")
        if self.num_workers < 0:
            raise ConfigError("num_workers must be 0 (decode in the main thread) or more")
        index, count = self.shard
        if count < 1 or not 0 <= index < count:
            raise ConfigError(f"shard must be I/N with 0 <= I < N, got {index}/{count}")
        if self.stream_seconds <= 0 or self.block_seconds <= 0:
            raise ConfigError("stream_seconds and block_seconds must be positive")


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' (0-based I) -> (I, N)."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError as err:
        raise ConfigError(f"shard must look like I/N (e.g. 0/4), got {text!r}") from err
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"shard must be I/N with 0 <= I < N, got {text!r}")
    return index, count


@dataclass(frozen=True)
class Job:
    """One input file and where its embedding goes."""

    input: Path
    rel: str  # posix path relative to its input root, extension kept (a.wav -> a.wav.npz)

    def output(self, output_dir: Path) -> Path:
        return output_dir / f"{self.rel}.npz"


def shard_of(rel: str, count: int) -> int:
    """Stable shard of a file (a hash of its relative path, so adding files moves no others)."""
    return int(hashlib.sha1(rel.encode("utf-8")).hexdigest()[:12], 16) % count


def _list_jobs(list_file: Path) -> list[Job]:
    root, entries = read_path_list(list_file)
    paths = [Path(e) if Path(e).is_absolute() else root / e for e in entries]
    outside = [
        p for e, p in zip(entries, paths, strict=True) if Path(e).is_absolute() or ".." in Path(e).parts
    ]
    base = common_root(outside)
    jobs = []
    for entry, path in zip(entries, paths, strict=True):
        if Path(entry).is_absolute() or ".." in Path(entry).parts:
            rel = os.path.relpath(path, base)
        else:
            rel = os.path.normpath(entry)
        jobs.append(Job(path, Path(rel).as_posix()))
    return jobs


def collect_jobs(inputs: Sequence[str | os.PathLike]) -> tuple[list[Job], list[tuple[str, str]]]:
    """Expand files, folders (recursive) and list files into jobs, plus input-level problems
    (missing input, folder without audio, empty list, two inputs with the same output name)."""
    jobs: list[Job] = []
    problems: list[tuple[str, str]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = find_audio(path)
            if not found:
                problems.append((str(path), "no audio files found in directory"))
            jobs.extend(Job(f, f.relative_to(path).as_posix()) for f in found)
        elif path.suffix.lower() in LIST_EXTENSIONS and path.is_file():
            try:
                listed = _list_jobs(path)
            except MAEASTError as err:
                problems.append((str(path), str(err)))
                continue
            if not listed:
                problems.append((str(path), "the list file names no audio files"))
            jobs.extend(listed)
        elif path.exists() or path.is_symlink():
            jobs.append(Job(path, path.name))
        else:
            problems.append((str(path), "file not found"))
    unique: dict[str, Job] = {}
    for job in jobs:
        first = unique.setdefault(job.rel, job)
        if first is not job and Path(first.input).resolve() != Path(job.input).resolve():
            problems.append((str(job.input), f"output name {job.rel}.npz is already taken by {first.input}"))
    return sorted(unique.values(), key=lambda j: j.rel), problems


# ---------------------------------------------------------------- writing


class FrameSpool:
    """Frame features of a long file kept on disk (one temporary file per layer) until written."""

    def __init__(self, directory: Path, layers: int, dim: int, keep_layer_axis: bool) -> None:
        self.files = [tempfile.TemporaryFile(dir=directory) for _ in range(layers)]
        self.dim, self.steps, self.keep_layer_axis = dim, 0, keep_layer_axis

    def add(self, features: Tensor) -> None:  # [layers, t, dim]
        for handle, layer in zip(self.files, features.float().numpy(), strict=True):
            handle.write(np.ascontiguousarray(layer).tobytes())
        self.steps += features.shape[1]

    @property
    def shape(self) -> tuple[int, ...]:
        inner = (self.steps, self.dim)
        return (len(self.files), *inner) if self.keep_layer_axis else inner

    def write_npy(self, out: IO[bytes]) -> None:
        header = {
            "descr": np.lib.format.dtype_to_descr(np.dtype("<f4")),
            "fortran_order": False,
            "shape": self.shape,
        }
        np.lib.format.write_array_header_1_0(out, header)
        for handle in self.files:
            handle.seek(0)
            shutil.copyfileobj(handle, out, 1 << 22)

    def close(self) -> None:
        for handle in self.files:
            handle.close()


def write_npz_atomic(path: Path, arrays: dict[str, np.ndarray | FrameSpool]) -> None:
    """Write an uncompressed .npz (np.load reads it) to a temporary name, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        with open(tmp, "wb") as handle:
            with zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
                for name, value in arrays.items():
                    with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                        if isinstance(value, FrameSpool):
                            value.write_npy(member)
                        else:
                            np.lib.format.write_array(member, np.asarray(value), allow_pickle=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------- embedding


@dataclass
class _Result:
    job: Job
    embedding: np.ndarray | FrameSpool | None = None
    timestamps: np.ndarray | None = None
    duration: float | None = None
    frames: int | None = None
    error: str | None = None


@dataclass
class _Decoded:
    job: Job
    wave: Tensor | None = None  # None: stream it
    error: str | None = None


def _describe(err: BaseException) -> str:
    return str(err) if isinstance(err, MAEASTError) else f"{type(err).__name__}: {err}"


def _decode(job: Job, options: ExtractOptions) -> _Decoded:
    try:
        info = probe(job.input)
        if info.samples_16k < FRAME_LENGTH:
            raise AudioError(f"audio of {info.duration * 1000:.1f} ms is shorter than one 25 ms fbank frame")
        if info.duration > options.stream_seconds:
            return _Decoded(job)
        wave = load_audio(job.input)
        if wave.numel() < FRAME_LENGTH:
            raise AudioError(f"audio of {wave.numel()} samples is shorter than one 25 ms fbank frame")
        return _Decoded(job, wave)
    except Exception as err:  # noqa: BLE001 - one bad file must not stop the run
        return _Decoded(job, error=_describe(err))


def _decoded_stream(jobs: Sequence[Job], options: ExtractOptions, ahead: int) -> Iterator[_Decoded]:
    """Decode in input order, `num_workers` threads working up to `ahead` files in advance."""
    if options.num_workers == 0:
        yield from (_decode(job, options) for job in jobs)
        return
    with ThreadPoolExecutor(options.num_workers, thread_name_prefix="decode") as pool:
        pending: deque[Future[_Decoded]] = deque()
        queue = iter(jobs)
        for job in queue:
            pending.append(pool.submit(_decode, job, options))
            if len(pending) >= ahead:
                break
        while pending:
            done = pending.popleft().result()
            job = next(queue, None)
            if job is not None:
                pending.append(pool.submit(_decode, job, options))
            yield done


class _ClipPool:
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


def _stream_windows(
    embedder: Embedder, path: Path, block_seconds: float
) -> Iterator[tuple[list[Tensor], int]]:
    """Aligned windows of a file read block by block: the windows `plan_windows` would cut from
    the whole file, yielded with the count of 16 kHz samples read so far."""
    kernel_time = embedder.model.cfg.kernel_time
    chunk = embedder.chunk_steps
    hop = chunk * kernel_time * FRAME_SHIFT  # window starts, as in plan_windows
    length = (chunk * kernel_time - 1) * FRAME_SHIFT + FRAME_LENGTH  # a full window
    buffer = torch.zeros(0)
    total = 0
    for block in iter_audio_blocks(path, block_seconds):
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


def _embed_streamed(embedder: Embedder, job: Job, options: ExtractOptions, spool_dir: Path | None) -> _Result:
    """Embed a long file within bounded memory (blocks in, running pool or disk spool out)."""
    sink: _ClipPool | FrameSpool | list[Tensor]
    if options.granularity == "clip":
        sink = _ClipPool()
    elif spool_dir is not None:
        layers = (
            len(embedder.model.encoder.layers)
            if options.layer == "all"
            else (len(options.layer) if keeps_layer_axis(options.layer) else 1)
        )
        sink = FrameSpool(
            spool_dir, layers, embedder.feature_dim(options.freq_pool), keeps_layer_axis(options.layer)
        )
    else:
        sink = []
    try:
        total = 0
        add = sink.append if isinstance(sink, list) else sink.add
        for windows, seen in _stream_windows(embedder, job.input, options.block_seconds):
            total = seen
            for features in embedder.encode_windows(
                windows, layer=options.layer, freq_pool=options.freq_pool
            ):
                add(features)
        duration = total / SAMPLE_RATE
        if isinstance(sink, _ClipPool):
            values = sink.result(options.pool)
            values = values if keeps_layer_axis(options.layer) else values[0]
            return _Result(job, values.numpy(), np.array([duration / 2]), duration, sink.steps)
        if isinstance(sink, FrameSpool):
            return _Result(job, sink, embedder.timestamps(sink.steps), duration, sink.steps)
        packed = embedder.package(torch.cat(sink, dim=1), duration, granularity="frame", layer=options.layer)
        return _Result(job, packed.embedding, packed.timestamps, duration, packed.frames)
    except Exception as err:  # noqa: BLE001
        if isinstance(sink, FrameSpool):
            sink.close()
        return _Result(job, error=_describe(err))


def _embed_group(embedder: Embedder, group: list[_Decoded], options: ExtractOptions) -> list[_Result]:
    """Embed decoded files together (windows of all of them batched); on failure, one by one."""

    def run(items: list[_Decoded]) -> list[_Result]:
        embeddings = embedder.embed_waveforms(
            [d.wave for d in items],
            granularity=options.granularity,
            layer=options.layer,
            freq_pool=options.freq_pool,
            pool=options.pool,
        )
        return [
            _Result(d.job, e.embedding, e.timestamps, e.duration, e.frames)
            for d, e in zip(items, embeddings, strict=True)
        ]

    try:
        return run(group)
    except Exception as err:  # noqa: BLE001 - find which file it was
        if len(group) == 1:
            return [_Result(group[0].job, error=_describe(err))]
    results = []
    for item in group:
        try:
            results.extend(run([item]))
        except Exception as err:  # noqa: BLE001
            results.append(_Result(item.job, error=_describe(err)))
    return results


def iter_results(
    embedder: Embedder, jobs: Sequence[Job], options: ExtractOptions, spool_dir: Path | None = None
) -> Iterator[_Result]:
    """Embed jobs in order; short files batched across files, long ones streamed."""
    target = 2 * embedder.batch_size  # windows per engine call
    window_samples = embedder.chunk_steps * embedder.model.cfg.kernel_time * FRAME_SHIFT
    group: list[_Decoded] = []
    windows = 0

    def flush() -> Iterator[_Result]:
        nonlocal group, windows
        if group:
            yield from _embed_group(embedder, group, options)
        group, windows = [], 0

    for decoded in _decoded_stream(jobs, options, ahead=max(target, 2 * options.num_workers)):
        if decoded.error is not None:
            yield _Result(decoded.job, error=decoded.error)
        elif decoded.wave is None:
            yield from flush()
            yield _embed_streamed(embedder, decoded.job, options, spool_dir)
        else:
            group.append(decoded)
            windows += -(-decoded.wave.numel() // window_samples)
            if windows >= target:
                yield from flush()
    yield from flush()


def check_layer(embedder: Embedder, layer: LayerSpec) -> None:
    """Raise ConfigError now, not once per file, for a layer the model does not have."""
    select_layers([torch.zeros(1)] * embedder.model.cfg.encoder_layers, layer)


def embed_paths(
    embedder: Embedder, paths: Sequence[str | os.PathLike], options: ExtractOptions
) -> list[Embedding]:
    """In-memory embeddings of files, in order; AudioError names the first file that failed."""
    check_layer(embedder, options.layer)
    jobs = [Job(Path(p), Path(p).name) for p in paths]
    out = []
    for result in iter_results(embedder, jobs, options):
        if result.error is not None:
            raise AudioError(f"{result.job.input}: {result.error}")
        out.append(Embedding(result.embedding, result.timestamps, result.duration, result.frames))
    return out


# ---------------------------------------------------------------- manifest and runs


def read_manifest(path: str | os.PathLike) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """(header records, latest file record per input path); unreadable lines are ignored."""
    headers, files = [], {}
    path = Path(path)
    if not path.is_file():
        return headers, files
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a killed run
        if record.get("type") == "header":
            headers.append(record)
        elif record.get("type") == "file":
            files[record["input"]] = record
    return headers, files


def _layer_text(layer: LayerSpec) -> str | int | list[int]:
    return layer if isinstance(layer, str | int) else list(layer)


def _signature(embedder: Embedder, options: ExtractOptions) -> dict[str, Any]:
    """Everything that changes the numbers in an output file."""
    info = getattr(embedder.model, "checkpoint", None)
    return {
        "sha256": info.sha256 if info else None,
        "granularity": options.granularity,
        "layer": _layer_text(options.layer),
        "pool": options.pool,
        "freq_pool": options.freq_pool,
        "dtype": embedder.dtype,
        "chunk_seconds": round(embedder.chunk_steps * embedder.step_seconds, 6),
    }


def _header(embedder: Embedder, options: ExtractOptions, inputs: Sequence[str]) -> dict[str, Any]:
    cfg = embedder.model.cfg
    info = getattr(embedder.model, "checkpoint", None)
    count = cfg.encoder_layers
    layer = options.layer
    if layer == "all":
        layers: Any = list(range(1, count + 1))
    elif layer == "last":
        layers = [count]
    elif layer == "mean":
        layers = {"mean_of": list(range(1, count + 1))}
    else:
        numbers = [layer] if isinstance(layer, int) else list(layer)
        layers = [n if n > 0 else count + 1 + n for n in numbers]
    return {
        "type": "header",
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "maeast_embed": __version__,
        "model": {
            "path": info.path if info else None,
            "name": info.name if info else None,
            "sha256": info.sha256 if info else None,
            "variant": cfg.variant,
            "encoder_layers": count,
            "embed_dim": cfg.embed_dim,
            "kernel": [cfg.kernel_time, cfg.kernel_chan],
        },
        "layers": layers,
        "frame_seconds": embedder.step_seconds,
        "feature_dim": embedder.feature_dim(options.freq_pool)
        * (2 if options.granularity == "clip" and options.pool == "meanmax" else 1),
        "options": {
            **{k: v for k, v in asdict(options).items() if k != "layer"},
            "layer": _layer_text(options.layer),
            "shard": f"{options.shard[0]}/{options.shard[1]}",
            "device": str(embedder.device),
            "dtype": embedder.dtype,
            "batch_size": embedder.batch_size,
            "chunk_seconds": round(embedder.chunk_steps * embedder.step_seconds, 6),
        },
        "signature": _signature(embedder, options),
        "inputs": [str(i) for i in inputs],
    }


def manifest_name(shard: tuple[int, int]) -> str:
    """manifest.jsonl, or manifest.shard-I-of-N.jsonl when the work is split (one per shard)."""
    return MANIFEST if shard[1] == 1 else f"manifest.shard-{shard[0]}-of-{shard[1]}.jsonl"


@dataclass
class Summary:
    """What a run did (files counted in this shard)."""

    manifest: Path
    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    audio_seconds: float = 0.0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def lines(self) -> list[str]:
        rate = (
            f", {self.done / self.seconds:.2f} files/s, real-time x{self.audio_seconds / self.seconds:.1f}"
            if self.seconds > 0 and self.done
            else ""
        )
        out = [
            f"{self.done} embedded, {self.skipped} skipped (already done), {len(self.failed)} failed "
            f"in {self.seconds:.1f} s ({self.audio_seconds:.1f} s of audio{rate})",
            f"manifest: {self.manifest}",
        ]
        out += [f"FAILED {path}: {reason}" for path, reason in self.failed]
        return out


class _Progress:
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
    output_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = output_dir / manifest_name(options.shard)
    headers, previous = read_manifest(manifest_path)
    signature = _signature(embedder, options)
    if headers and not options.overwrite and headers[-1].get("signature") != signature:
        old = headers[-1].get("signature", {})
        changed = ", ".join(f"{k}: {old.get(k)!r} -> {v!r}" for k, v in signature.items() if old.get(k) != v)
        raise ConfigError(
            f"{output_dir} holds embeddings made with other settings ({changed}); "
            "pass --overwrite to redo them or choose another output folder"
        )
    jobs, problems = collect_jobs(inputs)
    index, count = options.shard
    jobs = [job for job in jobs if shard_of(job.rel, count) == index]
    summary = Summary(manifest_path)

    with open(manifest_path, "a+", encoding="utf-8") as manifest:
        manifest.seek(0, os.SEEK_END)
        if manifest.tell():  # a run killed mid-line leaves no newline: start clean
            manifest.seek(manifest.tell() - 1)
            if manifest.read(1) != "\n":
                manifest.write("\n")

        def record(entry: dict[str, Any]) -> None:
            manifest.write(json.dumps(entry) + "\n")
            manifest.flush()

        record(_header(embedder, options, [str(i) for i in inputs]))
        for path, reason in problems:
            summary.failed.append((path, reason))
            record(
                {
                    "type": "file",
                    "input": path,
                    "output": None,
                    "status": "failed",
                    "duration": None,
                    "frames": None,
                    "error": reason,
                }
            )
        todo = []
        for job in jobs:
            out = job.output(output_dir)
            if out.exists() and not options.overwrite:
                before = previous.get(str(job.input), {})
                summary.skipped += 1
                record(
                    {
                        "type": "file",
                        "input": str(job.input),
                        "output": str(out),
                        "status": "skipped",
                        "duration": before.get("duration"),
                        "frames": before.get("frames"),
                        "error": None,
                    }
                )
            else:
                out.with_name(out.name + TMP_SUFFIX).unlink(missing_ok=True)  # left by a killed run
                todo.append(job)

        bar = _Progress(len(todo), progress)
        try:
            for result in iter_results(embedder, todo, options, spool_dir=output_dir):
                out = result.job.output(output_dir)
                if result.error is None:
                    try:
                        write_npz_atomic(
                            out, {"embedding": result.embedding, "timestamps": result.timestamps}
                        )
                    except OSError as err:
                        result.error = f"cannot write {out}: {err}"
                    finally:
                        if isinstance(result.embedding, FrameSpool):
                            result.embedding.close()
                if result.error is None:
                    summary.done += 1
                    summary.audio_seconds += result.duration
                    shape = list(result.embedding.shape)
                    record(
                        {
                            "type": "file",
                            "input": str(result.job.input),
                            "output": str(out),
                            "status": "ok",
                            "duration": round(result.duration, 6),
                            "frames": result.frames,
                            "shape": shape,
                            "error": None,
                        }
                    )
                else:
                    summary.failed.append((str(result.job.input), result.error))
                    record(
                        {
                            "type": "file",
                            "input": str(result.job.input),
                            "output": None,
                            "status": "failed",
                            "duration": result.duration,
                            "frames": None,
                            "error": result.error,
                        }
                    )
                bar.update(result.duration or 0.0)
        finally:
            bar.close()
    summary.seconds = time.perf_counter() - started
    return summary
