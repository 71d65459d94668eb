"""Checkpoints: safe loading, the official fairseq layout in and out, named models and a cache."""

from __future__ import annotations

import argparse
import os
import pickle
import urllib.error
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import defaults
from .atomic import atomic_open
from .config import ModelConfig
from .digest import sha256_file
from .errors import CheckpointError, ConfigError
from .model import MAEAST, sinusoid_table

OFFICIAL_URL = "https://www.cs.utexas.edu/~harwath/model_checkpoints/mae_ast/"
REGISTRY: dict[str, str] = {
    "mae-ast-patch": OFFICIAL_URL + "chunk_patch_75_12LayerEncoder.pt",
    "mae-ast-frame": OFFICIAL_URL + "random_frame_75_12LayerEncoder.pt",
}
POSITION_KEYS = ("enc_sine_pos_embed.pe", "dec_sine_pos_embed.pe")
DECODER_PREFIXES = ("decoder", "dec_", "final_proj", "post_enc_proj")  # weights only pretraining uses
ENCODER_ONLY_FORMAT = "maeast-embed/encoder-only/1"


@dataclass(frozen=True)
class PackagedModel:
    """A model file shipped inside the package, with the sha256 it must have."""

    path: Path
    sha256: str


PACKAGED: dict[str, PackagedModel] = {
    "maeast-small": PackagedModel(
        Path(__file__).parent / "models" / "maeast-small.pt",
        "1f7f453b502db1fc9e559418a13582f42aeefa3486c98623098a6fa1827113bb",
    ),
}
DEFAULT_MODEL = defaults.DEFAULT_MODEL


def _safe_extra_globals() -> list:
    """Plain data types fairseq trainer states hold (an `args` Namespace, numpy scalars in the
    metrics), allowed on top of torch's weights_only set: none of them can run code."""
    import numpy as np

    scalar = (np._core if hasattr(np, "_core") else np.core).multiarray.scalar
    numeric = [np.float64, np.float32, np.float16, np.int64, np.int32, np.bool_]
    return [argparse.Namespace, scalar, np.dtype, *(type(np.dtype(t)) for t in numeric)]


@dataclass(frozen=True)
class CheckpointInfo:
    """Where a model came from: the file, its sha256, and the registered name if any."""

    path: str
    sha256: str
    name: str | None = None


def cache_dir() -> Path:
    return Path(os.environ.get("MAEAST_CACHE", Path.home() / ".cache" / "maeast_embed"))


