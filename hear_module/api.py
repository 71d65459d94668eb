"""The HEAR 2021 API of `hear_module`: `load_model`, `get_timestamp_embeddings`, `get_scene_embeddings`.

A thin layer over `maeast_embed.features.Embedder` (one forward pass per clip, long audio in
chunks of `chunk_seconds`, every clip encoded as if alone, so results do not depend on the batch).

Timestamp embeddings (ms, centred): the encoder gives one feature frame per token time step,
centred on the audio it covers: 87.5 + 160 k ms (patch model), 17.5 + 20 k ms (frame model).
With `hop_ms` other than the native step (the patch model's default is 40 ms) the features are
linearly interpolated between neighbouring token steps onto the grid 87.5 + hop_ms * j ms, for
every j up to the last token centre: no extrapolation, constant spacing, every fourth 40 ms
point is exactly a token step, and no timestamp passes the clip end.

Scene embedding: the mean over time of the native token-step features (the same layers and
frequency pooling as the timestamp embeddings, so both have the same size).

Short audio: a clip shorter than one token step (2800 samples patch, 720 frame; this includes
clips shorter than one 400-sample fbank frame) is zero-padded to one step and gives exactly one
embedding, with its timestamp at the middle of the clip.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from maeast_embed.checkpoint import DEFAULT_MODEL
from maeast_embed.errors import AudioError, ConfigError
from maeast_embed.features import Embedder, parse_layer, pool_time, select_layers
from maeast_embed.frontend import SAMPLE_RATE, min_samples_for_tokens, token_centre_seconds
from maeast_embed.model import MAEAST
from maeast_embed.precision import check_dtype

__all__ = ["HearModel", "load_model", "get_timestamp_embeddings", "get_scene_embeddings"]

DEFAULT_HOP_MS = 40.0  # used when the native token step is above the HEAR-recommended 50 ms
CONCAT_ALL = ("all", "concat")


def _layer_spec(layer: str | int | Sequence[int]) -> str | int | tuple[int, ...]:
    """Options come from JSON: 'last', 'mean', 'all'/'concat', 7, '7', '4,8,12' or [4, 8, 12]."""
    if isinstance(layer, bool):
        raise ConfigError(f"layer must be 'last', 'mean', 'all', a layer number or a list, got {layer!r}")
    if isinstance(layer, str):
        return "all" if layer.strip() in CONCAT_ALL else parse_layer(layer)
    if isinstance(layer, int):
        return layer
    numbers = tuple(layer)
    if not numbers or not all(isinstance(n, int) and not isinstance(n, bool) for n in numbers):
        raise ConfigError(f"layer list must hold layer numbers, got {layer!r}")
    return numbers


class HearModel(torch.nn.Module):
    """The object `load_model` returns: the MAE-AST encoder plus the chosen HEAR options.

    Attributes required by HEAR: `sample_rate` (16000), `timestamp_embedding_size`,
    `scene_embedding_size` (equal). Others: `layer`, `freq_pool`, `hop_ms`, `native_hop_ms`,
    `batch_size` (windows per forward; None = 32 on CUDA, 8 on CPU), `chunk_seconds`, `dtype`
    (the Embedder's: float32 by default, for parity with the reference).
    """

    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        model: MAEAST,
        *,
        layer: str | int | Sequence[int] = "last",
        freq_pool: str = "concat",
        hop_ms: float | str | None = None,
        batch_size: int | None = None,
        chunk_seconds: float = 10.24,
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        check_dtype(dtype, torch.device("cpu"))  # the name; the device is checked on first use
        self.dtype = dtype
        self._engine: tuple[tuple, Embedder] | None = None  # (settings, engine)
        self.model = model.eval()
        cfg = model.cfg
        self.layer = _layer_spec(layer)
        dummy = [torch.zeros(0)] * cfg.encoder_layers
        num_layers = select_layers(dummy, self.layer).shape[0]  # validates the layer spec
        if freq_pool not in ("concat", "mean"):
            raise ConfigError(f"freq_pool must be 'concat' or 'mean', got {freq_pool!r}")
        self.freq_pool = freq_pool
        self.native_hop_ms = cfg.kernel_time * 10.0
        self.hop_ms = self._hop(hop_ms)
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not float(chunk_seconds) > 0:
            raise ConfigError(f"chunk_seconds must be positive, got {chunk_seconds!r}")
        self.batch_size = batch_size
        self.chunk_seconds = float(chunk_seconds)
        per_layer = cfg.embed_dim * (cfg.tokens_per_step if freq_pool == "concat" else 1)
        self.timestamp_embedding_size = int(num_layers * per_layer)
        self.scene_embedding_size = self.timestamp_embedding_size
        self.min_samples = min_samples_for_tokens(cfg.kernel_time)
        self.first_centre_ms = float(token_centre_seconds(1, cfg.kernel_time)[0]) * 1000

    def _hop(self, hop_ms: float | str | None) -> float:
        if hop_ms is None:
            return self.native_hop_ms if self.native_hop_ms <= 50 else DEFAULT_HOP_MS
        if hop_ms == "native":
            return self.native_hop_ms
        try:
            hop = float(hop_ms)
        except (TypeError, ValueError):
            hop = math.nan
        if not (math.isfinite(hop) and hop > 0):
            raise ConfigError(f"hop_ms must be a positive number of milliseconds or 'native', got {hop_ms!r}")
        return hop

    def embedder(self) -> Embedder:
        """The engine on the device the weights are on now (heareval moves the module itself),
        kept between calls (a non-float32 engine holds its own copy of the weights)."""
        device = next(self.model.parameters()).device
        batch = self.batch_size or (32 if device.type == "cuda" else 8)
        self.model.eval()  # a float32 engine runs these very weights
        key = (device, batch, self.chunk_seconds, self.dtype)
        if self._engine is None or self._engine[0] != key:
            engine = Embedder(self.model, device=device, dtype=self.dtype, batch_size=batch,
                              chunk_seconds=self.chunk_seconds)
            self._engine = (key, engine)
        return self._engine[1]

    def native_features(self, audio: Tensor) -> Tensor:
        """[n, samples] -> [n, T, D] float32 on CPU, one frame per token step, layers concatenated."""
        frames = self.embedder().frame_features(list(audio), layer=self.layer, freq_pool=self.freq_pool)
        stacked = torch.stack(frames)  # [n, layers, T, D']
        n, layers, steps, dim = stacked.shape
        return stacked.permute(0, 2, 1, 3).reshape(n, steps, layers * dim)

    def timestamp_grid(self, num_steps: int, num_samples: int) -> tuple[np.ndarray, np.ndarray]:
        """Timestamps (ms) and their positions in token steps for a clip with `num_steps` steps."""
        if num_samples < self.min_samples:  # zero-padded single step: centre of the real audio
            return np.array([num_samples / SAMPLE_RATE * 500.0]), np.zeros(1)
        if self.hop_ms == self.native_hop_ms:
            positions = np.arange(num_steps, dtype=np.float64)
        else:
            count = math.floor((num_steps - 1) * self.native_hop_ms / self.hop_ms + 1e-9) + 1
            positions = np.arange(count, dtype=np.float64) * (self.hop_ms / self.native_hop_ms)
        return self.first_centre_ms + positions * self.native_hop_ms, positions


def _interpolate(features: Tensor, positions: np.ndarray) -> Tensor:
    """Linear interpolation of [n, T, D] along T at fractional step `positions` (within [0, T-1])."""
    steps = features.shape[1]
    if np.array_equal(positions, np.arange(steps)):
        return features
    pos = torch.from_numpy(positions)
    left = pos.floor().long().clamp(max=steps - 1)
    right = (left + 1).clamp(max=steps - 1)
    weight = (pos - left).to(features.dtype)[None, :, None]
    return torch.lerp(features[:, left], features[:, right], weight)


def _check(audio: Tensor, model: HearModel) -> None:
    if not isinstance(model, HearModel):
        raise ConfigError(
            f"model must be the object hear_module.load_model returned, got {type(model).__name__}"
        )
    if model.sample_rate != SAMPLE_RATE:
        raise ConfigError(f"MAE-AST takes {SAMPLE_RATE} Hz audio; model.sample_rate is {model.sample_rate}")
    expected = f"expected float32 audio of shape [n_sounds, n_samples], mono at {SAMPLE_RATE} Hz"
    if not isinstance(audio, Tensor):
        raise AudioError(f"{expected}; got {type(audio).__name__} (pass a torch.Tensor)")
    if audio.dim() != 2:
        hint = " (use audio[None] for a single clip)" if audio.dim() == 1 else ""
        raise AudioError(f"{expected}; got shape {tuple(audio.shape)}{hint}")
    if audio.dtype != torch.float32:
        raise AudioError(f"{expected}; got dtype {audio.dtype}")
    if audio.shape[0] == 0 or audio.shape[1] == 0:
        raise AudioError(f"{expected}; got an empty batch of shape {tuple(audio.shape)}")


@torch.no_grad()
def get_timestamp_embeddings(audio: Tensor, model: HearModel) -> tuple[Tensor, Tensor]:
    """audio [n, samples] float32 16 kHz -> (embeddings [n, T, D] float32, timestamps [n, T] ms).

    Both on the audio's device. See the module docstring for the timestamp grid.
    """
    _check(audio, model)
    native = model.native_features(audio)
    times, positions = model.timestamp_grid(native.shape[1], audio.shape[1])
    embeddings = _interpolate(native, positions)
    timestamps = torch.from_numpy(times).float().repeat(audio.shape[0], 1)
    return embeddings.to(audio.device), timestamps.to(audio.device)


@torch.no_grad()
def get_scene_embeddings(audio: Tensor, model: HearModel) -> Tensor:
    """audio [n, samples] float32 16 kHz -> [n, D] float32: mean over the native token steps."""
    _check(audio, model)
    return pool_time(model.native_features(audio), "mean").to(audio.device)


def load_model(model_file_path: str = "", **options) -> HearModel:
    """Load MAE-AST for HEAR, in eval mode, on CPU (heareval moves it to its device).

    Args:
        model_file_path: an official-layout or project checkpoint file, or a registered name
            (`maeast-small`, packaged; `mae-ast-patch`, `mae-ast-frame`, downloaded once).
            Empty: `maeast-small` (offline; use an official model for research-grade results).
        **options: (heareval passes `--model-options` JSON here)
            layer: 'last' (default), a 1-based layer number (negative from the end), 'mean' (mean
                of all layers), 'all'/'concat' (all layers concatenated) or a list / '4,8,12'
                (those layers concatenated).
            freq_pool: patch model only: 'concat' (8 x 768 = 6144 per layer, default) or 'mean'.
            hop_ms: timestamp hop in ms, or 'native' (160 patch, 20 frame). Default: the native
                hop when it is at most 50 ms, else 40 ms (linear interpolation).
            batch_size: windows per forward pass (default 32 on CUDA, 8 on CPU).
            chunk_seconds: window length for long audio (default 10.24).
            dtype: encoder compute dtype: 'float32' (default, parity with the reference), 'auto',
                'bfloat16', 'float16' or 'int8' (CPU), as for `maeast-embed extract --dtype`.
            trust_checkpoint: allow arbitrary unpickling (only for trusted files; default False).
            sample_rate: accepted only as 16000 (MAE-AST's rate).
    """
    from maeast_embed.checkpoint import load_model as load_checkpoint

    options = dict(options)
    trust = options.pop("trust_checkpoint", False)
    sample_rate = options.pop("sample_rate", SAMPLE_RATE)
    if int(sample_rate) != SAMPLE_RATE:
        raise ConfigError(f"MAE-AST takes {SAMPLE_RATE} Hz audio, got sample_rate={sample_rate}")
    known = {"layer", "freq_pool", "hop_ms", "batch_size", "chunk_seconds", "dtype"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"unknown model options {unknown}; known: {sorted(known | {'trust_checkpoint'})}")
    source = os.fspath(model_file_path) if model_file_path else DEFAULT_MODEL
    model = load_checkpoint(source, trust_checkpoint=bool(trust))
    return HearModel(model, **options).eval()
