"""What a part holds and how a part format is driven: `Row` (one input's output), the
`PartFormat` protocol that Parquet and WebDataset parts implement, `BrokenPart`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

from ..errors import MAEASTError


class BrokenPart(MAEASTError):
    """A part that cannot be read whole (cut short, not of its format)."""


@dataclass
class Row:
    """One input's output: `key` (its name under OUTPUT_DIR, unique in a folder), `input` (the
    path or SHARD:KEY), `shard` (the WebDataset shard it came from), seconds, frames, arrays."""

    key: str
    input: str
    shard: str | None
    duration: float
    frames: int | None
    timestamps: np.ndarray
    embedding: np.ndarray


class PartFile(Protocol):
    def write(self, rows: list[Row]) -> None: ...
    def close(self) -> None: ...


class PartFormat(Protocol):
    """How one format writes a part into an open file, lists and reads a committed one."""

    def writer(self, handle: IO[bytes], meta: dict[str, Any]) -> PartFile: ...
    def keys(self, path: Path) -> list[str]: ...  # raises BrokenPart
    def rows(self, path: Path) -> Iterator[Row]: ...  # raises BrokenPart
    def stack(self, path: Path) -> tuple[list[str], np.ndarray] | None: ...  # clip level, fast
