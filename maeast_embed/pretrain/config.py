"""Typed training configuration: preset (or `init` checkpoint) -> YAML/JSON file -> `key=value`
overrides.

Model fields live under `model.` (e.g. `model.encoder_layers=4`); everything else is flat.
Unknown keys and incompatible values raise `ConfigError` before any training starts, naming the
setting (a checkpoint's mask type this port cannot sample, a decoder it cannot build, ...).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..atomic import atomic_open
from ..config import ModelConfig, preset
from ..errors import ConfigError

MODES = ("mae", "ssast")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class TrainConfig:
    """Everything a pretraining run needs; defaults are the official recipe (REFERENCE.md s. 3-5)."""

    data: list[str] = field(default_factory=list)
    preset: str = "patch"
    model: ModelConfig = field(default_factory=lambda: preset("patch"))
    init: str | None = None  # official-layout checkpoint to start from: its architecture and weights
    mode: str = "mae"
    # optimisation (fairseq adam with decoupled weight decay, polynomial decay power 1)
    batch_size: int = 8
    accum_steps: int = 1
    max_steps: int = 400_000
    warmup_steps: int = 32_000
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    weight_decay: float = 0.01
    clip_norm: float = 10.0
    reconstruction_weight: float = 10.0
    classification_weight: float = 1.0
    # data
    min_seconds: float = 2.0
    max_seconds: float | None = None
    num_workers: int = 2
    seed: int = 1
    # engineering
    device: str = "auto"
    precision: str = "auto"
    activation_checkpointing: bool = False
    compile: bool = False
    save_every: int = 1000
    keep_last: int = 3
    log_every: int = 10
    tensorboard: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):  # overrides of the init checkpoint's config or the preset
            self.model = _model_from(self.model, self.init, self.preset)
        self.betas = tuple(float(b) for b in self.betas)
        self.validate()

    def validate(self) -> None:
        checks = [
            (self.mode in MODES, f"mode must be one of {MODES}, got {self.mode!r}"),
            (self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}, got {self.precision!r}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.accum_steps >= 1, f"accum_steps must be >= 1, got {self.accum_steps}"),
            (self.max_steps >= 1, f"max_steps must be >= 1, got {self.max_steps}"),
            (0 <= self.warmup_steps, f"warmup_steps must be >= 0, got {self.warmup_steps}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"bad betas {self.betas}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.clip_norm >= 0, f"clip_norm must be >= 0 (0 = off), got {self.clip_norm}"),
            (self.min_seconds > 0, f"min_seconds must be > 0, got {self.min_seconds}"),
            (self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}"),
            (self.save_every >= 1 and self.log_every >= 1, "save_every and log_every must be >= 1"),
            (self.keep_last >= 1, f"keep_last must be >= 1, got {self.keep_last}"),
            (
                self.reconstruction_weight > 0 or self.classification_weight > 0,
                "at least one of reconstruction_weight/classification_weight must be > 0",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        if issues := self.model.pretraining_issues():
            where = f"from {self.init}" if self.init else "with this config"
            raise ConfigError(f"cannot pretrain {where}: " + "; ".join(issues))
        if self.max_seconds is not None and self.max_seconds < self.min_seconds:
            raise ConfigError(f"max_seconds={self.max_seconds} is below min_seconds={self.min_seconds}")
        from ..frontend import min_samples_for_tokens

        if self.min_seconds * 16000 < min_samples_for_tokens(self.model.kernel_time, 2):
            raise ConfigError(
                f"min_seconds={self.min_seconds} gives fewer than two token steps for "
                f"kernel_time={self.model.kernel_time}"
            )

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        out["model"] = model_settings(self.model)
        return out

    def save(self, path: Path) -> None:
        with atomic_open(path, "w") as handle:  # a full disk: an OutputError naming the file
            handle.write(yaml.safe_dump(self.to_dict(), sort_keys=False))


_TRAIN_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_MODEL_FIELDS = {f.name: f for f in dataclasses.fields(ModelConfig) if f.name != "official"}
# What a run started from a checkpoint keeps from it (the weights must fit).
ARCHITECTURE = ("kernel_time", "kernel_chan", "num_mel_bins", "encoder_layers", "embed_dim", "ffn_dim",
                "num_heads", "decoder_layers", "max_token_length")


def model_settings(model: ModelConfig) -> dict[str, Any]:
    """The user-settable model fields (`official`, a checkpoint's cfg, is read from `init` again)."""
    return {k: getattr(model, k) for k in _MODEL_FIELDS}


def init_model_config(source: str) -> ModelConfig:
    """The model config of the checkpoint a run starts from; it must hold the decoder and heads."""
    from ..checkpoint import checkpoint_config, read_checkpoint, resolve

    path, _ = resolve(source)
    config, full = checkpoint_config(read_checkpoint(path), source=str(path))
    if not full:
        raise ConfigError(
            f"cannot pretrain from {source}: it holds no decoder and heads this port can build "
            "(an encoder-only file, or a decoder built differently), so it serves inference only"
        )
    return config


def _unknown(key: str, known) -> ConfigError:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}; valid keys: {', '.join(sorted(known))}")


