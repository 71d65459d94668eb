"""Parquet parts (pyarrow): one row per input, written in row groups.

Columns: `key`, `input`, `shard`, `duration`, `frames`, `timestamps` (list of float64),
`embedding` (a fixed-size list of D values for a [D] clip; one list level more per outer axis:
[T, D] is a list of fixed-size lists), `layer`; the run's header (model, options) is the file's
key-value metadata under `maeast_embed`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..errors import ConfigError
from .rows import BrokenPart, Row

META_KEY = b"maeast_embed"


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ConfigError("--format parquet needs pyarrow: pip install 'maeast-embed[parquet]'") from err
    return pa, pq


def nested(arrays: list[np.ndarray]):
    """Arrays of one rank [..., D] as one Arrow array: fixed-size lists of D, in lists per outer
    axis, with no nulls declared at any level (Parquet then reads it back faster)."""
    pa, _ = _pyarrow()
    values = pa.array(np.concatenate([a.reshape(-1) for a in arrays]))
    dim = arrays[0].shape[-1]
    out = pa.FixedSizeListArray.from_arrays(values, type=pa.list_(_required(values.type), dim))
    for level in reversed(range(arrays[0].ndim - 1)):
        lengths = np.concatenate([np.full(int(np.prod(a.shape[:level])), a.shape[level]) for a in arrays])
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        out = pa.ListArray.from_arrays(pa.array(offsets), out, type=pa.list_(_required(out.type)))
    return out


def _required(value_type):
    pa, _ = _pyarrow()
    return pa.field("element", value_type, nullable=False)


def _lists(arrays: list[np.ndarray]):
    pa, _ = _pyarrow()
    offsets = np.concatenate([[0], np.cumsum([a.size for a in arrays])]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.concatenate(arrays)))


_NUMPY = {"halffloat": np.float16, "float": np.float32, "double": np.float64, "int32": np.int32}


def numpy_view(array) -> np.ndarray:
    """A primitive Arrow array without nulls as a NumPy view of its buffer (Array.to_numpy would
    import pandas, half a second, on first use)."""
    if array.null_count:
        raise BrokenPart("an embedding, timestamp or offset is null")
    dtype = np.dtype(_NUMPY[str(array.type)])
    return np.frombuffer(array.buffers()[1], dtype, len(array), array.offset * dtype.itemsize)


def unnested(column) -> list[np.ndarray]:
    """The per-row arrays of an Arrow array made by `nested` (offsets taken as they are)."""
    offsets = []
    values = column
    while not hasattr(values.type, "list_size"):
        offsets.append(numpy_view(values.offsets))
        values = values.values
    dim = values.type.list_size
    flat = numpy_view(values.values)
    if not offsets:
        return list(flat.reshape(len(column), dim))
    out = []
    for i in range(len(column)):
        start, end, shape = i, i + 1, []
        for off in offsets:
            start, end = int(off[start]), int(off[end])
            shape.append((end - start) // max(int(np.prod(shape)), 1))
        out.append(flat[start * dim : end * dim].reshape(*shape, dim))
    return out


class _Writer:
    def __init__(self, handle: IO[bytes], meta: dict[str, Any]) -> None:
        self.handle, self.meta, self.writer = handle, meta, None

    def write(self, rows: list[Row]) -> None:
        pa, pq = _pyarrow()
        columns = {
            "key": pa.array([r.key for r in rows], pa.string()),
            "input": pa.array([r.input for r in rows], pa.string()),
            "shard": pa.array([r.shard for r in rows], pa.string()),
            "duration": pa.array([r.duration for r in rows], pa.float64()),
            "frames": pa.array([r.frames for r in rows], pa.int64()),
            "timestamps": _lists([np.asarray(r.timestamps, np.float64).reshape(-1) for r in rows]),
            "embedding": nested([r.embedding for r in rows]),
            "layer": pa.array([json.dumps(self.meta.get("layers"))] * len(rows), pa.string()),
        }
        fields = [pa.field(name, array.type, nullable=name != "embedding") for name, array in columns.items()]
        table = pa.Table.from_arrays(list(columns.values()), schema=pa.schema(fields))
        if self.writer is None:
            schema = table.schema.with_metadata({META_KEY: json.dumps(self.meta).encode()})
            self.writer = pq.ParquetWriter(self.handle, schema, compression="none",
                                           use_dictionary=["shard", "layer"],
                                           write_statistics=["key", "duration", "frames"])
        self.writer.write_table(table)  # one row group

    def close(self) -> None:
        self.writer.close()


def _open(path: Path):
    _, pq = _pyarrow()
    try:
        return pq.ParquetFile(path)
    except Exception as err:  # noqa: BLE001 - pyarrow raises its own types for a cut file
        raise BrokenPart(f"{path}: not a whole Parquet file ({err})") from err


def read_meta(path: Path) -> dict[str, Any]:
    raw = (_open(path).schema_arrow.metadata or {}).get(META_KEY)
    return json.loads(raw) if raw else {}


class ParquetFormat:
    def writer(self, handle: IO[bytes], meta: dict[str, Any]) -> _Writer:
        return _Writer(handle, meta)

    def keys(self, path: Path) -> list[str]:
        try:
            return _open(path).read(columns=["key"]).column("key").to_pylist()
        except BrokenPart:
            raise
        except Exception as err:  # noqa: BLE001
            raise BrokenPart(f"{path}: cannot read its keys ({err})") from err

    def rows(self, path: Path) -> Iterator[Row]:
        part = _open(path)
        for group in range(part.num_row_groups):
            table = part.read_row_group(group)
            embeddings = unnested(table.column("embedding").combine_chunks())
            stamps = table.column("timestamps").combine_chunks()
            names = ("key", "input", "shard", "duration", "frames")
            columns = {n: table.column(n).to_pylist() for n in names}
            for i, embedding in enumerate(embeddings):
                yield Row(columns["key"][i], columns["input"][i], columns["shard"][i], columns["duration"][i],
                          columns["frames"][i], numpy_view(stamps[i].values), embedding)

    def stack(self, path: Path) -> tuple[list[str], np.ndarray] | None:
        _, pq = _pyarrow()
        try:  # the two columns only, memory-mapped, row groups decoded in parallel
            table = pq.read_table(path, columns=["key", "embedding"], memory_map=True)
        except Exception as err:  # noqa: BLE001 - pyarrow raises its own types for a cut file
            raise BrokenPart(f"{path}: not a whole Parquet file ({err})") from err
        column = table.column("embedding")
        if not hasattr(column.type, "list_size"):
            return None  # not [D] per row
        dim = column.type.list_size
        chunks = [numpy_view(chunk.flatten()).reshape(len(chunk), dim) for chunk in column.chunks]
        stacked = np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)  # one copy, writable
        return table.column("key").to_pylist(), stacked
