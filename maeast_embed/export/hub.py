"""Write a model as a Hugging Face Hub folder: model.safetensors, config.json, README.md.

The folder loads back bit-identically (`load_model(folder)`) and can be pushed as a model
repository (`hf upload org/name FOLDER`); see `maeast_embed.hub` for the format.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from .. import __version__
from ..atomic import atomic_open
from ..checkpoint import (
    PACKAGED,
    model_from_checkpoint,
    read_checkpoint,
    read_hub_folder,
    resolve,
    sha256_file,
)
from ..errors import CheckpointError
from ..hub import CARD, CONFIG, FORMAT, FRONTEND, INSTALL, WEIGHTS, config_fields, normalisation
from ..model import MAEAST

LICENCES = {"maeast-small": "cc-by-4.0"}  # Hub licence identifiers of the models we know


def export_hub(
    source: str | os.PathLike, out_dir: str | os.PathLike, *, trust_checkpoint: bool = False
) -> Path:
    """Write `source` (a file, folder or model name) as a Hub folder `out_dir`; returns it.

    The weights keep the dtypes of the file (float16 matrices of a packaged model stay float16),
    position tables are left out (recomputed), and the decoder is kept when the file has one.
    """
    path, name = resolve(source)
    if path.is_dir():
        state, source_digest = read_hub_folder(path)
        model = model_from_checkpoint(state, source=str(path), positions=False)
    else:
        state = read_checkpoint(path, trust=trust_checkpoint)
        model = model_from_checkpoint(state, source=str(path))
        source_digest = PACKAGED[name].sha256 if name in PACKAGED else sha256_file(path)
    cfg = state["cfg"] if isinstance(state["cfg"], dict) else model.cfg.to_official()
    weights = {key: state["model"][key].detach().contiguous().clone() for key in model.state_dict()}
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{out} exists and is not a folder")
    _write_safetensors(weights, out / WEIGHTS)
    meta = {k: v for k, v in (state.get("maeast_embed") or {}).items() if k != "format"}
    config = {
        "format": FORMAT,
        "model_type": "mae-ast",
        "library_name": "maeast-embed",
        "variant": model.cfg.variant,
        "with_decoder": model.has_decoder,
        "config": config_fields(model.cfg),
        "frontend": FRONTEND,
        "normalisation": normalisation(weights),
        "official_cfg": cfg,
        "weights": {"file": WEIGHTS, "sha256": sha256_file(out / WEIGHTS)},
        "source": {"name": name, "file": path.name, "sha256": source_digest},
        "info": meta,
        "exported_by": f"maeast-embed {__version__}",
    }
    try:
        text = json.dumps(config, indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: its cfg cannot be written as JSON ({err})") from err
    _write_text(out / CONFIG, text)
    card = model_card(model, name, config)
    _write_text(out / CARD, card)
    _copy_card_images(card, PACKAGED[name].path.with_suffix(".md") if name in PACKAGED else None, out)
    return out


def _copy_card_images(card: str, card_file: Path | None, out: Path) -> None:
    """Images the card shows by a plain file name (e.g. its loss curve), when they are at hand."""
    if card_file is None or not card_file.is_file():
        return
    for image in re.findall(r"!\[[^\]]*\]\(([\w.-]+\.(?:png|jpg|svg))\)", card):
        source = card_file.resolve().parent / image
        if source.is_file():
            with atomic_open(out / image) as handle:
                handle.write(source.read_bytes())


def _write_safetensors(weights: dict[str, Any], path: Path) -> None:
    try:
        from safetensors.torch import save
    except ImportError as err:
        raise CheckpointError(f"writing a Hub folder needs safetensors: {INSTALL}") from err

    with atomic_open(path) as handle:
        handle.write(save(weights, metadata={"format": "pt"}))  # one entry: a stable header


def _write_text(path: Path, text: str) -> None:
    with atomic_open(path) as handle:
        handle.write(text.encode("utf-8"))


def model_card(model: MAEAST, name: str | None, config: dict[str, Any]) -> str:
    """The README of the folder: Hub metadata, the project's model card for a packaged model
    (a generic description for others), then how to load it."""
    licence = LICENCES.get(name or "", "other")
    front = (
        "---\n"
        "library_name: maeast-embed\n"
        f"license: {licence}\n"
        "pipeline_tag: feature-extraction\n"
        "tags:\n- audio\n- mae-ast\n- self-supervised\n"
        "---\n\n"
    )
    packaged = PACKAGED.get(name or "")
    card_file = packaged.path.with_suffix(".md") if packaged else None
    if card_file is not None and card_file.is_file():
        body = card_file.read_text(encoding="utf-8")
    else:
        body = _generic_card(model, name, config)
    return front + body.rstrip() + "\n\n" + _how_to_load(model, config)


def _generic_card(model: MAEAST, name: str | None, config: dict[str, Any]) -> str:
    cfg = model.cfg
    title = name or config["source"]["file"]
    licence = config["info"].get("licence") or (
        "not stated: the official MAE-AST checkpoints (Baade, Peng & Harwath, Interspeech 2022) carry "
        "no licence statement; ask the authors before redistributing"
        if name in ("mae-ast-patch", "mae-ast-frame") else "not stated by the checkpoint")
    return (
        f"# {title}: MAE-AST model\n\n"
        f"An MAE-AST {cfg.variant} model (Masked Autoencoding Audio Spectrogram Transformer, Baade, "
        f"Peng & Harwath, Interspeech 2022) exported by maeast-embed.\n\n"
        "| | |\n|---|---|\n"
        f"| architecture | {cfg.kernel_time} x {cfg.kernel_chan} fbank tokens, {cfg.encoder_layers}-layer "
        f"encoder, width {cfg.embed_dim}, {cfg.num_heads} heads, FFN {cfg.ffn_dim}, post-LN |\n"
        f"| parameters | {model.num_parameters:,} ({'with' if model.has_decoder else 'without'} the "
        "pretraining decoder) |\n"
        f"| source checkpoint | `{config['source']['file']}`, sha256 `{config['source']['sha256']}` |\n"
        f"| input | 16 kHz mono audio; Kaldi fbank (128 mel, 25/10 ms), normalised with mean "
        f"{config['normalisation']['mean']:.6g}, variance {config['normalisation']['var']:.6g} |\n"
        f"| licence | {licence} |\n"
    )


def _how_to_load(model: MAEAST, config: dict[str, Any]) -> str:
    return (
        "## Files and loading (maeast-embed)\n\n"
        f"`{WEIGHTS}` holds the weights (sha256 `{config['weights']['sha256']}`, position tables "
        f"recomputed), `{CONFIG}` the settings (the official fairseq cfg under `official_cfg`). "
        f"Exported from `{config['source']['file']}` (sha256 `{config['source']['sha256']}`) by "
        f"{config['exported_by']}.\n\n"
        "```bash\n"
        "pip install 'maeast-embed[hub]'\n"
        "maeast-embed extract AUDIO_DIR -o embeddings/ --model ORG/NAME   # or a local copy of this folder\n"
        "```\n\n"
        "```python\n"
        "from maeast_embed import load_model\n"
        "from maeast_embed.features import Embedder\n\n"
        "model = load_model(\"ORG/NAME\")      # hf://ORG/NAME and ORG/NAME@REVISION work too\n"
        "features = Embedder(model).frame_features([waveform_16k])\n"
        "```\n\n"
        "Loading reads safetensors and JSON only (no pickle), checks the weights' sha256 against "
        f"`{CONFIG}`, and refuses a folder whose parts disagree.\n"
    )
