"""WebDataset parts: tar files of samples `<k>.npy` (the embedding) and `<k>.json` (key, input,
shard, duration, frames, timestamps, layers, options), readable by `webdataset` itself.

WebDataset splits a member name at the first '.' of its last component, so the sample name `k`
is the key with '%' and '.' percent-escaped (`a/b.wav` -> `a/b%2Ewav`); the json holds the key.
"""

from __future__ import annotations

import io
import json
import mmap
import os
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .rows import BrokenPart, Row

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)


def sample_name(key: str) -> str:
    return key.replace("%", "%25").replace(".", "%2E")


def key_of(name: str) -> str:
    return name.replace("%2E", ".").replace("%25", "%")


def npy_bytes(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array(out, np.ascontiguousarray(array), allow_pickle=False)
    return out.getvalue()


def _npy_start(data: bytes) -> int:
    """Where the array of a .npy file's bytes starts (past its header); ValueError if not .npy."""
    if data[:6] != b"\x93NUMPY":
        raise ValueError("not a .npy file")
    size = 2 if data[6] == 1 else 4
    return 8 + size + int.from_bytes(data[8 : 8 + size], "little")


def npy_array(data: bytes) -> np.ndarray:
    """The array of a .npy file's bytes (a view; headers parsed once per distinct header)."""
    end = _npy_start(data)
    shape, dtype = _npy_header(bytes(data[:end]))
    return np.frombuffer(data, dtype, count=int(np.prod(shape)), offset=end).reshape(shape)


@lru_cache(maxsize=64)
def _npy_header(header: bytes) -> tuple[tuple[int, ...], np.dtype]:
    buffer = io.BytesIO(header)
    version = np.lib.format.read_magic(buffer)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(buffer)
    if fortran or dtype.hasobject:
        raise ValueError("not a plain C-order numeric .npy")
    return shape, dtype


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


def _number(field: bytes) -> int:
    if field[0] & 0x80:  # base-256 (sizes of 8 GiB and more)
        return int.from_bytes(field[1:], "big")
    return int(field.rstrip(b"\0 ").strip() or b"0", 8)


def _pax_path(data: bytes) -> str | None:
    """The `path` record of a PAX extended header ("<length> path=<name>\n" records)."""
    pos = 0
    while pos < len(data):
        length = int(data[pos : data.index(b" ", pos)])
        key, _, value = data[data.index(b" ", pos) + 1 : pos + length - 1].partition(b"=")
        if key == b"path":
            return value.decode("utf-8", "surrogateescape")
        pos += length
    return None


@contextmanager
def mapped(path: Path) -> Iterator[bytes | mmap.mmap]:
    """The bytes of a part, memory-mapped (slices read only what they cover)."""
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            yield b""
            return
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            yield data


def _octal(fields: np.ndarray) -> np.ndarray:
    """[n, w] octal text fields (digits padded by spaces or NULs) -> [n] values (-1: no digits)."""
    value = np.zeros(len(fields), np.int64)
    started = np.zeros(len(fields), bool)
    ended = np.zeros(len(fields), bool)
    for column in fields.T:
        digit = (column >= ord("0")) & (column <= ord("7"))
        ended |= started & ~digit
        take = digit & ~ended
        value = np.where(take, value * 8 + column.astype(np.int64) - ord("0"), value)
        started |= digit
    return np.where(started, value, -1)


def _bad_checksum(data: bytes | mmap.mmap, heads: list[int]) -> int | None:
    """The offset of the first header block whose checksum does not match, or None (all the
    blocks summed at once; NumPy's views of `data` are gone when this returns)."""
    if not heads:
        return None
    blocks = sliding_window_view(np.frombuffer(data, np.uint8), BLOCK)[np.asarray(heads)]
    sums = blocks.sum(1, dtype=np.int64) - blocks[:, 148:156].sum(1, dtype=np.int64) + 8 * ord(" ")
    bad = np.flatnonzero(sums != _octal(blocks[:, 148:156]))
    return heads[int(bad[0])] if bad.size else None


def members(path: Path, data: bytes | mmap.mmap) -> list[tuple[str, int, int]]:
    """(name, data offset, size) of every file of a whole tar (`data`, the bytes of `path`), read
    header by header; BrokenPart when a header is damaged (its checksum), a member's data runs
    past the end or the end-of-archive blocks are missing (a cut file)."""
    total, found, heads, pax, pos = len(data), [], [], None, 0
    while True:
        if pos + BLOCK > total:
            raise BrokenPart(f"{path}: cut short (no end-of-archive blocks)")
        if data[pos] == 0 and data[pos : pos + BLOCK] == ZERO_BLOCK:
            if data[pos + BLOCK : pos + 2 * BLOCK] != ZERO_BLOCK:
                raise BrokenPart(f"{path}: cut short (one end-of-archive block of two)")
            break
        heads.append(pos)
        try:
            size = _number(data[pos + 124 : pos + 136])
        except ValueError:
            raise BrokenPart(f"{path}: a damaged member header at byte {pos}") from None
        start = pos + BLOCK
        if start + size > total:
            raise BrokenPart(f"{path}: cut short (a member runs past the end)")
        kind = data[pos + 156]
        if kind == 0x78:  # x: a PAX header for the next member
            pax = _pax_path(data[start : start + size])
        elif kind in (0x30, 0):  # a file
            if not pax:
                name = data[pos : pos + 100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                if data[pos + 345]:
                    prefix = data[pos + 345 : pos + 500].split(b"\0", 1)[0]
                    name = f"{prefix.decode('utf-8', 'surrogateescape')}/{name}"
            found.append((pax or name, start, size))
            pax = None
        elif kind != 0x67:  # g: a global PAX header
            raise BrokenPart(f"{path}: a member that is not a file ({bytes([kind])!r}) at byte {pos}")
        pos = start + -(-size // BLOCK) * BLOCK
    bad = _bad_checksum(data, heads)
    if bad is not None:
        raise BrokenPart(f"{path}: a damaged member header at byte {bad}")
    npy = {n[:-4] for n, _, _ in found if n.endswith(".npy")}
    if npy != {n[:-5] for n, _, _ in found if n.endswith(".json")} or len(npy) * 2 != len(found):
        raise BrokenPart(f"{path}: samples without both .npy and .json")
    return found


def _gather(data: bytes | mmap.mmap, npy: list[tuple[str, int, int]]) -> np.ndarray | None:
    """The arrays of .npy members that all share one header and size, copied at once into one
    [n, ...] array; None when they differ (NumPy's views of `data` are gone when this returns)."""
    _, offset, size = npy[0]
    if any(s != size for _, _, s in npy):
        return None
    try:
        end = _npy_start(data[offset : offset + min(size, BLOCK)])
        shape, dtype = _npy_header(bytes(data[offset : offset + end]))
    except (ValueError, IndexError):
        return None
    if int(np.prod(shape)) * dtype.itemsize != size - end:
        return None
    view = np.frombuffer(data, np.uint8)
    starts = np.fromiter((o for _, o, _ in npy), np.int64, len(npy))
    headers = sliding_window_view(view, end)[starts]
    if not (headers == headers[0]).all():
        return None
    return sliding_window_view(view, size - end)[starts + end].view(dtype).reshape(len(npy), *shape)


class TarFormat:
    def writer(self, handle: IO[bytes], meta: dict[str, Any]) -> _Writer:
        return _Writer(handle, meta)

    def keys(self, path: Path) -> list[str]:
        with mapped(path) as data:
            return [key_of(name[:-4]) for name, _, _ in members(path, data) if name.endswith(".npy")]

    def rows(self, path: Path) -> Iterator[Row]:
        with mapped(path) as data:
            embedding = None
            for name, offset, size in members(path, data):
                if name.endswith(".npy"):
                    embedding = npy_array(data[offset : offset + size])
                    continue
                record = json.loads(data[offset : offset + size])
                yield Row(record["key"], record["input"], record["shard"], record["duration"],
                          record["frames"], np.asarray(record["timestamps"], np.float64), embedding)

    def stack(self, path: Path) -> tuple[list[str], np.ndarray] | None:
        with mapped(path) as data:
            npy = [m for m in members(path, data) if m[0].endswith(".npy")]
            stacked = _gather(data, npy) if npy else np.zeros((0, 0), np.float32)
            if stacked is None:
                stacked = np.stack([npy_array(data[o : o + s]) for _, o, s in npy])
        if stacked.ndim != 2:
            return None  # not [D] per clip
        return [key_of(name[:-4]) for name, _, _ in npy], stacked
