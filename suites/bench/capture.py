"""A cell's output kept in its log file: what the suites print (X-ARES's and mteb's progress bars
and log lines, hear-eval-kit's and s3prl's subprocesses) goes to `OUT/logs/...`, so the bench's
own lines stay readable on a terminal and in a log."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            stream.flush()


@contextlib.contextmanager
def output_to(path: Path, title: str) -> Iterator[None]:
    """Everything written to stdout and stderr while inside, by Python code (sys.stdout and
    sys.stderr) and below it (file descriptors 1 and 2: C libraries, child processes), appended to
    `path` under a line naming `title` and the time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _flush()
    saved = (os.dup(1), os.dup(2))
    try:
        with open(path, "a", buffering=1, encoding="utf-8", errors="replace") as log:
            log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {title}\n")
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            try:
                with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                    yield
            finally:
                _flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        for fd in saved:
            os.close(fd)
