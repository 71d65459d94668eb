"""MAE-AST for MAEB / MTEB: `model_meta(...)` gives the `mteb.ModelMeta` (name, revision, dims,
licence, ...) whose loader builds `MaeAstMtebModel`, clip embeddings (the mean over time of the
frame features) from the core's engine; `register` adds it to mteb's model registry, so
`mteb.get_model_meta(name)` and `mteb.evaluate(name, tasks)` find it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mteb.models import ModelMeta
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.modality_collators import AudioCollator

from maeast_embed.checkpoint import DEFAULT_MODEL
from maeast_embed.errors import ConfigError
from maeast_embed.features import pool_time
from maeast_embed.frontend import SAMPLE_RATE

from .baselines import FBANK
from .engine import suite_model

__all__ = ["MaeAstMtebModel", "model_meta", "register"]

PAPER = dict(release_date="2022-03-30", license="not specified", languages=["eng-Latn"],
             reference="https://arxiv.org/abs/2203.16691",
             public_training_code="https://github.com/AlanBaade/MAE-AST-Public",
             public_training_data="AudioSet and LibriSpeech")
KNOWN = {  # what the checkpoints' cards say; other files and Hub models: not specified
    "mae-ast-patch": PAPER,
    "mae-ast-frame": PAPER,
    "maeast-small": dict(release_date=None, license="cc-by-4.0", languages=None, reference=None,
                         public_training_code="recipes/maeast_small in maeast-embed",
                         public_training_data="Arabic Speech Commands (half) and generated audio"),
}
BASELINE = dict(release_date=None, license="mit", languages=None, reference=None,
                public_training_code=None, public_training_data=None)  # no weights: nothing trained
CITATION = """@inproceedings{baade2022maeast,
  title = {MAE-AST: Masked Autoencoding Audio Spectrogram Transformer},
  author = {Baade, Alan and Peng, Puyuan and Harwath, David},
  booktitle = {Interspeech},
  year = {2022},
}"""


class MaeAstMtebModel(AbsEncoder):
    """mteb's encoder protocol over the engine: `encode` gives [N, output_dim] float32 clip
    embeddings of the audio column (resampled to 16 kHz by mteb's collator)."""

    def __init__(self, model_name: str, revision: str | None = None, *, device: str | None = None,
                 **options: Any) -> None:
        self.model = suite_model(**options)
        if device is not None:
            self.model.to(device)

    def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs) -> np.ndarray:
        if "audio" not in inputs.dataset.features:
            raise ConfigError(f"MAE-AST embeds audio; task {task_metadata.name} gives no audio column")
        inputs.collate_fn = AudioCollator(target_sampling_rate=SAMPLE_RATE)
        clips = []
        for batch in inputs:
            waves = [torch.as_tensor(np.asarray(item["array"], dtype=np.float32)) for item in batch["audio"]]
            waves = [w.mean(0) if w.dim() == 2 else w for w in waves]  # (channels, T) -> mono
            clips.extend(pool_time(frames, "mean") for frames in self.model.frames(waves))
        return torch.stack(clips).numpy()


def model_meta(
    model: str | os.PathLike = DEFAULT_MODEL, *, name: str | None = None, **options: Any
) -> ModelMeta:
    """The ModelMeta of `model` (a registered name, a checkpoint file or a Hub folder or id) at
    `options` (those of `SuiteModel`). Reads the checkpoint once for its size and checksum (the
    revision). `name` defaults to `maeast-embed/<model name or file stem>`."""
    source = os.fspath(model)
    probe = suite_model(source, **options)
    if source == FBANK:
        key, revision, card = FBANK, "kaldi-fbank-128", BASELINE
    else:
        info = probe.model.checkpoint
        key = info.name if info.name in KNOWN else None
        revision = info.sha256
        card = KNOWN.get(key, dict(release_date=None, license="not specified", languages=None, reference=None,
                                   public_training_code=None, public_training_data=None))
    weights = sum(p.numel() for p in probe.parameters() if p.requires_grad)
    return ModelMeta(
        loader=MaeAstMtebModel,
        loader_kwargs={"model": source, **options},
        name=name or f"maeast-embed/{key or Path(source).stem}",
        revision=revision,
        n_parameters=weights,
        memory_usage_mb=round(sum(p.numel() * p.element_size() for p in probe.parameters()) / 2**20, 1),
        max_tokens=None,
        embed_dim=probe.output_dim,
        open_weights=True,
        framework=["PyTorch"],
        similarity_fn_name="cosine",
        use_instructions=False,
        training_datasets=None,
        modalities=["audio"],
        citation=CITATION,
        **card,
    )


def register(meta: ModelMeta) -> ModelMeta:
    """Add `meta` to mteb's model registry (by its name), so mteb's functions find it by name."""
    from mteb.models.model_implementations import MODEL_REGISTRY

    MODEL_REGISTRY[meta.name] = meta
    return meta
