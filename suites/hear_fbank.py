"""The `fbank` baseline as a HEAR 2021 module, for hear-eval-kit beside `hear_module`:

    python -m hear_module.run embeddings maeast_suites.hear_fbank --tasks-dir TASKS

Timestamps are the 25 ms frames' centres, 12.5 + 10 k ms; the scene embedding is their mean.
"""

from __future__ import annotations

import torch
from torch import Tensor

from maeast_embed.errors import ConfigError
from maeast_embed.frontend import SAMPLE_RATE

from .baselines import FbankBaseline
from .engine import batch_frames


class HearFbank(FbankBaseline):
    sample_rate = SAMPLE_RATE
    scene_embedding_size = timestamp_embedding_size = FbankBaseline.output_dim


def load_model(model_file_path: str = "", **options) -> HearFbank:
    """The baseline has no weights: `model_file_path` must be empty and `options` none."""
    if model_file_path or options:
        raise ConfigError("the fbank baseline takes no model file and no options")
    return HearFbank().eval()


def _frames(audio: Tensor, model: HearFbank) -> Tensor:
    return batch_frames(model, audio, f"expected float32 audio [n_sounds, n_samples] at {SAMPLE_RATE} Hz")


@torch.no_grad()
def get_timestamp_embeddings(audio: Tensor, model: HearFbank) -> tuple[Tensor, Tensor]:
    frames = _frames(audio, model)
    times = model.first_centre_ms + model.hop_size_in_ms * torch.arange(frames.shape[1], dtype=torch.float32)
    return frames, times.repeat(audio.shape[0], 1).to(audio.device)


@torch.no_grad()
def get_scene_embeddings(audio: Tensor, model: HearFbank) -> Tensor:
    return _frames(audio, model).mean(1)
