"""File writes that fail clearly: atomic replacement (a temporary file in the target's folder,
fsynced, then renamed over it) and line appends; an OSError (a full disk above all) becomes an
OutputError naming the path."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from .errors import OutputError

FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


def output_error(path: str | os.PathLike, err: OSError, what: str = "write") -> OutputError:
    """The OutputError for `err` raised while writing `path` (returned as is if it is one)."""
    if isinstance(err, OutputError):
        return err
    if err.errno in FULL_DISK:
        reason = "no space left on the device (free some space and rerun: what was written before is kept)"
    else:
        reason = err.strerror or str(err)
    return OutputError(f"cannot {what} {path}: {reason}", err.errno, str(path))


@contextmanager
def writing(path: str | os.PathLike, what: str = "write") -> Iterator[None]:
    """Turn an OSError raised in the block into an OutputError naming `path`."""
    try:
        yield
    except OSError as err:
        raise output_error(path, err, what) from err


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line (a newline is added) with a single write; a full disk or any other OSError
    is an OutputError naming `path`. A reader tolerates the partial last line a failure may leave."""
    data = (line + "\n").encode("utf-8")
    with writing(path, "append to"):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", *, suffix: str = ".tmp") -> Iterator[IO]:
    """Open a temporary file for writing; on success it replaces `path`, on error it is removed.
    An OSError inside (a full disk above all) is raised as an OutputError naming `path`."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise output_error(path, err) from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
