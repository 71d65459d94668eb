"""What every shard of an output folder has done, from its manifest (and whether it is running)."""

from __future__ import annotations

import fcntl
from dataclasses import dataclass
from pathlib import Path

from .lock import describe_holder, lock_path
from .manifest import MANIFEST, iter_records


@dataclass
class ShardStatus:
    manifest: str
    shard: str
    files: int | None  # files of this shard at its last run (None: no run recorded the count)
    done: int
    failed: int
    pending: int | None
    audio_hours: float
    files_per_second: float | None  # of its last run
    running: str | None  # the holder, while a run holds the shard


def running_holder(lock: Path) -> str | None:
    """Who holds the lock now (None when nobody: never run, finished, or killed)."""
    if not lock.is_file():
        return None
    with open(lock, encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return describe_holder(handle.read())
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def shard_status(manifest: Path) -> ShardStatus:
    header: dict = {}
    latest: dict[str, dict] = {}  # input -> its latest record
    last_run: list[dict] = []  # file records since the last header
    for record in iter_records(manifest):
        if record.get("type") == "header":
            header, last_run = record, []
        elif record.get("type") == "file":
            latest[record["input"]] = record
            last_run.append(record)
    done = [r for r in latest.values() if r.get("status") in ("ok", "skipped")]
    failed = sum(r.get("status") == "failed" for r in latest.values())
    total = header.get("files")
    elapsed = max((r.get("elapsed") or 0.0 for r in last_run), default=0.0)
    embedded = sum(r.get("status") == "ok" for r in last_run)
    return ShardStatus(
        manifest=manifest.name,
        shard=header.get("options", {}).get("shard", "?"),
        files=total,
        done=len(done),
        failed=failed,
        pending=None if total is None else max(total - len(done) - failed, 0),
        audio_hours=sum(r.get("duration") or 0.0 for r in done) / 3600,
        files_per_second=embedded / elapsed if embedded and elapsed > 0 else None,
        running=running_holder(lock_path(manifest.parent, manifest.name)),
    )


def manifests(output_dir: str | Path) -> list[Path]:
    """The manifests of a folder: manifest.jsonl, then manifest.shard-I-of-N.jsonl in order."""
    output_dir = Path(output_dir)
    found = sorted(output_dir.glob("manifest.shard-*-of-*.jsonl"))
    if (output_dir / MANIFEST).is_file():
        found.insert(0, output_dir / MANIFEST)
    return found


def folder_status(output_dir: str | Path) -> list[ShardStatus]:
    """One entry per manifest (manifest.jsonl and manifest.shard-I-of-N.jsonl) of the folder."""
    return [shard_status(m) for m in manifests(output_dir)]
