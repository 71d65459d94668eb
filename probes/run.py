"""One probe run: read the dataset, make the splits, evaluate every model, write the report."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from maeast_embed.errors import MAEASTError
from maeast_embed.features import resolve_device
from maeast_embed.precision import check_dtype

from .datasets import ProbeDataset, Split, load_dataset, make_splits, warn
from .embeddings import Embeddings, EmbedOptions, ModelSpec, get_embeddings, read_clips, resolve_models
from .finetune import FinetuneConfig, finetune_split
from .linear import ProbeConfig, parse_layer_mode, probe_split
from .metrics import confusion, headline, summarise
from .precomputed import Precomputed, is_output_folder, load_precomputed, model_layer, values_layer
from .report import format_table, plot_confusion, plot_layers, write_json


@dataclass(frozen=True)
class RunConfig:
    """Options of a probe run (see `maeast-embed probe --help`)."""

    layer: str | int = "last"  # 'last' | 'all' (sweep) | 'weighted' | 1-based number
    pool: str = "mean"  # time pooling of frozen features: 'mean' | 'meanmax'
    freq_pool: str = "concat"
    layout: str = "auto"
    folds: int = 5  # folds to make when the dataset has neither folds nor splits
    valid_fraction: float = 0.2  # carved from train when there is no validation split
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"  # the one used per model is in its report record
    batch_size: int = 8
    chunk_seconds: float = 10.24
    cache_dir: Path | None = None
    use_cache: bool = True
    trust_checkpoint: bool = False
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    finetune: FinetuneConfig | None = None
    progress: bool = False
    labels: Path | None = None  # labels CSV of an extraction output folder (precomputed embeddings)
    join: str = "auto"  # the CSV column naming each record: 'key', 'input', or 'auto' (key if any)


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_")[-60:] or "model"


def _restrict(splits: list[Split], ok: np.ndarray, ds: ProbeDataset, label: str) -> list[Split]:
    """Drop unreadable clips from every split; an empty train/valid/test part is an error."""
    result = []
    for s in splits:
        parts = {k: v[ok[v]] for k, v in (("train", s.train), ("valid", s.valid), ("test", s.test))}
        empty = [k for k, v in parts.items() if len(v) == 0]
        if empty:
            raise MAEASTError(f"{ds.name} {s.name}: no readable clips left in {', '.join(empty)} for {label}")
        result.append(Split(s.name, parts["train"], parts["valid"], parts["test"]))
    return result


def _aggregate_layers(folds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    count = len(folds[0]["per_layer"])
    return [
        {
            "layer": folds[0]["per_layer"][i]["layer"],
            "test": summarise([f["per_layer"][i]["test"] for f in folds]),
            "valid": summarise([f["per_layer"][i]["valid"] for f in folds]),
            "l2": [f["per_layer"][i]["l2"] for f in folds],
        }
        for i in range(count)
    ]


def evaluate_model(
    spec: ModelSpec,
    ds: ProbeDataset,
    splits: list[Split],
    config: RunConfig,
    targets: np.ndarray,
    waves_cache: dict[str, Any],
    log: Callable[[str], None],
    precomputed: Embeddings | None = None,
) -> dict[str, Any]:
    """Linear probe (or fine-tuning) of one model on every split; test probabilities kept for plots.
    `precomputed`: the embeddings to probe instead of computing them."""
    start = time.perf_counter()
    device = resolve_device(config.device)
    method = "finetune" if config.finetune is not None and spec.kind != "fbank" else "linear"
    record: dict[str, Any] = {
        "label": spec.label,
        "kind": spec.kind,
        "model_hash": spec.model_hash,
        "info": spec.info,
        "method": method,
    }
    if method == "linear":
        emb = precomputed or get_embeddings(
            spec,
            ds,
            EmbedOptions(config.pool, config.freq_pool, config.dtype, config.chunk_seconds),
            device=config.device,
            batch_size=config.batch_size,
            cache_root=config.cache_dir,
            use_cache=config.use_cache,
            progress=config.progress,
            sink=ds.warnings,
        )
        ok, skipped = emb.ok, emb.skipped
        record["cache"] = {"file": emb.cache_file, "hit": emb.from_cache}
        record["dtype"] = emb.dtype
        record["embedding_shape"] = list(emb.values.shape[1:])
        source = "precomputed" if precomputed else "from cache" if emb.from_cache else "computed"
        log(
            f"{spec.label}: embeddings {source} "
            f"({emb.values.shape[1]} layer(s) x {emb.values.shape[2]})"
        )
    else:
        if "waves" not in waves_cache:
            skipped_reads: dict[str, str] = {}
            good, waves = read_clips(ds, list(range(len(ds))), skipped_reads)
            by_index: list[np.ndarray | None] = [None] * len(ds)
            for i, wave in zip(good, waves, strict=True):
                by_index[i] = wave
            waves_cache.update(waves=by_index, skipped=skipped_reads)
        ok = np.array([w is not None for w in waves_cache["waves"]])
        skipped = waves_cache["skipped"]
    if skipped:
        example = next(iter(skipped.items()))
        warn(
            f"{len(skipped)} unreadable clip(s) skipped, e.g. {example[0]}: {example[1]}",
            ds.warnings,
        )
    record["skipped"] = {"count": len(skipped), "files": dict(list(skipped.items())[:100])}
    usable = _restrict(splits, ok, ds, spec.label)
    folds = []
    for split in usable:
        if method == "linear":
            result = probe_split(
                emb.values,
                targets,
                split,
                config.layer,
                num_classes=len(ds.classes),
                multilabel=ds.multilabel,
                cfg=config.probe,
                device=device,
            )
        else:
            result = finetune_split(
                spec.model,
                waves_cache["waves"],
                targets,
                split,
                num_classes=len(ds.classes),
                multilabel=ds.multilabel,
                cfg=config.finetune,
                device=device,
                log=log,
            )
        metric = headline(ds.multilabel)
        log(
            f"{spec.label} {split.name}: test {metric} {result['test'][metric]:.4f} (layer {result['layer']})"
        )
        folds.append(result)
    if not ds.multilabel:
        record["confusion"] = sum(
            confusion(f["test_probs"], targets[s.test], len(ds.classes))
            for f, s in zip(folds, usable, strict=True)
        ).tolist()
    record["summary"] = summarise([f["test"] for f in folds])
    record["valid_summary"] = summarise([f["valid"] for f in folds])
    if folds[0].get("per_layer"):
        record["per_layer"] = _aggregate_layers(folds)
    record["folds"] = [{k: v for k, v in f.items() if k != "test_probs"} for f in folds]
    record["seconds"] = round(time.perf_counter() - start, 3)
    return record


def _precomputed(dataset: str | Path, models: list[str], config: RunConfig) -> Precomputed:
    """The embeddings and labels of an extraction output folder, after the options that cannot
    apply to them are refused."""
    if config.labels is None:
        raise MAEASTError(f"{dataset} is an extraction output folder: give its labels with --labels "
                          "CSV (columns key|input,label[,fold|split])")
    if models:
        raise MAEASTError("--model does not apply to precomputed embeddings: the folder's model made them")
    if config.finetune is not None:
        raise MAEASTError("--finetune needs the audio: precomputed embeddings get a linear probe")
    return load_precomputed(dataset, config.labels, config.join, config.pool)


def _evaluate_precomputed(pre: Precomputed, folder: Path, splits: list[Split], config: RunConfig,
                          targets: np.ndarray, log: Callable[[str], None]) -> dict[str, Any]:
    """The linear probe of a folder's embeddings, its layers named as the model's."""
    model = pre.header.get("model", {})
    options = pre.header.get("options", {})
    info = {"embeddings": str(folder.resolve()), "format": options.get("format", "npz"), "join": pre.join,
            "layers": pre.header.get("layers"), "time_pool": pre.pooled, "model": model, "options": options}
    label = model.get("name") or Path(model.get("path") or folder.name).stem
    spec = ModelSpec(label, "precomputed", model.get("sha256") or "", info=info)
    values = Embeddings(pre.values, np.ones(len(pre.dataset), bool), {}, False, None, options.get("dtype"))
    probed = replace(config, layer=values_layer(config.layer, pre))
    record = evaluate_model(spec, pre.dataset, splits, probed, targets, {}, log, values)
    for entry in [*record["folds"], *record.get("per_layer", [])]:  # positions -> model layer numbers
        entry["layer"] = model_layer(entry["layer"], pre)
        for inner in entry.get("per_layer", []):
            inner["layer"] = model_layer(inner["layer"], pre)
    return record


def run_probe(
    dataset: str | Path,
    models: list[str],
    out_dir: str | Path,
    config: RunConfig | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Evaluate `models` on `dataset`; writes report.json and PNG plots to `out_dir`, returns the report."""
    config = config or RunConfig()
    config = replace(config, layer=parse_layer_mode(config.layer))
    out_dir = Path(out_dir)
    if config.labels is not None or is_output_folder(dataset):
        pre: Precomputed | None = _precomputed(dataset, models, config)
        ds = pre.dataset
    else:
        if not models:
            raise MAEASTError("give at least one --model (a checkpoint, fbank, or random)")
        check_dtype(config.dtype, resolve_device(config.device))  # before any audio is read
        ds, pre = load_dataset(dataset, config.layout), None
    splits = make_splits(ds, num_folds=config.folds, valid_fraction=config.valid_fraction, seed=config.seed)
    log(f"{ds.name}: {len(ds)} clips, {len(ds.classes)} classes, {ds.layout} layout, {len(splits)} split(s)")
    targets = ds.label_matrix() if ds.multilabel else ds.targets()
    if pre is not None:
        results = [_evaluate_precomputed(pre, Path(dataset), splits, config, targets, log)]
    else:
        specs = resolve_models(models, trust_checkpoint=config.trust_checkpoint, seed=config.seed)
        waves_cache: dict[str, Any] = {}
        results = [evaluate_model(spec, ds, splits, config, targets, waves_cache, log) for spec in specs]
    settings = asdict(config)
    settings["cache_dir"] = str(config.cache_dir) if config.cache_dir else None
    settings["labels"] = str(config.labels) if config.labels else None
    report: dict[str, Any] = {
        "dataset": {
            "name": ds.name,
            "root": str(ds.root),
            "layout": ds.layout,
            "num_clips": len(ds),
            "classes": ds.classes,
            "multilabel": ds.multilabel,
            "partition": ds.partition,
            "splits": [s.name for s in splits],
            "fingerprint": ds.fingerprint(),
            "audio_fingerprint": ds.audio_fingerprint(),
        },
        "settings": settings,
        "models": results,
        "warnings": list(dict.fromkeys(ds.warnings)),
        "plots": [],
    }
    if plot_layers(report, out_dir / "layers.png"):
        report["plots"].append("layers.png")
    for model in results:
        if "confusion" in model:
            name = f"confusion_{_safe(model['label'])}.png"
            title = f"{model['label']} ({model['method']}) on {ds.name}, all test folds"
            plot_confusion(np.array(model["confusion"]), ds.classes, title, out_dir / name)
            report["plots"].append(name)
    write_json(out_dir / "report.json", report)
    report["table"] = format_table(report)
    return report
