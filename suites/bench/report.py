"""The bench's outputs from its cells: `bench.json` (everything), `bench.md` and `bench.csv` (per
task the suite's metric, mean ± std over folds and the model's rank), `bench.png` (models by task)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from maeast_embed.atomic import atomic_open

from .cells import Cell, higher_is_better

Row = tuple[str, str, str]  # suite, task, metric


def table_rows(cells: list[Cell]) -> dict[Row, dict[str, Any]]:
    """(suite, task, metric) -> {model: {value, std, folds, rank}} for the cells that scored."""
    rows: dict[Row, dict[str, Any]] = {}
    for cell in cells:
        for score in cell.scores if cell.status == "ok" else []:
            rows.setdefault((cell.suite, cell.task, score.metric), {})[cell.model] = {
                "value": score.value, "std": score.std, "folds": score.folds}
    for (_, _, metric), by_model in rows.items():
        sign = 1 if higher_is_better(metric) else -1
        for entry in by_model.values():
            better = [other for other in by_model.values() if sign * other["value"] > sign * entry["value"]]
            entry["rank"] = 1 + len(better)
    return rows


def mean_ranks(rows: dict[Row, dict[str, Any]], models: list[str]) -> dict[str, dict[str, float | None]]:
    """suite -> model -> the model's mean rank over that suite's rows (None: no score there)."""
    out: dict[str, dict[str, float | None]] = {}
    for suite in dict.fromkeys(suite for suite, _, _ in rows):
        ranks = {m: [r[m]["rank"] for (s, _, _), r in rows.items() if s == suite and m in r] for m in models}
        out[suite] = {m: (sum(v) / len(v) if v else None) for m, v in ranks.items()}
    return out


def _fmt(entry: dict[str, Any] | None, cell: Cell | None) -> str:
    if entry is None:
        return cell.status if cell is not None and cell.status != "ok" else "-"
    std = f" ± {entry['std']:.4f}" if entry["std"] is not None else ""
    return f"{entry['value']:.4f}{std} ({entry['rank']})"


def markdown(cells: list[Cell], rows: dict[Row, dict[str, Any]], models: list[str],
             suite_names: dict[str, str], ranks: dict[str, dict[str, float | None]]) -> str:
    by_key = {(c.suite, c.task, c.model): c for c in cells}
    lines = []
    for suite in dict.fromkeys(c.suite for c in cells):
        lines += [f"### {suite_names.get(suite, suite)}", "",
                  "| task | metric | " + " | ".join(models) + " |", "|---|---|" + "---|" * len(models)]
        tasks = list(dict.fromkeys(c.task for c in cells if c.suite == suite))
        for task in tasks:
            metrics = [m for (s, t, m) in rows if s == suite and t == task] or ["-"]
            for metric in metrics:
                values = [_fmt(rows.get((suite, task, metric), {}).get(m), by_key.get((suite, task, m)))
                          for m in models]
                lines.append(f"| {task} | {metric} | " + " | ".join(values) + " |")
        mean = ranks.get(suite, {})
        shown = ("-" if mean.get(m) is None else f"{mean[m]:.2f}" for m in models)
        lines.append("| **mean rank** | | " + " | ".join(shown) + " |")
        lines.append("")
    lines += ["### Time (seconds, encoding and evaluation)", "",
              "| suite | " + " | ".join(models) + " | all |", "|---|" + "---|" * (len(models) + 1)]
    for suite, total in suite_seconds(cells).items():
        per = [sum(c.seconds for c in cells if c.suite == suite and c.model == m) for m in models]
        shown = " | ".join(f"{s:.0f}" for s in per)
        lines.append(f"| {suite_names.get(suite, suite)} | {shown} | {total:.0f} |")
    missing = {(c.suite, c.task): c.fetch for c in cells if c.status == "missing"}
    if missing:
        lines += ["", "### Tasks whose data is missing", ""]
        lines += [f"- {suite_names.get(s, s)} `{t}`: `{fetch}`" for (s, t), fetch in missing.items()]
    failed = [c for c in cells if c.status == "failed"]
    if failed:
        lines += ["", "### Failed", ""]
        lines += [f"- {suite_names.get(c.suite, c.suite)} `{c.task}` with {c.model}: {last_line(c.error)}"
                  + (f" (output: `{c.log}`)" if c.log else "") for c in failed]
    return "\n".join(lines) + "\n"


def last_line(error: str | None) -> str:
    """The last line of a traceback (the exception), shortened."""
    lines = (error or "").strip().splitlines()
    return lines[-1][:300] if lines else "no message"


def csv_text(cells: list[Cell], rows: dict[Row, dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["suite", "task", "metric", "model", "status", "value", "std", "folds", "rank",
                     "seconds"])
    for cell in cells:
        if cell.status != "ok":
            writer.writerow([cell.suite, cell.task, "", cell.model, cell.status, "", "", "", "",
                             f"{cell.seconds:.1f}"])
        for score in cell.scores if cell.status == "ok" else []:
            entry = rows[(cell.suite, cell.task, score.metric)][cell.model]
            writer.writerow([cell.suite, cell.task, score.metric, cell.model, "ok", score.value,
                             "" if entry["std"] is None else entry["std"], " ".join(map(str, score.folds)),
                             entry["rank"], f"{cell.seconds:.1f}"])
    return out.getvalue()


def suite_seconds(cells: list[Cell]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for cell in cells:
        totals[cell.suite] = totals.get(cell.suite, 0.0) + cell.seconds
    return totals


def plot(rows: dict[Row, dict[str, Any]], models: list[str], path: Path) -> None:
    """Horizontal bars: one group per (suite, task, metric), one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return
    names = [f"{s} {t}\n{m}" for s, t, m in rows]
    height = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(8, 1.0 + 0.55 * len(rows) * max(1, len(models) / 2)))
    for i, model in enumerate(models):
        values = [r.get(model, {}).get("value", float("nan")) for r in rows.values()]
        errors = [r.get(model, {}).get("std") or 0.0 for r in rows.values()]
        ax.barh([k + i * height for k in range(len(rows))], values, height, xerr=errors, label=model)
    ax.set_yticks([k + 0.4 - height / 2 for k in range(len(rows))], names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("score (each task's own metric)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110)
    plt.close(fig)


def write_reports(out: Path, cells: list[Cell], models: list[str], suite_names: dict[str, str],
                  meta: dict[str, Any]) -> dict[str, Path]:
    rows = table_rows(cells)
    ranks = mean_ranks(rows, models)
    data = {
        **meta,
        "models": models,
        "suite_seconds": suite_seconds(cells),
        "mean_rank": {s: ranks.get(s, dict.fromkeys(models)) for s in dict.fromkeys(c.suite for c in cells)},
        "table": [{"suite": s, "task": t, "metric": m, "models": v} for (s, t, m), v in rows.items()],
        "cells": [c.to_json() for c in cells],
    }
    paths = {kind: out / f"bench.{kind}" for kind in ("json", "md", "csv", "png")}
    texts = {"json": json.dumps(data, indent=1) + "\n", "csv": csv_text(cells, rows),
             "md": markdown(cells, rows, models, suite_names, ranks)}
    for kind, text in texts.items():
        with atomic_open(paths[kind], "w") as handle:
            handle.write(text)
    plot(rows, models, paths["png"])
    return paths
