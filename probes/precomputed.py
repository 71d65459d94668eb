"""Precomputed embeddings: an extraction output folder (`maeast-embed extract`, any --format) and
a labels CSV joined on each record's `key` or `input`, as a probe dataset with its clip embeddings.

Clip-level folders are probed as extracted (their pooling is the extraction's); frame-level
folders are pooled over time here with the probe's `--pool`, as the probe pools frozen features.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maeast_embed import load_embeddings
from maeast_embed.errors import MAEASTError
from maeast_embed.extract.status import manifests
from maeast_embed.features import pool_time

from .datasets import Clip, LabelRow, ProbeDataset, finish_dataset, partition_of, read_label_rows, warn

SHOWN = 3  # names quoted in an error or warning


@dataclass
class Precomputed:
    """`values` [N, L, D] float32 in the order of `dataset.clips`; `layers` the model's layer
    numbers along L (None: one mean of layers); `pooled` the --pool applied to frame-level
    embeddings (None: clip level, pooled at extraction)."""

    dataset: ProbeDataset
    values: np.ndarray
    header: dict[str, Any]
    layers: list[int] | None
    pooled: str | None
    join: str


def is_output_folder(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder holding an extraction manifest."""
    path = Path(path)
    return path.is_dir() and bool(manifests(path))


def _few(names: list[str]) -> str:
    return ", ".join(names[:SHOWN]) + (", ..." if len(names) > SHOWN else "")


def _records(folder: Path, join: str, pool: str) -> tuple[list[str], np.ndarray, dict[str, Any], str | None]:
    """(names to join on, [M, L, D] float32, the run's header, the pooling applied here)."""
    emb = load_embeddings(folder)
    clip_level = emb.options.get("granularity") == "clip"
    if clip_level and join == "key":
        names, values = emb.to_numpy()
    else:
        names, rows = [], []
        for record in emb:
            names.append(record.key if join == "key" else os.path.normpath(record.input))
            if clip_level:
                rows.append(record.embedding)
            else:  # [T, D] or [L, T, D] -> [D'] or [L, D']
                rows.append(pool_time(torch.from_numpy(record.embedding.astype(np.float32)), pool).numpy())
        values = np.stack(rows) if rows else np.zeros((0, 0), np.float32)
    if not names:
        raise MAEASTError(f"{folder} holds no embeddings yet (is its extraction finished?)")
    values = values.astype(np.float32, copy=False)
    return names, values if values.ndim == 3 else values[:, None], emb.header, None if clip_level else pool


def _candidates(row: LabelRow, join: str, csv_dir: Path) -> list[str]:
    """What a CSV row's id may equal: a key as written; an input as written or, for a relative
    path, the file it names relative to the CSV's folder."""
    if join == "key":
        return [row.name]
    found = [os.path.normpath(row.name)]
    if not os.path.isabs(row.name):
        found.append(os.path.normpath(csv_dir.resolve() / row.name))
    return found


def load_precomputed(folder: str | os.PathLike, labels: str | os.PathLike, join: str = "auto",
                     pool: str = "mean") -> Precomputed:
    """The clips of `labels` (a CSV `key|input,label[,fold|split]`) with their embeddings from
    `folder`. Raises for a folder that is not an output folder, a row naming no embedding or one
    named twice; embeddings with no row are left out with a warning."""
    folder, labels = Path(folder), Path(labels)
    if not is_output_folder(folder):
        raise MAEASTError(f"{folder} is not an extraction output folder (no manifest*.jsonl in it): "
                          "give the folder `maeast-embed extract -o` wrote")
    if not labels.is_file():
        raise MAEASTError(f"labels CSV not found: {labels}")
    join, group_key, rows = read_label_rows(labels, ("key", "input") if join == "auto" else (join,))
    names, values, header, pooled = _records(folder, join, pool)
    position: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in position:
            raise MAEASTError(f"{folder}: two embeddings have the {join} {name!r}: join on key instead")
        position[name] = i
    chosen, missing, seen = [], [], {}
    for row in rows:
        found = next((position[c] for c in _candidates(row, join, labels.parent) if c in position), None)
        if found is None:
            missing.append(row.name)
        elif found in seen:
            raise MAEASTError(f"{labels}:{row.line}: {row.name} is the embedding of line {seen[found]} too")
        else:
            seen[found] = row.line
            chosen.append(found)
    if missing:
        raise MAEASTError(
            f"{labels}: {len(missing)} of {len(rows)} row(s) name no embedding in {folder} (joined on "
            f"{join}: {_few(missing)}); e.g. {join} {names[0]!r} is there. Extract them, or drop the rows"
        )
    clips = [Clip(folder / names[i], row.labels, row.group) for i, row in zip(chosen, rows, strict=True)]
    ds = finish_dataset(folder.name, folder.resolve(), "embeddings", clips,
                        any(len(c.labels) > 1 for c in clips), partition_of(group_key), audio=False)
    unlabelled = sorted(set(range(len(names))) - set(chosen))
    if unlabelled:
        warn(f"{len(unlabelled)} embedding(s) of {folder} have no row in {labels} "
             f"({_few([names[i] for i in unlabelled])}): left out", ds.warnings)
    layers = header.get("layers")
    return Precomputed(ds, values[chosen], header, layers if isinstance(layers, list) else None, pooled, join)


def values_layer(layer: str | int, pre: Precomputed) -> str | int:
    """A probe --layer as a 1-based position along the folder's layer axis (a layer number
    names the model's layer, negative from the model's last)."""
    if not isinstance(layer, int):
        return layer
    count = pre.header.get("model", {}).get("encoder_layers")
    number = count + 1 + layer if layer < 0 and count else layer
    if pre.layers is None or number not in pre.layers:
        held = f"layers {pre.layers}" if pre.layers is not None else "one mean of layers"
        raise MAEASTError(f"--layer {layer}: {pre.dataset.root} holds {held} (extract it with --layer)")
    return pre.layers.index(number) + 1


def model_layer(position: Any, pre: Precomputed) -> Any:
    """A 1-based position along the folder's layer axis back as the model's layer number."""
    if isinstance(position, int) and pre.layers is not None:
        return pre.layers[position - 1]
    return position
