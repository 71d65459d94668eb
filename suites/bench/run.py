"""`run_bench`: every (suite, task, model) cell of a run in turn, each kept as soon as it ends,
so a rerun of the same command does only what is not done yet (failed cells are retried, and a
task whose data was missing is looked for again)."""

from __future__ import annotations

import platform
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maeast_embed import __version__
from maeast_embed.errors import ConfigError

from .capture import output_to
from .cells import Cell, CellStore
from .hear import Hear
from .maeb import Maeb
from .models import BenchModel, parse_models
from .report import last_line, write_reports
from .suite import MissingData, Suite
from .superb import Superb
from .xares import Xares

SUITES: dict[str, type[Suite]] = {"hear": Hear, "superb": Superb, "xares": Xares, "maeb": Maeb}
PRESETS = ("toy", "full")


@dataclass
class BenchConfig:
    """A bench run: `suites` (keys of SUITES), `tasks` (names, `suite:name`, or the presets 'toy'
    and 'full'), `models` (see `parse_models`), the encoder options every MAE-AST model shares,
    and where each suite keeps its data."""

    out: Path
    suites: list[str]
    tasks: list[str] = field(default_factory=lambda: ["full"])
    models: list[str] = field(default_factory=list)
    encoder_options: dict[str, Any] = field(default_factory=dict)
    hear_tasks_dir: Path | None = None
    hear_grid: str = "default"
    xares_workdir: Path | None = None
    superb_data: Path | None = None
    superb_steps: int | None = None
    superb_overrides: tuple[str, ...] = ()
    redo: bool = False


def build_suites(config: BenchConfig) -> list[Suite]:
    unknown = [s for s in config.suites if s not in SUITES]
    if unknown:
        raise ConfigError(f"unknown suite {', '.join(unknown)}; known: {', '.join(SUITES)}")
    made = {"hear": lambda: Hear(config.out, config.hear_tasks_dir, config.hear_grid),
            "superb": lambda: Superb(config.out, config.superb_data, config.superb_steps,
                                     config.superb_overrides),
            "xares": lambda: Xares(config.out, config.xares_workdir), "maeb": lambda: Maeb(config.out)}
    suites = [made[key]() for key in dict.fromkeys(config.suites)]
    for suite in suites:
        suite.check_installed()
    return suites


def resolve_tasks(suites: list[Suite], specs: list[str]) -> dict[str, list[str]]:
    """Each suite's tasks, in order: presets expand, `suite:task` goes to that suite, a plain
    name to every chosen suite that has it; a name no chosen suite has is refused with the list."""
    chosen: dict[str, list[str]] = {s.key: [] for s in suites}
    by_key = {s.key: s for s in suites}
    unplaced = []
    for spec in specs:
        if spec in PRESETS:
            for suite in suites:
                chosen[suite.key] += suite.presets()[spec]
            continue
        key, sep, name = spec.partition(":")
        if sep and key in SUITES:
            if key not in by_key:
                raise ConfigError(f"task {spec!r} is for suite {key}, which is not among --suite")
            targets = [by_key[key]] if by_key[key].accepts(name) else []
            if not targets:
                unplaced.append(spec)
        else:
            name = spec
            targets = [s for s in suites if s.accepts(name)]
            if not targets:
                unplaced.append(spec)
        for suite in targets:
            chosen[suite.key].append(name)
    if unplaced:
        listing = "\n".join(f"  {s.key}: {', '.join(s.known())}" for s in suites)
        raise ConfigError(f"unknown task {', '.join(map(repr, unplaced))}; presets: {', '.join(PRESETS)}; "
                          f"tasks (or suite:task):\n{listing}")
    return {key: list(dict.fromkeys(tasks)) for key, tasks in chosen.items()}


