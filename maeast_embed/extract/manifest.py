"""The append-only manifest: run headers (model, options, signature) and per-file records."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import __version__
from ..features import Embedder, LayerSpec
from .options import ExtractOptions

MANIFEST = "manifest.jsonl"


def iter_records(path: str | os.PathLike, prefix: str = "") -> Iterator[dict[str, Any]]:
    """The records of a manifest in order (none if it does not exist), only those of lines
    starting with `prefix` if given; unreadable lines are skipped."""
    path = Path(path)
    if not path.is_file():
        return
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.startswith(prefix):
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a killed run


def read_manifest(path: str | os.PathLike) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """(header records, latest file record per input path)."""
    headers, files = [], {}
    for record in iter_records(path):
        if record.get("type") == "header":
            headers.append(record)
        elif record.get("type") == "file":
            files[record["input"]] = record
    return headers, files


def layer_text(layer: LayerSpec) -> str | int | list[int]:
    return layer if isinstance(layer, str | int) else list(layer)


def run_signature(embedder: Embedder, options: ExtractOptions) -> dict[str, Any]:
    """Everything that changes the numbers in an output file."""
    info = getattr(embedder.model, "checkpoint", None)
    return {
        "sha256": info.sha256 if info else None,
        "granularity": options.granularity,
        "layer": layer_text(options.layer),
        "pool": options.pool,
        "freq_pool": options.freq_pool,
        "dtype": embedder.dtype,
        "chunk_seconds": round(embedder.chunk_steps * embedder.step_seconds, 6),
        **({"backend": embedder.backend} if embedder.backend != "torch" else {}),  # older folders match
        # the storage, only where it differs from the original .npz float32 (older folders match)
        **({"format": options.format} if options.format != "npz" else {}),
        **({"storage_dtype": options.storage_dtype} if options.storage_dtype != "float32" else {}),
    }


def run_header(
    embedder: Embedder,
    options: ExtractOptions,
    inputs: Sequence[str],
    *,
    files: int,
    taken_over: str | None = None,
    ignored: str = "",
) -> dict[str, Any]:
    """The record that opens a run: model, layers, options, signature, inputs, the number of
    files of this shard, what folder scans ignored ("ignored 12 files: .txt 10, .json 2") and,
    when a killed run's lock was taken over, whose it was."""
    cfg = embedder.model.cfg
    info = getattr(embedder.model, "checkpoint", None)
    count = cfg.encoder_layers
    layer = options.layer
    if layer == "all":
        layers: Any = list(range(1, count + 1))
    elif layer == "last":
        layers = [count]
    elif layer == "mean":
        layers = {"mean_of": list(range(1, count + 1))}
    else:
        numbers = [layer] if isinstance(layer, int) else list(layer)
        layers = [n if n > 0 else count + 1 + n for n in numbers]
    return {
        "type": "header",
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "maeast_embed": __version__,
        "model": {
            "path": info.path if info else None,
            "name": info.name if info else None,
            "sha256": info.sha256 if info else None,
            "variant": cfg.variant,
            "encoder_layers": count,
            "embed_dim": cfg.embed_dim,
            "kernel": [cfg.kernel_time, cfg.kernel_chan],
        },
        "layers": layers,
        "frame_seconds": embedder.step_seconds,
        "feature_dim": embedder.feature_dim(options.freq_pool)
        * (2 if options.granularity == "clip" and options.pool == "meanmax" else 1),
        "options": {
            **{k: v for k, v in asdict(options).items() if k != "layer"},
            "layer": layer_text(options.layer),
            "shard": f"{options.shard[0]}/{options.shard[1]}",
            "device": str(embedder.device),
            "dtype": embedder.dtype,
            "dtype_reason": embedder.dtype_reason,
            "backend": embedder.backend,
            "batch_size": embedder.batch_size,
            "chunk_seconds": round(embedder.chunk_steps * embedder.step_seconds, 6),
        },
        "signature": run_signature(embedder, options),
        "inputs": [str(i) for i in inputs],
        "files": files,
        "ignored": ignored,
        "taken_over": taken_over,
    }


def manifest_name(shard: tuple[int, int]) -> str:
    """manifest.jsonl, or manifest.shard-I-of-N.jsonl when the work is split (one per shard)."""
    return MANIFEST if shard[1] == 1 else f"manifest.shard-{shard[0]}-of-{shard[1]}.jsonl"

