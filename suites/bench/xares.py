"""X-ARES task by task in this process (its `XaresTask`: encode, then MLP and kNN), with the
encoder at the model's options; per-fold scores of k-fold tasks are read from X-ARES's log.
The encoded shards are reused (X-ARES marks them done once whole); its MLP checkpoints and score
files are not: a cell's own file says what is done, and a rerun (after a kill, or `--redo`)
trains and scores again."""

from __future__ import annotations

import importlib.util
import io
import json
import re
import tarfile
from contextlib import contextmanager
from pathlib import Path

import soundfile as sf

from ..xares_run import encoder_class_name, install_shims, task_path
from .cells import Score
from .models import BenchModel
from .suite import MissingData, Suite
from .toys import LABELS, SR, toy_clips

FOLD = re.compile(r"^Fold (\d+) .*: (\S+)$")
TOY_TASK = "toy_tones"
TOY_FILE = '''"""A two-class toy task in X-ARES's format, written by `maeast-embed bench`."""

from xares.task import TaskConfig

LABELS = {"low": 0, "high": 1}  # maeast_suites.bench.toys


def toy_tones_config(encoder):
    return TaskConfig(encoder=encoder, name="toy_tones", formal_name="Toy tones", output_dim=2, epochs=10,
                      batch_size_train=8, label_processor=lambda item: LABELS[item["label"]])
'''


class Xares(Suite):
    key = "xares"
    name = "X-ARES"
    needs = ("xares",)

    def __init__(self, out: Path, workdir: Path | None = None) -> None:
        super().__init__(out)
        self.workdir = (workdir or out / "xares").resolve()

    def presets(self) -> dict[str, list[str]]:
        import tasks  # X-ARES's task modules

        names = sorted({p.stem[: -len("_task")] for f in tasks.__path__ for p in Path(f).glob("*_task.py")})
        return {"toy": [TOY_TASK], "full": names}

    def accepts(self, task: str) -> bool:
        return task.endswith(".py") and Path(task).is_file() or task in self.known_set

    def toy_file(self) -> Path:
        return (self.out / "toy" / "xares" / f"{TOY_TASK}_task.py").resolve()

    def make_toy(self) -> None:
        data = self.workdir / "env" / TOY_TASK
        if not (data / ".audio_tar_ready").is_file():
            write_toy_shards(data)
            (data / ".audio_tar_ready").touch()
        self.toy_file().parent.mkdir(parents=True, exist_ok=True)
        self.toy_file().write_text(TOY_FILE)

    def run(self, task: str, model: BenchModel) -> list[Score]:
        from loguru import logger
        from xares.task import XaresTask

        from ..xares import FbankXares, MaeAstEncoder

        spec = str(self.toy_file()) if task == TOY_TASK else task
        relative, folder = task_path(spec)
        module = Path(folder or Path(__import__("tasks").__path__[0]).parent) / relative
        install_shims()
        base = FbankXares if model.kind == "fbank" else MaeAstEncoder
        options = {} if model.kind == "fbank" else model.options
        make_config = task_config(module)
        bare = make_config(None)  # the task's data checked before the model is loaded
        ready = self.workdir / "env" / bare.name / bare.xares_settings.audio_ready_filename
        if not bare.private and not ready.is_file():
            raise MissingData(f"maeast-embed xares run {task} --to-stage 0 --workdir {self.workdir}")
        encoder_type = type(encoder_class_name(model.options), (base,), {})
        config = make_config(encoder_type(**options))
        config.env_root = str(self.workdir / "env")
        config.force_retrain_mlp = True  # a killed run's best checkpoint is not a trained MLP
        try:
            xtask = XaresTask(config)
            for cached in ("mlp_score.txt", "knn_score.txt"):  # the cell, not X-ARES, says what is done
                (xtask.ckpt_dir / cached).unlink(missing_ok=True)
            xtask.make_encoded_tar()
            scores = []
            for kind, label in (("mlp", "MLP"), *((("knn", "kNN"),) if config.do_knn else ())):
                with _fold_lines(logger) as lines:
                    value, _ = xtask.run_mlp() if kind == "mlp" else xtask.run_knn()
                folds = [float(m[2]) for m in map(FOLD.match, lines) if m]
                scores.append(Score(f"{label} {config.metric}", float(value), folds))
            return scores
        finally:
            logger.remove()  # X-ARES's handler writes to this cell's log, closed after the cell


@contextmanager
def _fold_lines(logger):
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(message.record["message"]), level="INFO")
    try:
        yield lines
    finally:
        logger.remove(sink)


def write_toy_shards(folder: Path) -> None:
    """The toy clips (`toys.toy_clips`) as X-ARES's train/valid/test WebDataset shards of wav + json."""
    folder.mkdir(parents=True, exist_ok=True)
    for seed, (split, count) in enumerate((("train", 48), ("valid", 16), ("test", 32))):
        with tarfile.open(folder / f"{split}-000000.tar", "w") as tar:
            for i, (wave, label) in enumerate(toy_clips(count, seed)):
                audio = io.BytesIO()
                sf.write(audio, wave, SR, format="WAV", subtype="FLOAT")
                stem = f"{split}{i:04d}"
                label_json = json.dumps({"label": LABELS[label]}).encode()
                for name, payload in ((f"{stem}.wav", audio.getvalue()), (f"{stem}.json", label_json)):
                    info = tarfile.TarInfo(name)
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))


def task_config(module: Path):
    """The `..._config` function of an X-ARES task file, imported from its path."""
    spec = importlib.util.spec_from_file_location(f"maeast_bench_xares_{module.stem}", module)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    found = [name for name in dir(loaded) if name.endswith("_config")]
    if len(found) != 1:
        raise ValueError(f"{module} defines {len(found)} functions named ..._config, X-ARES needs one")
    return getattr(loaded, found[0])
