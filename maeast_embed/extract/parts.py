"""Consolidated outputs: rows (one per input) gathered into parts of many clips (a Parquet file
or a WebDataset tar each), every part written to a temporary name, fsynced and renamed.

Parts are named `part-NNNNNN.<ext>` (or `part-I-of-N-NNNNNN.<ext>` for shard I of N, so ranks
write side by side). A run resumes from the committed parts: the keys they hold are done, a
killed run's temporary file is removed and its inputs redone, and a committed part that is
broken (cut by hand) is moved aside to `<name>.broken`, reported, and its inputs redone.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_open
from ..outpaths import confined
from .rows import BrokenPart, PartFile, PartFormat, Row

TMP_SUFFIX = ".tmp"
BYTES_PER_PART = 256 << 20
FLUSH_BYTES = 16 << 20  # a Parquet row group, or the tar samples written at once
EXTENSIONS = {"parquet": ".parquet", "webdataset": ".tar"}
_PART = re.compile(r"^part-(?:(\d+)-of-(\d+)-)?(\d{6,})\.(parquet|tar)$")


def part_format(name: str) -> PartFormat:
    if name == "parquet":
        from .parquet_part import ParquetFormat

        return ParquetFormat()
    from .tar_part import TarFormat

    return TarFormat()


def part_name(fmt: str, shard: tuple[int, int], seq: int) -> str:
    prefix = "part-" if shard[1] == 1 else f"part-{shard[0]}-of-{shard[1]}-"
    return f"{prefix}{seq:06d}{EXTENSIONS[fmt]}"


def list_parts(output_dir: Path, fmt: str) -> list[Path]:
    """The committed parts of a format in a folder, in name order (every shard's)."""
    if not output_dir.is_dir():
        return []
    ext = EXTENSIONS[fmt]
    return sorted(output_dir / e.name for e in os.scandir(output_dir)
                  if e.name.endswith(ext) and _PART.match(e.name))


def own_part(path: Path, shard: tuple[int, int]) -> bool:
    """Whether a part was written by this shard (same index and count)."""
    match = _PART.match(path.name)
    if match is None:
        return False
    if match.group(1) is None:
        return shard[1] == 1
    return (int(match.group(1)), int(match.group(2))) == shard


def next_seq(parts: list[Path], shard: tuple[int, int]) -> int:
    seqs = [int(_PART.match(p.name).group(3)) for p in parts if own_part(p, shard)]  # type: ignore[union-attr]
    return max(seqs, default=-1) + 1


def remove_part_leftovers(output_dir: Path, shard: tuple[int, int]) -> int:
    """Delete the temporary parts killed runs of this shard left (`.<part name>.<random>.tmp`;
    other shards' may be being written now); returns how many."""
    removed = 0
    for entry in os.scandir(output_dir):
        name = entry.name
        if name.startswith(".part-") and name.endswith(TMP_SUFFIX):
            if own_part(Path(name[1 : -len(TMP_SUFFIX)].rpartition(".")[0]), shard):
                Path(entry.path).unlink(missing_ok=True)
                removed += 1
    return removed


@dataclass
class Scan:
    """What the committed parts of a folder hold: key -> part, and the broken parts found."""

    keys: dict[str, Path] = field(default_factory=dict)
    broken: list[tuple[Path, str]] = field(default_factory=list)


def scan_parts(output_dir: Path, fmt: str) -> Scan:
    scan, reader = Scan(), part_format(fmt)
    for path in list_parts(output_dir, fmt):
        try:
            keys = reader.keys(path)
        except BrokenPart as err:
            scan.broken.append((path, str(err)))
            continue
        for key in keys:
            scan.keys.setdefault(key, path)
    return scan


def set_aside(path: Path) -> Path:
    """Move a broken part out of the way (never read as data again); returns its new name."""
    aside = path.with_name(path.name + ".broken")
    os.replace(path, aside)
    return aside


def default_part_size(row_bytes: int) -> int:
    """Clips per part for parts of about 256 MB."""
    return max(1, min(1_000_000, BYTES_PER_PART // max(row_bytes, 1)))


class PartWriter:
    """Rows into parts of at most `size` rows (None: about 256 MB); a part becomes visible only
    once whole (written to `.<name>.<random>.tmp`, fsynced, renamed), and then `on_commit` is
    called with its path and rows."""

    def __init__(self, output_dir: Path, fmt: str, shard: tuple[int, int], size: int | None,
                 meta: dict[str, Any], first_seq: int,
                 on_commit: Callable[[Path, list[Row]], None]) -> None:
        self.output_dir, self.fmt, self.shard, self.size, self.meta = output_dir, fmt, shard, size, meta
        self.format = part_format(fmt)
        self.seq, self.on_commit = first_seq, on_commit
        self.rows: list[Row] = []  # of the open part, written already
        self.buffer: list[Row] = []  # not written yet (a row group, or a few samples)
        self.buffered = 0  # bytes of embeddings in the buffer
        self.stack: ExitStack | None = None
        self.file: PartFile | None = None
        self.path: Path | None = None

    @property
    def target(self) -> Path:
        """The part being written, or the next one."""
        return self.output_dir / part_name(self.fmt, self.shard, self.seq)

    def _open(self) -> None:
        self.path = confined(self.output_dir, self.target.name)
        self.stack = ExitStack()
        handle = self.stack.enter_context(atomic_open(self.path, "wb", suffix=TMP_SUFFIX))
        self.file = self.format.writer(handle, self.meta)

    def _flush(self) -> None:
        if self.buffer:
            if self.file is None:
                self._open()
            self.file.write(self.buffer)  # type: ignore[union-attr]
            self.rows += self.buffer
            self.buffer, self.buffered = [], 0

    def add(self, row: Row) -> None:
        if self.size is None:  # parts of about 256 MB
            self.size = default_part_size(row.embedding.nbytes + row.timestamps.nbytes)
        self.buffer.append(row)
        self.buffered += row.embedding.nbytes
        if self.buffered >= FLUSH_BYTES:
            self._flush()
        if len(self.rows) + len(self.buffer) >= self.size:
            self.commit()

    def commit(self) -> None:
        """Finish the open part (if it has rows) and make it visible."""
        self._flush()
        if self.file is None:
            return
        self.file.close()
        self.stack.close()  # type: ignore[union-attr] - flush, fsync, rename
        path, rows = self.path, self.rows
        self.file, self.stack, self.rows, self.seq = None, None, [], self.seq + 1
        self.on_commit(path, rows)  # type: ignore[arg-type]

    def abort(self) -> None:
        """Drop the open part (its temporary file is removed)."""
        if self.stack is not None:
            self.stack.__exit__(RuntimeError, RuntimeError("aborted"), None)
        self.file, self.stack, self.rows, self.buffer, self.buffered = None, None, [], [], 0
