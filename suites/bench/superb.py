"""SUPERB through s3prl's own `run_downstream` (the launcher `maeast_upstream.run_downstream`):
train the task's downstream on the frozen upstream (`-u mae_ast -k CKPT`; the fbank baseline is
s3prl's own `-u fbank`), then evaluate its best dev checkpoint; the score is the printed test
accuracy, ER averaged over IEMOCAP's five sessions (the SUPERB protocol)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import torch

from maeast_embed.checkpoint import resolve

from .cells import Score
from .models import BenchModel
from .suite import MissingData, Suite, call

TEST_ACC = re.compile(r"^test acc: ([0-9.]+)$", re.M)
S3PRL_INSTALL = 'pip install -c constraints.txt -e ".[s3prl]"'
ER_FOLDS = [f"fold{k}" for k in range(1, 6)]
DATA = {  # task -> (datarc key -> path under --superb-data), how to fetch it
    "speech_commands": (
        {"speech_commands_root": "speech_commands_v0.01",
         "speech_commands_test_root": "speech_commands_test_set_v0.01"},
        "for f in speech_commands_v0.01 speech_commands_test_set_v0.01; do mkdir -p {data}/$f && "
        "curl -L http://download.tensorflow.org/data/$f.tar.gz | tar -xz -C {data}/$f; done"),
    "voxceleb1": (
        {"file_path": "VoxCeleb1", "meta_data": "iden_split.txt"},
        "VoxCeleb1 (request access: https://www.robots.ox.ac.uk/~vgg/data/voxceleb/) unpacked to "
        "{data}/VoxCeleb1, and curl -L -o {data}/iden_split.txt "
        "https://www.robots.ox.ac.uk/~vgg/data/voxceleb/meta/iden_split.txt"),
    "emotion": (
        {"root": "IEMOCAP_full_release", "meta_data": "meta_data"},
        "IEMOCAP (request access: https://sail.usc.edu/iemocap/) unpacked to {data}/IEMOCAP_full_release, "
        "then s3prl's downstream/emotion/IEMOCAP_preprocess.py writing {data}/meta_data"),
}


class Superb(Suite):
    key = "superb"
    name = "SUPERB"
    needs = ("s3prl",)
    install = S3PRL_INSTALL

    def __init__(self, out: Path, data: Path | None = None, steps: int | None = None,
                 overrides: tuple[str, ...] = ()) -> None:
        super().__init__(out)
        self.data = (data or out / "superb" / "data").resolve()
        self.steps = steps
        self.overrides = list(overrides)

    def presets(self) -> dict[str, list[str]]:
        return {"toy": [], "full": list(DATA)}

    def settings(self) -> dict[str, Any]:
        return {"steps": self.steps, "overrides": list(self.overrides)}

    def run(self, task: str, model: BenchModel) -> list[Score]:
        keys, fetch = DATA[task]
        paths = {key: self.data / name for key, name in keys.items()}
        if not all(p.exists() for p in paths.values()):
            raise MissingData(fetch.format(data=self.data))
        folds = ER_FOLDS if task == "emotion" else [None]
        values = [self.train_and_test(task, model, paths, fold) for fold in folds]
        return [Score("accuracy", sum(values) / len(values), values if len(values) > 1 else [])]

    def train_and_test(self, task: str, model: BenchModel, paths: dict[str, Path], fold: str | None) -> float:
        exp = self.out / "superb" / "exp" / self.work_folder(model) / (task + (f"-{fold}" if fold else ""))
        overrides = [f"config.downstream_expert.datarc.{key}={path}" for key, path in paths.items()]
        if fold:
            overrides.append(f"config.downstream_expert.datarc.test_fold={fold}")
        if self.steps:
            steps = ("total_steps", "eval_step", "save_step")
            overrides += [f"config.runner.{name}={self.steps}" for name in steps]
        overrides += self.overrides
        config = Path(__import__("maeast_upstream").__file__).parent / "configs" / task / "config.yaml"
        device = ["--device", "cuda" if torch.cuda.is_available() else "cpu"]
        launcher = [sys.executable, "-m", "maeast_upstream.run_downstream"]
        call([*launcher, "-m", "train", "-a", "-p", str(exp), *_upstream(model), "-d", task,
              "-c", str(config), "-o", ",,".join(overrides), *device], f"SUPERB {task} training")
        best = exp / "dev-best.ckpt"
        if not best.is_file():
            best = max(exp.glob("states-*.ckpt"), key=lambda p: int(p.stem.split("-")[1]))
        output = call([*launcher, "-m", "evaluate", "-e", str(best), *device], f"SUPERB {task} test")
        found = TEST_ACC.findall(output)
        if not found:
            raise RuntimeError(f"s3prl printed no test accuracy for {task}:\n{output[-2000:]}")
        return float(found[-1])


def _upstream(model: BenchModel) -> list[str]:
    if model.kind == "fbank":
        return ["-u", "fbank"]  # s3prl's own baseline
    path, _ = resolve(model.source, progress=False)
    return ["-u", "mae_ast", "-k", str(path)]
