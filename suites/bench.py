"""`maeast-embed bench`: several suites with one model at one set of options, one table.

X-ARES scores are read from the files its runner writes (`env/<task>/checkpoints/<encoder
class>/{mlp,knn}_score.txt`); MTEB/MAEB scores from `mteb.evaluate`'s result. A task that failed
is a row without a score.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from maeast_embed.errors import ConfigError


@dataclass(frozen=True)
class Score:
    suite: str
    task: str
    metric: str
    value: float | None


def xares_scores(tasks: list[str], options: dict[str, Any], *, workdir: Path) -> list[Score]:
    """Run X-ARES on `tasks` (names or task files) and collect each task's MLP and kNN scores
    (first in a process: see `xares_run.run`)."""
    from xares.utils import attr_from_py_path

    from .xares_run import encoder_class_name, run

    workdir = workdir.resolve()
    rows = []
    for task_py in run(tasks, options, workdir=workdir):
        config = attr_from_py_path(task_py, endswith="_config")(None)
        folder = workdir / "env" / config.name / "checkpoints" / encoder_class_name(options)
        kinds = [("mlp", "MLP"), *([("knn", "kNN")] if config.do_knn else [])]
        for kind, label in kinds:
            path = folder / f"{kind}_score.txt"
            value = float(path.read_text().split()[0]) if path.is_file() else None
            rows.append(Score("X-ARES", config.formal_name, f"{label} {config.metric}", value))
    return rows


def mteb_scores(tasks: list, options: dict[str, Any], *, results: Path | None = None,
                benchmark: str | None = None) -> list[Score]:
    """Evaluate on mteb `tasks` (names or task objects) or a `benchmark`; one row per task's main score."""
    import mteb
    from mteb.cache import ResultCache

    from .mteb_model import model_meta, register

    meta = register(model_meta(**options))
    named = [t for t in tasks if isinstance(t, str)]
    chosen = [*(mteb.get_tasks(tasks=named) if named else []), *(t for t in tasks if not isinstance(t, str))]
    if benchmark:
        chosen.extend(mteb.get_benchmark(benchmark).tasks)
    outcome = mteb.evaluate(meta, chosen, cache=ResultCache(results) if results else None, raise_error=False,
                            show_progress_bar=False)
    done = {r.task_name: r for r in outcome.task_results}
    return [
        Score("MTEB", task.metadata.name, task.metadata.main_score,
              done[task.metadata.name].get_score() if task.metadata.name in done else None)
        for task in chosen
    ]


def table(rows: list[Score], fmt: str = "md") -> str:
    """The scores as a Markdown table ('md'), CSV ('csv') or JSON ('json')."""
    if fmt == "json":
        return json.dumps([asdict(r) for r in rows], indent=2) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["suite", "task", "metric", "score"])
        writer.writerows([r.suite, r.task, r.metric, "" if r.value is None else r.value] for r in rows)
        return out.getvalue()
    if fmt != "md":
        raise ConfigError(f"table format must be md, csv or json, got {fmt!r}")
    lines = ["| suite | task | metric | score |", "|---|---|---|---|"]
    lines += [f"| {r.suite} | {r.task} | {r.metric} | {'failed' if r.value is None else f'{r.value:.4f}'} |"
              for r in rows]
    return "\n".join(lines) + "\n"
