"""Hugging Face Hub folders: what they hold, how they are read back, and `org/name` model names.

A folder holds `model.safetensors` (the checkpoint's tensors, position tables excluded: they
are recomputed) and `config.json` (the typed config, frontend settings, normalisation, the
official cfg verbatim, the weights' sha256). Reading never runs code (safetensors), and a folder
whose parts disagree is refused naming what. `huggingface_hub` and `safetensors` are imported
only when a folder or a Hub name is used.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from .digest import sha256_file
from .errors import CheckpointError

FORMAT = "maeast-embed/hub/1"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
CARD = "README.md"
HUB_FILES = (WEIGHTS, CONFIG, CARD)
# The frontend the model was trained with; a folder saying anything else is refused.
FRONTEND = {
    "sample_rate": 16000, "features": "kaldi_fbank", "num_mel_bins": 128, "frame_length_ms": 25.0,
    "frame_shift_ms": 10.0, "window": "povey", "preemphasis": 0.97, "dither": 0.0,
    "remove_dc_offset": True, "low_freq": 20.0, "high_freq": 8000.0, "snip_edges": True,
    "use_energy": False, "log_floor": "float32 eps", "n_fft": 512,
}
NORMALISATION_KEYS = ("batch_norm.running_mean", "batch_norm.running_var")
INSTALL = "pip install 'maeast-embed[hub]'"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")
_NAME = re.compile(r"^(?:hf://)?([A-Za-z0-9][\w.-]*/[\w.-]+)(?:@([\w./-]+))?$")


def parse_hub_name(text: str) -> tuple[str, str | None] | None:
    """(repo_id, revision) for `org/name`, `org/name@rev` or `hf://org/name[@rev]`, else None."""
    match = _NAME.match(text)
    if match is None or (not text.startswith("hf://") and text.endswith(CHECKPOINT_SUFFIXES)):
        return None  # a missing local file, not a Hub name
    return match.group(1), match.group(2)


def download(repo_id: str, revision: str | None) -> Path:
    """The snapshot folder of a Hub model (downloaded once into the huggingface_hub cache, which
    honours HF_HUB_CACHE, HF_HUB_OFFLINE, HF_TOKEN and HF_ENDPOINT)."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError as err:
        raise CheckpointError(
            f"loading {repo_id!r} from the Hugging Face Hub needs huggingface_hub: {INSTALL}"
        ) from err
    label = repo_id + (f"@{revision}" if revision else "")
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=list(HUB_FILES)))
    except LocalEntryNotFoundError as err:
        from huggingface_hub.constants import HF_HUB_CACHE, HF_HUB_OFFLINE

        why = "HF_HUB_OFFLINE is set" if HF_HUB_OFFLINE else "the Hub cannot be reached"
        raise CheckpointError(
            f"{label} is not in the Hugging Face cache ({HF_HUB_CACHE}) and {why}: fetch it on a "
            f"connected machine with `hf download {repo_id}"
            f"{f' --revision {revision}' if revision else ''}` (and copy the cache over), or pass "
            "the path of a downloaded folder"
        ) from err
    except (RepositoryNotFoundError, RevisionNotFoundError) as err:
        raise CheckpointError(
            f"{label}: no such model repository or revision on the Hub (or it is private: log in "
            f"with `hf auth login` or set HF_TOKEN): {str(err).splitlines()[0]}"
        ) from err
    except OSError as err:  # network and HTTP errors
        raise CheckpointError(f"could not download {label} from the Hugging Face Hub: {err}") from err


def is_hub_folder(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG).is_file()


