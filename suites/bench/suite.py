"""What `bench` needs of a suite: its task names and presets, whether a task's data is there,
and one model's scores on one task."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from maeast_embed.errors import ConfigError
from maeast_embed.outpaths import safe_filename

from .cells import Score
from .models import BenchModel

SUITES_EXTRA = "pip install 'maeast-embed[suites]'"


class MissingData(Exception):
    """A task's data is not there; the message is the command that fetches it."""


class Suite:
    """One suite. `presets` maps a preset name ('toy', 'full') to task names; `run` raises
    MissingData when the task's data is absent and anything else when the task fails."""

    key = ""
    name = ""
    needs: tuple[str, ...] = ()
    install = SUITES_EXTRA

    def __init__(self, out: Path) -> None:
        self.out = out

    def check_installed(self) -> None:
        absent = [m for m in self.needs if importlib.util.find_spec(m) is None]
        if absent:
            raise ConfigError(f"{self.name} needs {', '.join(absent)}, not installed here: {self.install}")

    def presets(self) -> dict[str, list[str]]:
        raise NotImplementedError

    def known(self) -> list[str]:
        """Every task name this suite accepts (besides task files where it takes them)."""
        return sorted({t for tasks in self.presets().values() for t in tasks})

    @functools.cached_property
    def known_set(self) -> frozenset[str]:
        """`known()`, listed once (listing mteb's tasks takes a while)."""
        return frozenset(self.known())

    def accepts(self, task: str) -> bool:
        return task in self.known_set

    def settings(self) -> dict[str, Any]:
        """What this suite's scores depend on besides the task and the model (its options)."""
        return {}

    def cell_settings(self, model: BenchModel) -> dict[str, Any]:
        """Everything a cell's scores depend on but its names: kept in the cell, compared on resume."""
        both = {"suite": self.settings(), "model": {"kind": model.kind, "options": model.options}}
        return json.loads(json.dumps(both, sort_keys=True, default=str))

    def work_folder(self, model: BenchModel) -> str:
        """The name of the model's working folder in this suite (embeddings, experiments): its label
        and a digest of `cell_settings`, so other settings never reuse this folder's work."""
        digest = hashlib.sha256(json.dumps(self.cell_settings(model), sort_keys=True).encode()).hexdigest()
        return f"{safe_filename(model.label)}-{digest[:8]}"

    def make_toy(self) -> None:
        """Write the toy tasks' data (small, generated, offline) under `self.out / 'toy'`."""

    def run(self, task: str, model: BenchModel) -> list[Score]:
        raise NotImplementedError


def call(command: list[str], what: str) -> str:
    """Run a suite's command, its output (stdout and stderr) passed on to this process's stdout
    (the cell's log) as it comes; returns that output, or raises a RuntimeError with its tail."""
    lines = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace") as child:
        for line in child.stdout:
            sys.stdout.write(line)
            lines.append(line)
    output = "".join(lines)
    if child.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {child.returncode}):\n{output[-4000:].strip()}")
    return output
