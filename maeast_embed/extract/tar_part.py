"""WebDataset parts: tar files of samples `<k>.npy` (the embedding) and `<k>.json` (key, input,
shard, duration, frames, timestamps, layers, options), readable by `webdataset` itself.

WebDataset splits a member name at the first '.' of its last component, so the sample name `k`
is the key with '%' and '.' percent-escaped (`a/b.wav` -> `a/b%2Ewav`); the json holds the key.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from .rows import BrokenPart, Row

BLOCK = 512


def sample_name(key: str) -> str:
    return key.replace("%", "%25").replace(".", "%2E")


def key_of(name: str) -> str:
    return name.replace("%2E", ".").replace("%25", "%")


def npy_bytes(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array(out, np.ascontiguousarray(array), allow_pickle=False)
    return out.getvalue()


def npy_array(data: bytes) -> np.ndarray:
    buffer = io.BytesIO(data)
    version = np.lib.format.read_magic(buffer)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(buffer)
    if fortran or dtype.hasobject:
        raise ValueError("not a plain C-order numeric .npy")
    return np.frombuffer(data, dtype, count=int(np.prod(shape)), offset=buffer.tell()).reshape(shape)


class _Writer:
    def __init__(self, handle: IO[bytes], meta: dict[str, Any]) -> None:
        self.tar = tarfile.open(fileobj=handle, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
        self.meta = {"layers": meta.get("layers"), "options": meta.get("options")}
        self.mtime = time.time()

    def _add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), int(self.mtime), 0o644
        self.tar.addfile(info, io.BytesIO(data))

    def write(self, rows: list[Row]) -> None:
        for row in rows:
            name = sample_name(row.key)
            self._add(f"{name}.npy", npy_bytes(row.embedding))
            record = {"key": row.key, "input": row.input, "shard": row.shard, "duration": row.duration,
                      "frames": row.frames, "timestamps": np.asarray(row.timestamps, np.float64).tolist(),
                      **self.meta}
            self._add(f"{name}.json", json.dumps(record).encode())

    def close(self) -> None:
        self.tar.close()  # the end-of-archive blocks


def _members(path: Path) -> list[tarfile.TarInfo]:
    """The members of a whole tar: every member's data and the end-of-archive blocks present."""
    size = os.path.getsize(path)
    try:
        with tarfile.open(path, "r:") as tar:
            members = tar.getmembers()
            end = tar.offset
    except (tarfile.TarError, OSError, EOFError) as err:
        raise BrokenPart(f"{path}: not a whole tar file ({err})") from err
    if not members or members[-1].offset_data + members[-1].size > size:
        raise BrokenPart(f"{path}: cut short (its last member runs past the end)")
    with open(path, "rb") as handle:
        handle.seek(end)
        if handle.read(2 * BLOCK) != bytes(2 * BLOCK):
            raise BrokenPart(f"{path}: cut short (no end-of-archive blocks)")
    names = [m.name for m in members]
    npy = {n[:-4] for n in names if n.endswith(".npy")}
    if npy != {n[:-5] for n in names if n.endswith(".json")} or len(npy) * 2 != len(names):
        raise BrokenPart(f"{path}: samples without both .npy and .json")
    return members


class TarFormat:
    def writer(self, handle: IO[bytes], meta: dict[str, Any]) -> _Writer:
        return _Writer(handle, meta)

    def keys(self, path: Path) -> list[str]:
        return [key_of(m.name[:-4]) for m in _members(path) if m.name.endswith(".npy")]

    def rows(self, path: Path) -> Iterator[Row]:
        members = _members(path)
        with open(path, "rb") as handle:
            embedding = None
            for member in members:
                handle.seek(member.offset_data)
                data = handle.read(member.size)
                if member.name.endswith(".npy"):
                    embedding = npy_array(data)
                    continue
                record = json.loads(data)
                yield Row(record["key"], record["input"], record["shard"], record["duration"],
                          record["frames"], np.asarray(record["timestamps"], np.float64), embedding)

    def stack(self, path: Path) -> tuple[list[str], np.ndarray] | None:
        keys, arrays = [], []
        with open(path, "rb") as handle:
            for member in _members(path):
                if member.name.endswith(".npy"):
                    handle.seek(member.offset_data)
                    arrays.append(npy_array(handle.read(member.size)))
                    keys.append(key_of(member.name[:-4]))
        if arrays and arrays[0].ndim != 1:
            return None
        return keys, np.stack(arrays) if arrays else np.zeros((0, 0), np.float32)