def read_checkpoint(path: str | os.PathLike, *, trust: bool = False) -> dict[str, Any]:
    """torch.load with weights_only=True; arbitrary unpickling only when `trust` is set."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint is empty: {path}")
    mmap = zipfile.is_zipfile(path)  # memory-map modern files: tensors are read on demand
    try:
        if trust:
            state = torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
        else:
            with torch.serialization.safe_globals(_safe_extra_globals()):
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        if trust:
            raise CheckpointError(f"cannot unpickle {path}: {err}") from err
        raise CheckpointError(
            f"{path} holds objects that need arbitrary unpickling, which can run code. "
            "Load it only if you trust its source: pass trust=True (CLI: --trust-checkpoint)."
            f" Detail: {str(err).splitlines()[0]}"
        ) from err
    except Exception as err:  # the unpickler reports damage as many exception types
        raise CheckpointError(
            f"{path} is truncated or not a PyTorch checkpoint ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not an MAE-AST checkpoint (top level is {type(state).__name__})")
    return state


def checkpoint_config(state: dict[str, Any], *, source: str = "checkpoint") -> tuple[ModelConfig, bool]:
    """The model config of an official-layout dict {'cfg': {'model', 'task'}, 'model': state_dict}
    (or an encoder-only file written by `save_encoder_only`), and whether its decoder is usable.

    Settings only pretraining uses never stop loading; a decoder this port cannot build (e.g.
    convolutional decoder positions) makes the file load as its encoder only, with a warning.
    """
    if "cfg" not in state or "model" not in state:
        raise CheckpointError(
            f"{source} is not an MAE-AST checkpoint: expected the fairseq layout with 'cfg' and "
            f"'model' entries, found keys {sorted(state)[:8]}"
        )
    cfg = state["cfg"]
    if not isinstance(cfg, dict):  # e.g. an omegaconf DictConfig in a trusted legacy file
        cfg = {key: dict(cfg[key]) for key in ("model", "task")}
    try:
        config = ModelConfig.from_official(cfg, source=source)
    except ConfigError as err:
        raise CheckpointError(f"{source}: {err}") from err
    if (state.get("maeast_embed") or {}).get("format") == ENCODER_ONLY_FORMAT:
        return config, False
    if issue := config.decoder_issue():
        warnings.warn(f"{source}: {issue}: this port cannot build that decoder; loading the encoder only "
                      "(inference)", stacklevel=3)
        return config, False
    return config, True


def model_from_checkpoint(
    state: dict[str, Any], *, source: str = "checkpoint", positions: bool = True
) -> MAEAST:
    """Build an MAEAST from an official-layout dict (see `checkpoint_config`). `positions=False`:
    the weights carry no position tables (a Hub folder's; they are recomputed)."""
    config, with_decoder = checkpoint_config(state, source=source)
    model = MAEAST(config, with_decoder=with_decoder)
    weights = dict(state["model"])
    if not with_decoder:
        weights = {k: v for k, v in weights.items() if not k.startswith(DECODER_PREFIXES)}
    for key in POSITION_KEYS:
        table = weights.pop(key, None)
        if (with_decoder and positions) or table is not None:
            _check_position_table(table, config, key, source)
    expected = set(model.state_dict())
    missing, unexpected = expected - set(weights), set(weights) - expected
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not match the MAE-AST layout for {config.variant} with "
            f"{config.encoder_layers} layers: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    try:
        model.load_state_dict(weights, strict=True)  # copies (and upcasts fp16) into float32
    except RuntimeError as err:
        raise CheckpointError(f"{source}: tensor shapes do not match its cfg ({err})") from err
    return model


def _check_position_table(table: Any, config: ModelConfig, key: str, source: str) -> None:
    if table is None:
        raise CheckpointError(f"{source} lacks {key}: not an MAE-AST checkpoint with sine positions")
    table = table.reshape(-1, config.embed_dim)
    rows = min(table.shape[0], 4096)
    reference = sinusoid_table(rows, config.embed_dim)
    if not torch.allclose(table[:rows].float(), reference, atol=1e-4):
        raise CheckpointError(f"{source}: {key} is not the standard sinusoidal table")


def to_official_state(model: MAEAST, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The official fairseq layout, position tables included (s3prl loads it strictly)."""
    if not model.has_decoder:
        raise CheckpointError("an encoder-only model cannot be written in the official layout (no decoder)")
    cfg = model.cfg
    weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    table = sinusoid_table(cfg.max_token_length, cfg.embed_dim).unsqueeze(0)
    for key in POSITION_KEYS:
        weights[key] = table
    return {"cfg": cfg.to_official(), "model": weights, **(extra or {})}


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save through `atomic_open`: a reader never sees a partial file, and a failed write
    (a full disk) is an OutputError naming `path`, not torch's "unexpected pos" RuntimeError."""
    with atomic_open(path) as handle:
        sink = _WriteErrors(handle)
        try:
            torch.save(obj, sink)
        except RuntimeError:
            if sink.error is not None:  # torch's writer hides the OSError of the file underneath
                raise sink.error from None
            raise


class _WriteErrors:
    """A file's write/flush/tell, remembering the OSError a write raised."""

    def __init__(self, handle: Any) -> None:
        self.handle, self.error = handle, None

    def write(self, data: Any) -> int:
        try:
            return self.handle.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.handle.flush()

    def tell(self) -> int:
        return self.handle.tell()


def save_official(model: MAEAST, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> None:
    """Save in the official layout, loadable by `load_model` and s3prl's `mae_ast_local`."""
    atomic_torch_save(to_official_state(model, extra), path)


def save_encoder_only(
    model: MAEAST, path: str | os.PathLike, *, half: bool = True, extra: dict[str, Any] | None = None
) -> None:
    """The encoder side only, matrices in float16 when `half` (vectors stay float32), no position
    tables: the compact inference file format of packaged models. `extra` goes under 'maeast_embed'."""
    weights = {}
    for key, value in model.state_dict().items():
        if key.startswith(("decoder", "dec_sine", "final_proj")):
            continue
        value = value.detach().cpu().clone()
        weights[key] = value.half() if half and value.is_floating_point() and value.dim() >= 2 else value
    meta = {**(extra or {}), "format": ENCODER_ONLY_FORMAT}
    atomic_torch_save({"cfg": model.cfg.to_official(), "model": weights, "maeast_embed": meta}, path)


def _packaged(name: str) -> Path:
    """The packaged file of `name`, after checking it is present and undamaged."""
    entry = PACKAGED[name]
    if not entry.path.is_file():
        raise CheckpointError(
            f"the packaged model {name!r} is missing ({entry.path}): this install lacks its package "
            "data; reinstall maeast-embed"
        )
    digest = sha256_file(entry.path)
    if digest != entry.sha256:
        raise CheckpointError(
            f"the packaged model {name!r} is damaged: {entry.path} has sha256 {digest}, expected "
            f"{entry.sha256}; reinstall maeast-embed"
        )
    return entry.path


def download(url: str, dest: Path, *, progress: bool = True) -> Path:
    """Download `url` to `dest` once (temporary file, then atomic rename)."""
    from tqdm.auto import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, atomic_open(dest, suffix=".part") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                while block := response.read(1 << 20):
                    out.write(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        raise CheckpointError(
            f"could not download {url} ({err}). If this machine is offline, download the file "
            "elsewhere and pass its local path instead of the name (e.g. --model /path/to/file.pt)"
            f", or put it at {dest}"
        ) from err
    return dest


def resolve(source: str | os.PathLike, *, progress: bool = True) -> tuple[Path, str | None]:
    """A local path for `source`: a file or Hub folder path, a packaged model (sha256-checked),
    an official name (downloaded once), or a Hugging Face Hub name `org/name[@revision]` or
    `hf://org/name` (a folder in huggingface_hub's cache)."""
    from . import hub

    text = str(source)
    if text in PACKAGED:
        return _packaged(text), text
    if text in REGISTRY:
        url = REGISTRY[text]
        dest = cache_dir() / url.rsplit("/", 1)[-1]
        return (dest if dest.is_file() else download(url, dest, progress=progress)), text
    path = Path(text).expanduser()
    if path.exists() and not text.startswith("hf://"):
        if path.is_dir() and not hub.is_hub_folder(path):
            raise CheckpointError(f"{path} is a folder without {hub.CONFIG}: not a maeast-embed Hub folder")
        return path, None
    if (name := hub.parse_hub_name(text)) is not None:
        return hub.download(*name), text
    raise CheckpointError(
        f"no checkpoint file {text!r} and no registered model of that name "
        f"(registered: {', '.join(sorted([*PACKAGED, *REGISTRY]))}; Hub models: org/name[@revision])"
    )


def read_hub_folder(folder: Path) -> tuple[dict[str, Any], str]:
    """A Hub folder (see `maeast_embed.hub`) as an official-layout dict without position tables,
    and its weights' sha256."""
    from .hub import read_folder

    cfg, weights, with_decoder, digest = read_folder(folder)
    state: dict[str, Any] = {"cfg": cfg, "model": weights}
    if not with_decoder:
        state["maeast_embed"] = {"format": ENCODER_ONLY_FORMAT}
    return state, digest


def load_model(
    source: str | os.PathLike,
    *,
    trust_checkpoint: bool = False,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> MAEAST:
    """Load an MAE-AST model in eval mode from a file, a Hub folder, a registered name or a
    Hugging Face Hub name (see `resolve`).

    The returned model carries `.checkpoint` (a `CheckpointInfo`) for provenance records.
    """
    path, name = resolve(source, progress=progress)
    if path.is_dir():  # a Hub folder: safetensors, never unpickled
        state, digest = read_hub_folder(path)
        model = model_from_checkpoint(state, source=str(path), positions=False)
    else:
        model = model_from_checkpoint(read_checkpoint(path, trust=trust_checkpoint), source=str(path))
        packaged = name in PACKAGED  # its sha256 was checked by resolve
        digest = PACKAGED[name].sha256 if packaged else sha256_file(path)
    model.checkpoint = CheckpointInfo(path=str(path), sha256=digest, name=name)
    return model.to(device).eval()
