"""One run per output folder and shard: an advisory lock that names its holder.

The lock is `flock` on `.<manifest name>.lock` in the output folder (released by the kernel when
its process dies, also over NFS, where Linux maps it onto POSIX locks). The holder writes its
host, pid and start time into the file, so a second run is refused with a message naming the
running one; a lock file left by a killed run is simply taken over.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

from ..atomic import writing
from ..errors import ConfigError


class FolderInUse(ConfigError):
    """Another run holds this output folder and shard."""


def lock_path(output_dir: Path, manifest: str) -> Path:
    return output_dir / f".{manifest}.lock"


def describe_holder(text: str) -> str:
    try:
        holder = json.loads(text)
        return f"pid {holder['pid']} on {holder['host']}, started {holder['started']}"
    except (ValueError, KeyError, TypeError):
        return "a run that wrote no details"


@contextmanager
def run_lock(path: Path) -> Iterator[str | None]:
    """Hold the lock for the `with` block; yields the holder a killed run left behind, if any.

    Raises FolderInUse (naming the running holder) when another run holds it.
    """
    with writing(path):
        handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the whole block
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise FolderInUse(
                f"{path.parent} is in use by another run ({describe_holder(handle.read())}, lock "
                f"{path.name}); wait for it to finish, or use another output folder or --shard"
            ) from None
        handle.seek(0)
        left = handle.read().strip()
        handle.seek(0)
        handle.truncate()
        me = {"host": socket.gethostname(), "pid": os.getpid(),
              "started": datetime.now(UTC).isoformat(timespec="seconds")}
        with writing(path):  # a full disk: an OutputError naming the lock file
            handle.write(json.dumps(me))
            handle.flush()
        yield describe_holder(left) if left else None
        handle.seek(0)
        handle.truncate()  # a clean finish leaves an empty lock file (never unlinked: no race)
    finally:
        with suppress(OSError):  # what a failed write left buffered cannot be written either
            handle.close()
