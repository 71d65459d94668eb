"""Inputs of a run: files, folders, list files and WebDataset shards expanded into jobs with
their output names."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..audio import LIST_EXTENSIONS, FolderScan, Source, common_root, read_path_list, scan_folder
from ..errors import MAEASTError
from ..shards import ShardError, expand_shards, index_shard, is_shard_spec


@dataclass(frozen=True)
class Job:
    """One input (a file, or the audio member of a WebDataset sample) and where its embedding goes."""

    input: Source | None  # None: a sample that cannot be read (see `error`)
    rel: str  # posix path relative to its input root, extension kept (a.wav -> a.wav.npz)
    shard: str | None = None  # the shard file of a WebDataset sample
    key: str | None = None  # its WebDataset key
    error: str | None = None  # known before decoding (a sample cut short, no audio member)

    @property
    def name(self) -> str:
        """How the manifest and messages name it: the path, or SHARD:KEY."""
        return f"{self.shard}:{self.key}" if self.key is not None else str(self.input)

    def output(self, output_dir: Path) -> Path:
        return output_dir / f"{self.rel}.npz"


@dataclass
class Inputs:
    """What a run's inputs expand to: jobs sorted by output name, input-level problems
    (path, reason), and what folder scans did not treat as audio ('' when nothing)."""

    jobs: list[Job] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    ignored: str = ""


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


def _shard_jobs(spec: str, problems: list[tuple[str, str]]) -> list[Job]:
    """Jobs of the samples of the shards a .tar path, glob or brace range names: outputs go to
    <shard name>/<key>.npz; a broken sample is a job that fails, a broken shard a problem."""
    try:
        shards = expand_shards(spec)
    except ShardError as err:
        problems.append((spec, str(err)))
        return []
    jobs = []
    for shard in shards:
        try:
            samples = index_shard(shard).samples
        except ShardError as err:
            problems.append((str(shard), str(err)))
            continue
        if not samples:
            problems.append((str(shard), "the shard holds no samples"))
        for sample in samples:
            source = None if sample.error else sample.audio()
            jobs.append(Job(source, f"{shard.stem}/{sample.key}", str(shard), sample.key, sample.error))
    return jobs


def _same_input(a: Job, b: Job) -> bool:
    if isinstance(a.input, (str, os.PathLike)) and isinstance(b.input, (str, os.PathLike)):
        return Path(a.input).resolve() == Path(b.input).resolve()
    return a.name == b.name


def collect_jobs(inputs: Sequence[str | os.PathLike]) -> Inputs:
    """Expand files, folders (recursive), list files and WebDataset shards (.tar paths, globs,
    brace ranges) into jobs, with input-level problems (missing input, folder without audio,
    empty list, a shard pattern matching nothing, two inputs with the same output name) and a
    count of the files folder scans left out."""
    out = Inputs()
    jobs, problems = out.jobs, out.problems
    ignored: Counter[str] = Counter()
    hidden_dirs = 0
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            scan = scan_folder(path)
            ignored.update(scan.ignored)
            hidden_dirs += scan.hidden_dirs
            if not scan.files:
                left = f" ({scan.summary()})" if scan.summary() else ""
                problems.append((str(path), f"no audio files found in directory{left}"))
            jobs.extend(Job(f, f.relative_to(path).as_posix()) for f in scan.files)
        elif is_shard_spec(item):
            jobs.extend(_shard_jobs(str(item), problems))
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
    out.ignored = FolderScan([], dict(ignored), hidden_dirs).summary()
    unique: dict[str, Job] = {}
    for job in jobs:
        first = unique.setdefault(job.rel, job)
        if first is not job and not _same_input(first, job):
            problems.append((job.name, f"output name {job.rel}.npz is already taken by {first.name}"))
    out.jobs = sorted(unique.values(), key=lambda j: j.rel)
    return out
