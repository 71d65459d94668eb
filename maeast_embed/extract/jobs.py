"""Inputs of a run: files, folders, list files and WebDataset shards expanded into jobs with
their output names (made safe by `outpaths.safe_relative`: no output lies outside the folder)."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..audio import LIST_EXTENSIONS, FolderScan, Source, common_root, read_path_list, scan_folder
from ..errors import MAEASTError
from ..outpaths import OutputPathError, output_path, safe_relative
from ..shards import ShardError, expand_shards, ignored_summary, index_shard, is_shard_spec


@dataclass(frozen=True)
class Job:
    """One input (a file, or the audio member of a WebDataset sample) and where its embedding goes."""

    input: Source | None  # None: a sample that cannot be read (see `error`)
    rel: str  # safe posix path relative to OUTPUT_DIR, extension kept (a.wav -> a.wav.npz)
    shard: str | None = None  # the shard file of a WebDataset sample
    key: str | None = None  # its WebDataset key
    error: str | None = None  # known before decoding (a sample cut short, no audio member)
    renamed: str | None = None  # why the output name differs from the input's (unsafe name)

    @property
    def name(self) -> str:
        """How the manifest and messages name it: the path, or SHARD:KEY."""
        return f"{self.shard}:{self.key}" if self.key is not None else str(self.input)

    def output(self, output_dir: Path) -> Path:
        return output_path(output_dir, self.rel, ".npz")


def make_job(source: Source | None, *names: str, **fields: object) -> Job:
    """A job whose output name is made from `names` by `outpaths.safe_relative`."""
    safe = safe_relative(*names)
    return Job(source, safe.rel, renamed=safe.changed, **fields)


@dataclass
class Inputs:
    """What a run's inputs expand to: jobs sorted by output name, input-level problems
    (path, reason), and what folder scans and shards left out ('' when nothing)."""

    jobs: list[Job] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    ignored: str = ""


def shard_of(rel: str, count: int) -> int:
    """Stable shard of a file (a hash of its relative path, so adding files moves no others)."""
    return int(hashlib.sha1(rel.encode("utf-8")).hexdigest()[:12], 16) % count


def _list_jobs(list_file: Path) -> list[Job]:
    """Entries inside the list's folder keep their relative path; the others (absolute, or
    '..' leading out) are named relative to the deepest folder holding all of them."""
    root, entries = read_path_list(list_file)
    paths = [Path(os.path.abspath(Path(e) if Path(e).is_absolute() else root / e)) for e in entries]
    inside = [not Path(e).is_absolute() and ".." not in Path(e).parts for e in entries]
    base = common_root([p for p, keep in zip(paths, inside, strict=True) if not keep])
    jobs = []
    for entry, path, keep in zip(entries, paths, inside, strict=True):
        rel = os.path.normpath(entry) if keep else os.path.relpath(path, base)
        jobs.append(make_job(path, Path(rel).as_posix()))
    return jobs


def _shard_jobs(spec: str, problems: list[tuple[str, str]], ignored: Counter[str]) -> list[Job]:
    """Jobs of the samples of the shards a .tar path, glob or brace range names: outputs go to
    <shard name>/<key>.npz; a broken sample is a job that fails, a broken shard a problem;
    members that are not regular files are counted in `ignored`."""
    try:
        shards = expand_shards(spec)
    except ShardError as err:
        problems.append((spec, str(err)))
        return []
    jobs = []
    for shard in shards:
        try:
            index = index_shard(shard)
        except ShardError as err:
            problems.append((str(shard), str(err)))
            continue
        ignored.update(index.ignored)
        samples = index.samples
        if not samples:
            problems.append((str(shard), "the shard holds no samples"))
        for sample in samples:
            source = None if sample.error else sample.audio()
            jobs.append(make_job(source, shard.stem, sample.key, shard=str(shard), key=sample.key,
                                 error=sample.error))
    return jobs


def _same_input(a: Job, b: Job) -> bool:
    if isinstance(a.input, (str, os.PathLike)) and isinstance(b.input, (str, os.PathLike)):
        try:
            return Path(a.input).resolve() == Path(b.input).resolve()
        except (OSError, RuntimeError, ValueError):  # a link loop, a NUL in the name
            return str(a.input) == str(b.input)
    return a.name == b.name


def _drop_collisions(jobs: list[Job], problems: list[tuple[str, str]]) -> list[Job]:
    """Jobs with an output name of their own; inputs that share one (the same file named twice
    aside) are all reported and none is embedded."""
    by_rel: dict[str, list[Job]] = {}
    for job in jobs:
        group = by_rel.setdefault(job.rel, [])
        if not any(_same_input(other, job) for other in group):
            group.append(job)
    kept = []
    for rel, group in by_rel.items():
        if len(group) == 1:
            kept.append(group[0])
            continue
        for i, job in enumerate(group):
            others = ", ".join(other.name for k, other in enumerate(group) if k != i)
            problems.append((job.name, f"output name {rel}.npz is shared with {others}: none of them "
                             "is embedded (rename one, or extract them into separate folders)"))
    return sorted(kept, key=lambda j: j.rel)


def collect_jobs(inputs: Sequence[str | os.PathLike], output_dir: str | os.PathLike | None = None) -> Inputs:
    """Expand files, folders (recursive), list files and WebDataset shards (.tar paths, globs,
    brace ranges) into jobs, with input-level problems (missing input, folder without audio,
    empty list, a shard pattern matching nothing, inputs sharing an output name) and a count of
    what folder scans and shards left out (files that are not audio, links, shard members that
    are not files). With `output_dir`, a job whose output would lie outside it (through a
    symbolic link found there) is a problem too."""
    out = Inputs()
    jobs, problems = out.jobs, out.problems
    ignored: Counter[str] = Counter()
    ignored_members: Counter[str] = Counter()
    hidden_dirs = linked_dirs = 0
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            scan = scan_folder(path)
            ignored.update(scan.ignored)
            hidden_dirs += scan.hidden_dirs
            linked_dirs += scan.linked_dirs
            if not scan.files:
                left = f" ({scan.summary()})" if scan.summary() else ""
                problems.append((str(path), f"no audio files found in directory{left}"))
            jobs.extend(make_job(f, f.relative_to(path).as_posix()) for f in scan.files)
        elif is_shard_spec(item):
            jobs.extend(_shard_jobs(str(item), problems, ignored_members))
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
            jobs.append(make_job(path, path.name))
        else:
            problems.append((str(path), "file not found"))
    scans = FolderScan([], dict(ignored), hidden_dirs, linked_dirs).summary()
    out.ignored = "; ".join(part for part in (scans, ignored_summary(dict(ignored_members))) if part)
    out.jobs = _drop_collisions(jobs, problems)
    if output_dir is not None:
        confined = []
        for job in out.jobs:
            try:
                job.output(Path(output_dir))
            except OutputPathError as err:
                problems.append((job.name, str(err)))
            else:
                confined.append(job)
        out.jobs = confined
    return out
