"""The parts side of an extraction run (`--format parquet|webdataset`): what the committed parts
already hold, broken parts set aside, rows written into new parts of this shard."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..atomic import writing
from .options import ExtractOptions
from .parts import PartWriter, list_parts, next_seq, own_part, remove_part_leftovers, scan_parts, set_aside
from .rows import Row


class PartOutput:
    """Opened once the run holds its lock. `done` maps every key the folder's committed parts
    hold (any shard's: a key is never written twice) to its part; `problems` says which parts
    were broken and what became of them."""

    def __init__(self, output_dir: Path, options: ExtractOptions, meta: dict[str, Any],
                 on_commit: Callable[[Path, list[Row]], None]) -> None:
        fmt, shard = options.format, options.shard
        remove_part_leftovers(output_dir, shard)  # what killed runs of this shard were writing
        if options.overwrite:
            for path in list_parts(output_dir, fmt):
                if own_part(path, shard):
                    path.unlink()
        scan = scan_parts(output_dir, fmt)
        self.problems: list[tuple[str, str]] = []
        for path, reason in scan.broken:
            if own_part(path, shard):
                aside = set_aside(path)
                self.problems.append((str(path), f"{reason}; moved to {aside.name}, its inputs are redone"))
            else:
                self.problems.append((str(path), f"{reason}; a part of another shard: rerun that shard"))
        self.done = scan.keys
        self.writer = PartWriter(output_dir, fmt, shard, options.part_size, meta,
                                 next_seq(list_parts(output_dir, fmt), shard), on_commit)

    def add(self, row: Row) -> None:
        """Write a row into the open part (an OSError is an OutputError naming the part)."""
        with writing(self.writer.target):
            self.writer.add(row)


@contextmanager
def parts_of_run(parts: PartOutput | None) -> Iterator[None]:
    """Commit the open part when the block ends, or drop it (its temporary file removed) when
    the block or the commit raises; nothing for an .npz run (`parts` None)."""
    try:
        yield
        if parts is not None:
            with writing(parts.writer.target):
                parts.writer.commit()
    except BaseException:
        if parts is not None:
            parts.writer.abort()
        raise