def run_cell(suite: Suite, task: str, model: BenchModel, log: Path) -> Cell:
    """One model on one task, what the suite prints appended to `log`."""
    start = time.perf_counter()
    with output_to(log, f"{suite.name} {task} {model.label}"):
        try:
            scores = suite.run(task, model)
            cell = Cell(suite.key, task, model.label, "ok", scores, time.perf_counter() - start)
        except MissingData as missing:
            cell = Cell(suite.key, task, model.label, "missing", seconds=0.0, fetch=str(missing))
        except Exception:  # one task's failure is recorded, and the run goes on
            cell = Cell(suite.key, task, model.label, "failed", seconds=time.perf_counter() - start,
                        error=traceback.format_exc(limit=6))
            print(cell.error)
    cell.log = str(log)
    return cell


def check_settings(stored: dict[tuple[str, str, str], Cell | None], suites: list[Suite],
                   models: list[BenchModel], out: Path) -> None:
    """Refuse to resume over scores made with other settings (encoder options, a suite's grid or
    steps): the table would mix them. `--redo` replaces them; another `-o` keeps both."""
    by_key = {suite.key: suite for suite in suites}
    by_label = {model.label: model for model in models}
    for (suite_key, task, label), cell in stored.items():
        suite = by_key[suite_key]
        wanted = suite.cell_settings(by_label[label])
        if cell is not None and cell.status == "ok" and cell.settings != wanted:
            changed = ", ".join(_changes(cell.settings, wanted))
            raise ConfigError(
                f"{out} holds {suite.name} {task} {label} scored with other settings ({changed}); use "
                "another output folder, or --redo to replace every result")


def _changes(old: Any, new: Any, key: str = "") -> list[str]:
    """'key: old -> new' for each value that differs between two nested dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [change for name in sorted({*old, *new}, key=str)
                for change in _changes(old.get(name), new.get(name), f"{key}.{name}" if key else str(name))]
    return [] if old == new else [f"{key}: {old!r} -> {new!r}"]


def run_bench(config: BenchConfig, echo: Callable[[str], None] = print) -> tuple[list[Cell], dict[str, Path]]:
    """Run what is not done yet, then write the reports; returns every cell and the reports' paths."""
    suites = build_suites(config)
    tasks = resolve_tasks(suites, config.tasks)
    config.out.mkdir(parents=True, exist_ok=True)
    models = parse_models(config.models, config.encoder_options, config.out / "models")
    store = CellStore(config.out)
    stored = {} if config.redo else {(s.key, t, m.label): store.get(s.key, t, m.label)
                                      for s in suites for t in tasks[s.key] for m in models}
    check_settings(stored, suites, models, config.out)
    cells = []
    for suite in suites:
        if any(t in suite.presets()["toy"] for t in tasks[suite.key]):
            suite.make_toy()
        for task in tasks[suite.key]:
            for model in models:
                cell = stored.get((suite.key, task, model.label))
                if cell is not None and cell.status == "ok":
                    echo(f"{suite.name} {task} {model.label}: done before")
                else:
                    log = store.log_path(suite.key, task, model.label)
                    echo(f"{suite.name} {task} {model.label}: running (output in {log})")
                    cell = run_cell(suite, task, model, log)
                    cell.settings = suite.cell_settings(model)
                    store.put(cell)
                    echo(f"{suite.name} {task} {model.label}: {_outcome(cell)}")
                cells.append(cell)
    meta = {"maeast_embed": __version__, "python": platform.python_version(), "machine": platform.machine(),
            "suites": [s.key for s in suites], "tasks": tasks, "encoder_options": config.encoder_options,
            "model_sources": {m.label: m.source for m in models}}
    paths = write_reports(config.out, cells, [m.label for m in models], {s.key: s.name for s in suites}, meta)
    return cells, paths


def _outcome(cell: Cell) -> str:
    if cell.status == "ok":
        return ", ".join(f"{s.metric} {s.value:.4f}" for s in cell.scores) + f" ({cell.seconds:.0f} s)"
    if cell.status == "missing":
        return f"data missing; fetch with: {cell.fetch}"
    return f"failed: {last_line(cell.error)} (see {cell.log})"
