"""The models of a bench run: an MAE-AST model (registered name, checkpoint file, Hub folder or
id), `random` (the same architecture with fresh weights: what pretraining adds) and `fbank` (no
encoder at all: what the encoder adds)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from maeast_embed.checkpoint import DEFAULT_MODEL, load_model, save_official
from maeast_embed.errors import ConfigError
from maeast_embed.model import MAEAST

from ..baselines import FBANK

RANDOM = re.compile(r"^random(?::(?P<base>[^@]+))?(?:@(?P<seed>\d+))?$")


@dataclass(frozen=True)
class BenchModel:
    """A column of the table: `label` names it; `options` are what every suite's wrapper takes
    (`model` plus the encoder options); `kind` is maeast, random or fbank."""

    label: str
    kind: str
    options: dict[str, Any] = field(hash=False)

    @property
    def source(self) -> str:
        return self.options["model"]


def random_init(base: str, seed: int, folder: Path, *, trust_checkpoint: bool = False) -> Path:
    """`base`'s architecture with weights drawn from its initialiser under `seed`, written once
    in the official layout to `folder`; the fbank normalisation is the base's (input statistics,
    not learned)."""
    trained = load_model(base, trust_checkpoint=trust_checkpoint, progress=False)
    stem = trained.checkpoint.name or Path(trained.checkpoint.path).stem
    path = folder / f"random-{stem}-seed{seed}.pt"
    if not path.is_file():
        with torch.random.fork_rng():  # the caller's random state is left as it was
            torch.manual_seed(seed)
            fresh = MAEAST(trained.cfg)
        fresh.batch_norm.load_state_dict(trained.batch_norm.state_dict())
        folder.mkdir(parents=True, exist_ok=True)
        save_official(fresh, path)
    return path


def parse_models(specs: list[str], encoder_options: dict[str, Any], folder: Path) -> list[BenchModel]:
    """`--model` values in order: names/files, `random[:BASE][@SEED]` (BASE: the first MAE-AST
    model given, else the packaged one; SEED 0) and `fbank`. Random weights go to `folder`."""
    if not specs:
        specs = [DEFAULT_MODEL]
    first = next((s for s in specs if s != FBANK and not RANDOM.match(s)), DEFAULT_MODEL)
    trust = bool(encoder_options.get("trust_checkpoint"))
    models, labels = [], set()
    for spec in specs:
        if spec == FBANK:
            model = BenchModel(FBANK, "fbank", {"model": FBANK})
        elif match := RANDOM.match(spec):
            base, seed = match["base"] or first, int(match["seed"] or 0)
            path = random_init(base, seed, folder, trust_checkpoint=trust)
            label = f"random({Path(base).stem if Path(base).suffix else base})" + (f"@{seed}" if seed else "")
            model = BenchModel(label, "random", {**encoder_options, "model": str(path)})
        else:
            label = Path(spec).stem if Path(spec).suffix in (".pt", ".ckpt", ".pth") else spec
            model = BenchModel(label, "maeast", {**encoder_options, "model": spec})
        if model.label in labels:
            raise ConfigError(f"two models are named {model.label!r} in the table; give each once")
        labels.add(model.label)
        models.append(model)
    return models
