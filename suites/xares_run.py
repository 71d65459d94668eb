"""Run X-ARES's own runner (`xares.run.main`) with MAE-AST at chosen options.

X-ARES builds its encoder from a module path with no arguments and names its caches after the
encoder class, so each set of options gets a small generated module (`maeast_xares_<digest>.py`,
class `MaeAst<digest>Encoder`) under `<workdir>/env/maeast_encoders`. Audio in the task shards is
decoded by the core (`maeast_embed.audio`), not `torchaudio.load`, which needs TorchCodec and
system FFmpeg from torchaudio 2.9 on. webdataset's unseeded shuffles (X-ARES's training
pipelines), which seed themselves from the process id and the clock, draw their seed from torch's
generator instead, which X-ARES seeds per task: the MLP and kNN scores are the same run to run.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
from argparse import Namespace
from pathlib import Path
from typing import Any

AUDIO_EXTENSIONS = ("flac", "mp3", "sox", "wav", "m4a", "ogg", "wma")  # webdataset's torch_audio keys

ENCODER_MODULE = '''"""Written by `maeast-embed xares run`: MAE-AST at fixed options, for X-ARES's runner."""

from maeast_suites import xares_run as _run
from maeast_suites.xares import MaeAstEncoder as _Base

_run.install_shims()
OPTIONS = {options!r}


class {name}(_Base):
    def __init__(self):
        super().__init__(**OPTIONS)
'''


def decode_audio(key: str, data: bytes) -> tuple[Any, int] | None:
    """webdataset's `torch_audio` contract: (waveform [1, N], rate) for an audio key, else None."""
    from maeast_embed.audio import SAMPLE_RATE, EncodedAudio, load_audio

    extension = key.rpartition(".")[2].lower()
    if extension not in AUDIO_EXTENSIONS:
        return None
    return load_audio(EncodedAudio(f"member.{extension}", data))[None], SAMPLE_RATE


def _seeded(shuffle):
    """webdataset's `shuffle` filter, with a random.Random seeded from torch's generator where
    the caller gives neither `rng` nor `seed`."""

    def seeded_shuffle(*args, rng=None, seed=None, **kwargs):
        if rng is None and seed is None and len(args) <= 2:
            import torch

            rng = random.Random(int(torch.randint(2**62, ()).item()))
        return shuffle(*args, rng=rng, seed=seed, **kwargs)

    seeded_shuffle.unseeded = shuffle
    return seeded_shuffle


def install_shims() -> None:
    """Make X-ARES's audio pipelines (which look up `webdataset.torch_audio`) decode with the
    core, and its shuffles reproducible (see the module docstring). Idempotent."""
    import webdataset
    import webdataset.autodecode
    import webdataset.filters

    webdataset.torch_audio = webdataset.autodecode.torch_audio = decode_audio
    if not hasattr(webdataset.filters.shuffle, "unseeded"):
        webdataset.shuffle = webdataset.filters.shuffle = _seeded(webdataset.filters.shuffle)


def _digest(options: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:10]


def encoder_class_name(options: dict[str, Any]) -> str:
    """The generated encoder's class name, which X-ARES names its caches and scores after."""
    return f"MaeAst{_digest(options)}Encoder"


def encoder_module(folder: Path, options: dict[str, Any]) -> str:
    """Write the encoder module for `options` into `folder`; its path as X-ARES takes it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"maeast_xares_{_digest(options)}.py"
    source = ENCODER_MODULE.format(options=json.loads(json.dumps(options, sort_keys=True)),
                                   name=encoder_class_name(options))
    if not path.is_file() or path.read_text() != source:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(source)
        tmp.replace(path)
    return path.name


def task_path(spec: str) -> tuple[str, Path | None]:
    """A task name of X-ARES ('esc50' -> 'tasks/esc50_task.py') or a task file: (the path X-ARES
    imports, the folder to put on sys.path for it)."""
    path = Path(spec)
    if path.suffix == ".py" and path.is_file():
        return path.name, path.resolve().parent
    import tasks  # X-ARES's task modules: a namespace package installed with it

    name = spec if spec.endswith("_task") else f"{spec}_task"
    known = sorted({p.stem for folder in tasks.__path__ for p in Path(folder).glob("*_task.py")})
    if name not in known:
        from maeast_embed.errors import ConfigError

        names = ", ".join(k[: -len("_task")] for k in known)
        raise ConfigError(f"unknown X-ARES task {spec!r}; known: {names}, or a task file (.py)")
    return f"tasks/{name}.py", None


def run(tasks: list[str], options: dict[str, Any], *, workdir: Path, max_jobs: int = 0,
        from_stage: int = 0, to_stage: int = 2) -> list[str]:
    """X-ARES's stages (0 download, 1 encode, 2 MLP and kNN scores) for `tasks`, in `workdir`
    (its data and caches go to `workdir/env`, X-ARES's default root; the process moves there).
    Once per process, before anything else sets the multiprocessing start method (X-ARES sets
    it, and the call is refused once set). Returns the tasks' paths as X-ARES imports them."""
    from xares.run import main

    resolved = [task_path(spec) for spec in tasks]
    workdir = workdir.resolve()
    folders = [workdir / "env" / "maeast_encoders", *{f for _, f in resolved if f is not None}]
    encoder = encoder_module(folders[0], options)
    os.chdir(workdir)
    for folder in folders:
        sys.path.insert(0, str(folder))
    inherited = [os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []
    os.environ["PYTHONPATH"] = os.pathsep.join([*map(str, folders), *inherited])  # for spawned workers
    install_shims()
    tasks_py = [p for p, _ in resolved]
    main(Namespace(encoder_py=encoder, tasks_py=tasks_py, max_jobs=max_jobs, from_stage=from_stage,
                   to_stage=to_stage))
    return tasks_py