def _model_from(overrides: dict[str, Any], init: str | None, preset_name: str) -> ModelConfig:
    """`model.*` overrides on the init checkpoint's config (architecture fixed) or the preset."""
    for key in overrides:
        if key not in _MODEL_FIELDS:
            raise _unknown(f"model.{key}", [f"model.{k}" for k in _MODEL_FIELDS])
    typed = {k: _coerce(f"model.{k}", v, _MODEL_FIELDS[k].type) for k, v in overrides.items()}
    if init is None:
        try:
            return preset(preset_name, **typed)
        except TypeError as err:
            raise ConfigError(f"bad model config: {err}") from err
    base = init_model_config(init)
    for key in ARCHITECTURE:
        if key in typed and typed[key] != getattr(base, key):
            raise ConfigError(
                f"model.{key}={typed[key]}: a run started from {init} keeps its architecture "
                f"({key}={getattr(base, key)})"
            )
    return base.replace(**typed)


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Convert a YAML/CLI value to the field's declared type (annotations are strings here)."""
    text = str(annotation)
    if isinstance(value, str) and "str" not in text.split("|")[0]:
        value = yaml.safe_load(value) if value.strip() else None
    if value is None:
        if "None" in text:
            return None
        raise ConfigError(f"{key} cannot be empty")
    try:
        if text.startswith("bool"):
            if not isinstance(value, bool):
                raise ValueError
            return value
        if text.startswith("int"):
            if isinstance(value, bool) or float(value) != int(value):
                raise ValueError
            return int(value)
        if text.startswith("float"):
            return float(value)
        if text.startswith("tuple"):
            return tuple(float(v) for v in value)
        if text.startswith("list"):
            return [str(v) for v in (value if isinstance(value, list) else [value])]
        if text.startswith("str"):
            return str(value)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{key}={value!r} is not a valid {text}") from err
    raise ConfigError(f"{key}: unsupported type {text}")


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """['a=1', 'model.b=2'] -> {'a': '1', 'model.b': '2'}."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key=value")
        out[key.strip()] = value
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot parse config file {path}: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def _flatten(data: dict[str, Any]) -> dict[str, Any]:
    flat = {}
    for key, value in data.items():
        if key == "model" and isinstance(value, (dict, ModelConfig)):
            items = model_settings(value).items() if isinstance(value, ModelConfig) else value.items()
            flat.update({f"model.{k}": v for k, v in items})
        else:
            flat[key] = value
    return flat


def build_config(
    base: dict[str, Any] | None = None,
    file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> TrainConfig:
    """Merge (later wins) base settings, a YAML/JSON file, then overrides; validate everything."""
    merged: dict[str, Any] = {}
    for layer in (base or {}, read_config_file(file) if file else {}, overrides or {}):
        merged.update(_flatten(layer))
    train: dict[str, Any] = {}
    model: dict[str, Any] = {}
    for key, value in merged.items():
        if key.startswith("model."):
            model[key[len("model."):]] = value
        elif key in _TRAIN_FIELDS and key != "model":
            train[key] = _coerce(key, value, _TRAIN_FIELDS[key].type)
        else:
            raise _unknown(key, [k for k in _TRAIN_FIELDS if k != "model"] + ["model.<field>"])
    return TrainConfig(**train, model=model)
