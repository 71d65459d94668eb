"""One reader for every output folder (npz, parquet, webdataset): `load_embeddings(OUTPUT_DIR)`.

Records are streamed (one file or one Parquet row group at a time); `to_numpy()` stacks every
clip-level embedding into one array, reading each part in one go where its format allows.
A broken part is an error naming it, never read as data.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .manifest import iter_records
from .parts import list_parts, part_format
from .rows import Row
from .status import manifests

HEADER_PREFIX = '{"type": "header"'  # how json.dumps writes a header record (its first key)


@dataclass
class Record:
    """One input's embedding: `key` (its name in the folder), `input` (path or SHARD:KEY),
    `shard` (WebDataset shard it came from, else None), seconds, frames and the arrays."""

    key: str
    input: str
    shard: str | None
    duration: float | None
    frames: int | None
    timestamps: np.ndarray
    embedding: np.ndarray


class Embeddings:
    """The embeddings of an output folder; iterate for `Record`s. `header` is the latest run's
    manifest header (model, layers, options); `format` and `options` come from it."""

    def __init__(self, output_dir: str | os.PathLike) -> None:
        self.output_dir = Path(output_dir)
        found = manifests(self.output_dir)
        if not found:
            raise ConfigError(f"{self.output_dir} holds no extraction manifest (manifest*.jsonl)")
        self.manifests = found
        self.header: dict[str, Any] = {}
        for path in found:
            headers = [r for r in iter_records(path, HEADER_PREFIX) if r.get("type") == "header"]
            if headers:
                if self.header and headers[-1].get("signature") != self.header.get("signature"):
                    raise ConfigError(f"the manifests of {self.output_dir} disagree on the model or "
                                      f"options ({found[0].name} vs {path.name})")
                self.header = headers[-1]
        self.options: dict[str, Any] = self.header.get("options", {})
        self.format: str = self.options.get("format", "npz")

    def __iter__(self) -> Iterator[Record]:
        if self.format == "npz":
            yield from self._npz()
            return
        reader = part_format(self.format)
        for part in list_parts(self.output_dir, self.format):
            for row in reader.rows(part):  # BrokenPart names the part
                yield _record(row)

    def _npz_files(self) -> Iterator[tuple[str, str, dict[str, Any], str]]:
        """(key, input, its manifest record, the .npz path) of every input done, in key order."""
        files = {}  # input -> its latest record, when done
        for path in self.manifests:
            for record in iter_records(path):
                if record.get("type") == "file" and record.get("status") in ("ok", "skipped"):
                    files[record["input"]] = record
        root = os.path.abspath(self.output_dir)
        prefix = os.path.join(root, "")  # with its trailing separator
        moved_from = None  # where a moved folder was when these outputs were recorded
        for name, entry in sorted(files.items(), key=lambda item: item[1].get("output") or ""):
            path = os.path.normpath(os.path.join(root, entry["output"]))
            if not path.startswith(prefix):
                moved_from = moved_from or _old_root(path, root)
                if moved_from is None or not path.startswith(moved_from):
                    raise ConfigError(f"{self.output_dir}: the manifest names {path}, which is neither in "
                                      "the folder nor in the folder it was moved from")
                path = prefix + path[len(moved_from):]
            if not os.path.isfile(path):
                raise ConfigError(f"{self.output_dir}: the embedding of {name}, {path}, is missing")
            key = path[len(prefix):].replace(os.sep, "/").removesuffix(".npz")
            yield key, name, entry, path

    def _npz(self) -> Iterator[Record]:
        for key, name, entry, path in self._npz_files():
            with np.load(path) as data:
                embedding, timestamps = data["embedding"], data["timestamps"]
            yield Record(key, name, entry.get("shard"), entry.get("duration"), entry.get("frames"),
                         timestamps, embedding)

    def to_numpy(self) -> tuple[list[str], np.ndarray]:
        """(keys, embeddings stacked [N, D], or [N, L, D] for several layers), clip level only."""
        if self.options.get("granularity") != "clip":
            raise ConfigError(f"{self.output_dir} holds frame-level embeddings (one [T, D] array per "
                              "clip, T varying): iterate load_embeddings(...) instead of to_numpy()")
        keys: list[str] = []
        arrays: list[np.ndarray] = []
        if self.format != "npz":
            reader = part_format(self.format)
            for part in list_parts(self.output_dir, self.format):
                stacked = reader.stack(part)
                if stacked is None:
                    break
                keys += stacked[0]
                arrays.append(stacked[1])
            else:
                return keys, _concatenate(arrays)
            keys, arrays = [], []
            for record in self:
                keys.append(record.key)
                arrays.append(record.embedding)
            return keys, _stack(arrays)
        for key, _, _, path in self._npz_files():  # the embedding alone: no timestamps
            with np.load(path) as data:
                arrays.append(data["embedding"])
            keys.append(key)
        return keys, _stack(arrays)


def _concatenate(arrays: list[np.ndarray]) -> np.ndarray:
    """One array of all (a single part's, writable, as it is)."""
    if len(arrays) == 1 and arrays[0].flags.writeable:
        return arrays[0]
    return np.concatenate(arrays) if arrays else np.zeros((0, 0), np.float32)


def _old_root(recorded: str, root: str) -> str | None:
    """The folder (with its trailing separator) an output folder was moved from, found as the
    longest leading part of a recorded output path whose remainder exists under `root`."""
    parts = recorded.split(os.sep)
    for cut in range(1, len(parts)):
        rest = os.sep.join(parts[cut:])
        if os.path.isfile(os.path.join(root, rest)):
            return os.sep.join(parts[:cut]) + os.sep
    return None


def _stack(arrays: list[np.ndarray]) -> np.ndarray:
    return np.stack(arrays) if arrays else np.zeros((0, 0), np.float32)


def _record(row: Row) -> Record:
    return Record(row.key, row.input, row.shard, row.duration, row.frames, row.timestamps, row.embedding)


def load_embeddings(output_dir: str | os.PathLike) -> Embeddings:
    """The embeddings `maeast-embed extract` (any --format) wrote into `output_dir`."""
    return Embeddings(output_dir)
