"""One cell of the table: a (suite, task, metric) score of one model, kept as its own JSON file
(written atomically), so a killed or partly failed run resumes where it stopped."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from maeast_embed.atomic import atomic_open
from maeast_embed.outpaths import output_path, safe_filename

LOWER_IS_BETTER = {"wer", "cer", "eer", "er", "error", "loss", "mse", "mae", "rmse"}  # error rates, losses


def higher_is_better(metric: str) -> bool:
    """Scores are higher-better unless the metric's name holds an error rate or a loss word."""
    return not LOWER_IS_BETTER & set(re.split(r"[^a-z0-9]+", metric.lower()))


@dataclass
class Score:
    """A metric a suite reports for a task: its value (the mean over folds where the suite has
    folds) and the per-fold values."""

    metric: str
    value: float
    folds: list[float] = field(default_factory=list)

    @property
    def std(self) -> float | None:
        if len(self.folds) < 2:
            return None
        mean = sum(self.folds) / len(self.folds)
        return math.sqrt(sum((f - mean) ** 2 for f in self.folds) / (len(self.folds) - 1))


@dataclass
class Cell:
    """What a run of one model on one task gave: `status` ok (scores), failed (error) or missing
    (the task's data is not there: `fetch` says how to get it); `settings`, what the scores
    depend on besides the names (`Suite.cell_settings`)."""

    suite: str
    task: str
    model: str
    status: str
    scores: list[Score] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None
    fetch: str | None = None
    log: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for score, obj in zip(data["scores"], self.scores, strict=True):
            score["std"] = obj.std
            score["higher_is_better"] = higher_is_better(obj.metric)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Cell:
        scores = [Score(s["metric"], s["value"], list(s.get("folds", []))) for s in data.get("scores", [])]
        return cls(data["suite"], data["task"], data["model"], data["status"], scores,
                   float(data.get("seconds", 0.0)), data.get("error"), data.get("fetch"), data.get("log"),
                   data.get("settings", {}))


class CellStore:
    """`<out>/cells/<suite>/<task>/<model>.json`, one file per cell, and what the cell's run
    printed in `<out>/logs/<suite>/<task>/<model>.log`."""

    def __init__(self, out: Path) -> None:
        self.root = out / "cells"
        self.logs = out / "logs"

    def path(self, suite: str, task: str, model: str) -> Path:
        """Each name as one safe file name (the extraction's), proved to lie under `cells/`."""
        return output_path(self.root, _relative(suite, task, model), ".json")

    def log_path(self, suite: str, task: str, model: str) -> Path:
        return output_path(self.logs, _relative(suite, task, model), ".log")

    def get(self, suite: str, task: str, model: str) -> Cell | None:
        path = self.path(suite, task, model)
        try:
            cell = Cell.from_json(json.loads(path.read_text()))
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None  # absent, or not a cell this code wrote: run it again
        if (cell.suite, cell.task, cell.model) != (suite, task, model):
            return None  # the cell of other names that map to the same file
        return cell

    def put(self, cell: Cell) -> None:
        path = self.path(cell.suite, cell.task, cell.model)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, "w") as handle:
            json.dump(cell.to_json(), handle, indent=1)


def _relative(*names: str) -> str:
    return "/".join(safe_filename(name) for name in names)
