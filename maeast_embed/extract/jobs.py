"""Inputs of a run: files, folders and list files expanded into jobs with their output names."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..audio import LIST_EXTENSIONS, common_root, find_audio, read_path_list
from ..errors import MAEASTError


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