def read_folder(folder: Path) -> tuple[dict[str, Any], dict[str, Any], bool, str]:
    """A Hub folder's official cfg, weights (no position tables), whether they hold the decoder,
    and the weights' sha256.

    Refuses, naming what, a folder whose config.json is not this format, whose frontend or
    normalisation differs from what the weights compute with, whose typed config disagrees with
    its official cfg, or whose weights file is missing or not the one config.json names.
    """
    from .config import ModelConfig

    config = _read_json(folder / CONFIG)
    if config.get("format") != FORMAT:
        raise CheckpointError(
            f"{folder / CONFIG} is not a maeast-embed Hub folder config (format "
            f"{config.get('format')!r}, expected {FORMAT!r})"
        )
    for key in ("official_cfg", "config", "frontend", "normalisation", "weights", "with_decoder"):
        if key not in config:
            raise CheckpointError(f"{folder / CONFIG} lacks {key!r}")
        if key != "with_decoder" and not isinstance(config[key], dict):
            raise CheckpointError(f"{folder / CONFIG}: {key!r} is not a JSON object")
    if config["frontend"] != FRONTEND:
        diff = sorted(k for k in {*FRONTEND, *config["frontend"]}
                      if config["frontend"].get(k, ...) != FRONTEND.get(k, ...))
        raise CheckpointError(
            f"{folder / CONFIG}: frontend settings {diff} differ from the Kaldi fbank this port "
            f"computes ({', '.join(f'{k}={FRONTEND.get(k)!r}' for k in diff)}): the embeddings would change"
        )
    try:
        typed = ModelConfig.from_official(config["official_cfg"], source=str(folder))
    except Exception as err:  # ConfigError, or a malformed cfg
        raise CheckpointError(f"{folder / CONFIG}: official_cfg is not a usable MAE-AST cfg ({err})") from err
    expected = config_fields(typed)
    if config["config"] != expected:
        said = config["config"]
        diff = sorted(k for k in {*expected, *said} if said.get(k, ...) != expected.get(k, ...))
        raise CheckpointError(
            f"{folder / CONFIG}: config entries {diff} disagree with official_cfg "
            f"({', '.join(f'{k}: {said.get(k)!r} vs {expected.get(k)!r}' for k in diff)})"
        )
    weights_path = folder / WEIGHTS
    if not weights_path.is_file():
        raise CheckpointError(f"{folder} has no {WEIGHTS}")
    digest = sha256_file(weights_path)
    if digest != config["weights"].get("sha256"):
        raise CheckpointError(
            f"{weights_path} has sha256 {digest}, but {CONFIG} names {config['weights'].get('sha256')}: "
            "the weights are not the ones this config describes (damaged or replaced)"
        )
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError as err:
        raise CheckpointError(f"reading the Hub folder {folder} needs safetensors: {INSTALL}") from err
    try:
        weights = load_file(weights_path)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{weights_path} is not a readable safetensors file ({err})") from err
    _check_normalisation(weights, config["normalisation"], folder / CONFIG)
    return config["official_cfg"], weights, bool(config["with_decoder"]), digest


def config_fields(cfg: Any) -> dict[str, Any]:
    """The typed config's fields as JSON values (`official` left out: it is `official_cfg`)."""
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "official"}


def normalisation(weights: dict[str, Any]) -> dict[str, float]:
    """The frontend normalisation `0.5 * (x - mean) / sqrt(var + eps)` the weights hold."""
    from .frontend import NORM_EPS

    mean, var = (float(weights[k].reshape(-1)[0]) for k in NORMALISATION_KEYS)
    return {"mean": mean, "var": var, "eps": NORM_EPS, "scale": 0.5}


def _check_normalisation(weights: dict[str, Any], said: Any, where: Path) -> None:
    missing = [k for k in NORMALISATION_KEYS if k not in weights]
    if missing:
        raise CheckpointError(f"{where.parent / WEIGHTS} lacks {missing}")
    actual = normalisation(weights)
    if not isinstance(said, dict) or said != actual:
        raise CheckpointError(
            f"{where}: normalisation {said!r} differs from the one the weights hold {actual!r}"
        )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"cannot read {path}: {err}") from err
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} is not a JSON object")
    return value
