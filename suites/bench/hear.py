"""HEAR 2021 through hear-eval-kit's own runners (`python -m hear_module.run embeddings` then
`predictions`), one embeddings folder per model; the score is the task's first evaluation
metric on the test split, averaged over the folds of k-fold tasks (HEAR's own aggregate)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from maeast_embed.checkpoint import resolve

from .cells import Score
from .models import BenchModel
from .suite import MissingData, Suite, call

HEAR2021 = [
    "beehive_states_fold0-v2-full", "beehive_states_fold1-v2-full", "beijing_opera-v1.0-hear2021-full",
    "dcase2016_task2-hear2021-full", "esc50-v2.0.0-full", "fsd50k-v1.0-full",
    "gunshot_triangulation-v1.0-full", "libricount-v1.0.0-hear2021-full", "maestro-v3.0.0-5h",
    "mridangam_stroke-v1.5-full", "mridangam_tonic-v1.5-full", "nsynth_pitch-v2.2.3-50h",
    "nsynth_pitch-v2.2.3-5h", "speech_commands-v0.0.2-5h", "speech_commands-v0.0.2-full",
    "tfds_crema_d-1.0.0-full", "tfds_gtzan-1.0.0-full", "tfds_gtzan_music_speech-1.0.0-full",
    "vocal_imitation-v1.1.3-full", "vox_lingua_top10-hear2021-full",
]
TOY = ["toy_scene", "toy_event"]
HEAR_INSTALL = ('pip install -c constraints.txt -e ".[hear]" && '
                "pip install --no-deps heareval==2021.1.3 hearvalidator==2021.0.2")


class Hear(Suite):
    key = "hear"
    name = "HEAR"
    needs = ("heareval",)
    install = HEAR_INSTALL

    def __init__(self, out: Path, tasks_dir: Path | None = None, grid: str = "default") -> None:
        super().__init__(out)
        self.tasks_dir = (tasks_dir or out / "hear" / "tasks").resolve()
        self.toy_dir = (out / "toy" / "hear").resolve()
        self.grid = grid

    def presets(self) -> dict[str, list[str]]:
        return {"toy": TOY, "full": HEAR2021}

    def settings(self) -> dict[str, Any]:
        return {"grid": self.grid}

    def known(self) -> list[str]:
        local = [p.name for p in self.tasks_dir.glob("*") if (p / "task_metadata.json").is_file()]
        return sorted({*HEAR2021, *TOY, *local})

    def make_toy(self) -> None:
        if not all((self.toy_dir / t / "task_metadata.json").is_file() for t in TOY):
            call([sys.executable, "-m", "hear_module.tasks", str(self.toy_dir)], "writing HEAR's toy tasks")

    def task_dir(self, task: str) -> Path:
        return (self.toy_dir if task in TOY else self.tasks_dir) / task

    def run(self, task: str, model: BenchModel) -> list[Score]:
        folder = self.task_dir(task)
        if not (folder / "task_metadata.json").is_file():
            raise MissingData(
                f"gsutil -u YOUR_GCP_PROJECT ls 'gs://hear2021-archive/tasks/*{task}*16000*' names the "
                f"task's 16 kHz archive (requester pays; https://hearbenchmark.com/hear-tasks.html): copy it "
                f"with gsutil -u YOUR_GCP_PROJECT cp and unpack it so that {folder}/task_metadata.json "
                "exists")
        embeddings = self.out / "hear" / "embeddings" / self.work_folder(model)
        call([sys.executable, "-m", "hear_module.run", "embeddings", *_module_args(model),
               "--tasks-dir", str(folder.parent), "--task", task, "--embeddings-dir", str(embeddings)],
              f"HEAR embeddings of {task}")
        (done,) = embeddings.glob(f"*/{task}")
        call([sys.executable, "-m", "hear_module.run", "predictions", str(done), "--grid", self.grid],
              f"HEAR predictions of {task}")
        metadata = json.loads((folder / "task_metadata.json").read_text())
        results = json.loads((done / "test.predicted-scores.json").read_text())
        return [_score(results, metadata["evaluation"][0])]


def _module_args(model: BenchModel) -> list[str]:
    if model.kind == "fbank":
        return ["maeast_suites.hear_fbank"]
    options = {k: v for k, v in model.options.items() if k != "model"}
    path, _ = resolve(model.source, progress=False)  # heareval takes a file path
    return ["hear_module", "--model", str(path), "--model-options", json.dumps(options, sort_keys=True)]


def _score(results: dict, metric: str) -> Score:
    name = f"test_{metric}"
    folds = [v[name] for k, v in results.items()
             if k != "aggregated_scores" and isinstance(v, dict) and name in v]
    if not folds:
        raise RuntimeError(f"hear-eval-kit's scores hold no {name}: {sorted(results)}")
    return Score(metric, sum(folds) / len(folds), folds if len(folds) > 1 else [])
