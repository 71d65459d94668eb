"""`convert`: an output folder rewritten in another format (or storage dtype), with its manifest.

The target gets the source's run header (model, layers, options) with the new format, storage
dtype and part size, and one record per input; it resumes like `extract` (keys already in the
target are skipped) and is refused when it holds other settings, unless `overwrite`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..atomic import append_line, writing
from ..errors import ConfigError
from ..outpaths import output_path
from .lock import lock_path, run_lock
from .manifest import MANIFEST, read_manifest
from .npz import write_npz_atomic
from .options import ExtractOptions
from .partrun import PartOutput, parts_of_run
from .reader import Embeddings, load_embeddings
from .rows import Row


@dataclass
class Converted:
    written: int
    skipped: int
    manifest: Path


def convert(source: str | os.PathLike, target: str | os.PathLike, fmt: str, *, part_size: int | None = None,
            storage_dtype: str | None = None, overwrite: bool = False) -> Converted:
    """Rewrite the embeddings of `source` into `target` as `fmt` (npz, parquet, webdataset),
    stored as `storage_dtype` (default: the source's)."""
    embeddings = load_embeddings(source)
    target = Path(target)
    if target.resolve() == Path(source).resolve():
        raise ConfigError("convert into another folder than the source")
    dtype = storage_dtype or embeddings.options.get("storage_dtype", "float32")
    options = ExtractOptions(format=fmt, part_size=part_size, storage_dtype=dtype, overwrite=overwrite)
    header = json.loads(json.dumps(embeddings.header))
    header["options"].update(format=fmt, part_size=part_size, storage_dtype=dtype, shard="0/1")
    signature = {k: v for k, v in header["signature"].items() if k not in ("format", "storage_dtype")}
    signature.update({"format": fmt} if fmt != "npz" else {})
    signature.update({"storage_dtype": dtype} if dtype != "float32" else {})
    header.update(signature=signature, time=datetime.now(UTC).isoformat(timespec="seconds"),
                  converted_from=str(source))
    with writing(target, "create"):
        target.mkdir(parents=True, exist_ok=True)
    manifest = target / MANIFEST
    with run_lock(lock_path(target, MANIFEST)):
        headers, _ = read_manifest(manifest)
        if headers and not overwrite and headers[-1].get("signature") != signature:
            raise ConfigError(f"{target} holds embeddings with other settings; pass --overwrite or choose "
                              "another folder")
        append_line(manifest, json.dumps(header))
        return _write(embeddings, target, options, header, manifest)


def _write(embeddings: Embeddings, target: Path, options: ExtractOptions, header: dict[str, Any],
           manifest: Path) -> Converted:
    done = Converted(0, 0, manifest)

    def record(row: Row, output: Path, status: str = "ok") -> None:
        append_line(manifest, json.dumps({
            "type": "file", "input": row.input, "output": str(output), "status": status,
            "duration": row.duration, "frames": row.frames, "error": None, "shape": list(row.embedding.shape),
            **({"shard": row.shard} if row.shard else {}),
        }))

    def committed(part: Path, rows: list[Row]) -> None:
        for row in rows:
            record(row, part)
            done.written += 1

    parts = None if options.format == "npz" else PartOutput(target, options, header, committed)
    with parts_of_run(parts):
        for item in embeddings:
            row = Row(item.key, item.input, item.shard, item.duration, item.frames, item.timestamps,
                      item.embedding.astype(options.storage_dtype, copy=False))
            if parts is None:
                out = output_path(target, row.key, ".npz")
                if out.exists() and not options.overwrite:
                    done.skipped += 1
                    continue
                write_npz_atomic(out, {"embedding": row.embedding, "timestamps": row.timestamps}, root=target)
                committed(out, [row])
            elif row.key in parts.done and not options.overwrite:
                done.skipped += 1
            else:
                parts.add(row)
    return done
