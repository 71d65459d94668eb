"""report.json, the printed table, and PNG plots (accuracy per layer, confusion matrix)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from maeast_embed.atomic import atomic_open


def write_json(path: Path, record: dict[str, Any]) -> None:
    with atomic_open(path, "w") as handle:
        json.dump(record, handle, indent=1)


def _cell(summary: dict[str, dict[str, float]], key: str) -> str:
    if key not in summary:
        return "-"
    return f"{summary[key]['mean']:.3f} +- {summary[key]['std']:.3f}"


def format_table(report: dict[str, Any]) -> str:
    """One row per model (and one per layer for sweeps): mean +- std over folds on test data."""
    multilabel = report["dataset"]["multilabel"]
    keys = ["mAP", "accuracy", "macro_f1"] if multilabel else ["accuracy", "macro_f1"]
    header = ["model", "method", "layer", *keys, "skipped"]
    rows = []
    for model in report["models"]:
        layers = sorted({str(f["layer"]) for f in model["folds"]}, key=lambda s: (len(s), s))
        rows.append(
            [
                model["label"],
                model["method"],
                ",".join(layers),
                *(_cell(model["summary"], k) for k in keys),
                str(model["skipped"]["count"]),
            ]
        )
        for entry in model.get("per_layer", []):
            rows.append(["", "  sweep", str(entry["layer"]), *(_cell(entry["test"], k) for k in keys), ""])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]
    ]
    folds = len(report["models"][0]["folds"]) if report["models"] else 0
    title = (
        f"{report['dataset']['name']}: {report['dataset']['num_clips']} clips, "
        f"{len(report['dataset']['classes'])} classes, {folds} split(s); test scores, mean +- std"
    )
    return "\n".join([title, lines[0], "-" * len(lines[0]), *lines[1:]])


def plot_layers(report: dict[str, Any], path: Path) -> bool:
    """Headline test score per layer, one line per model with a sweep; False if none has one."""
    models = [m for m in report["models"] if m.get("per_layer")]
    if not models:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = "mAP" if report["dataset"]["multilabel"] else "accuracy"
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for model in models:
        layers = [e["layer"] for e in model["per_layer"]]
        mean = np.array([e["test"][metric]["mean"] for e in model["per_layer"]])
        std = np.array([e["test"][metric]["std"] for e in model["per_layer"]])
        ax.errorbar(layers, mean, yerr=std, marker="o", capsize=3, label=model["label"])
        ax.set_xticks(layers)
    for model in report["models"]:
        if not model.get("per_layer"):
            ax.axhline(model["summary"][metric]["mean"], linestyle="--", color="grey", linewidth=1)
            ax.annotate(model["label"], (ax.get_xlim()[0], model["summary"][metric]["mean"]), fontsize=8)
    ax.set_xlabel("encoder layer")
    ax.set_ylabel(f"test {metric} (mean +- std over folds)")
    ax.set_title(f"{report['dataset']['name']}: linear probe per layer")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_open(path) as handle:
        fig.savefig(handle, format="png")
    plt.close(fig)
    return True


def plot_confusion(matrix: np.ndarray, classes: list[str], title: str, path: Path) -> None:
    """Row-normalised confusion matrix (true class per row), counts annotated when small."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(classes)
    size = min(16, 2 + 0.35 * n)
    fig, ax = plt.subplots(figsize=(size, size), dpi=100)
    rates = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=90, fontsize=7 if n > 20 else 9)
    ax.set_yticks(range(n), classes, fontsize=7 if n > 20 else 9)
    if n <= 20:
        for i, j in zip(*np.nonzero(matrix), strict=True):
            ax.text(
                j,
                i,
                str(matrix[i, j]),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if rates[i, j] > 0.5 else "black",
            )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    with atomic_open(path) as handle:
        fig.savefig(handle, format="png")
    plt.close(fig)
