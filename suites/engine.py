"""The options every suite shares (model name, layers, frequency pooling, dtype...) turned into
the core's `Embedder`, built on the device the weights are on when it is first needed."""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence

import torch
from torch import Tensor

from maeast_embed.checkpoint import DEFAULT_MODEL, load_model
from maeast_embed.errors import AudioError, ConfigError
from maeast_embed.features import Embedder, parse_layer, select_layers
from maeast_embed.frontend import FRAME_SHIFT, SAMPLE_RATE
from maeast_embed.model import MAEAST
from maeast_embed.precision import check_dtype


def layer_spec(layer: str | int | Sequence[int]) -> str | int | tuple[int, ...]:
    """'last', 'mean', 'all' (or 'concat'), 7, '7', '4,8,12' or [4, 8, 12]."""
    if isinstance(layer, str):
        return "all" if layer.strip() == "concat" else parse_layer(layer)
    if isinstance(layer, int) and not isinstance(layer, bool):
        return layer
    numbers = tuple(layer) if isinstance(layer, Sequence) else ()
    if not numbers or not all(isinstance(n, int) and not isinstance(n, bool) for n in numbers):
        raise ConfigError(f"layer must be 'last', 'mean', 'all', a layer number or a list, got {layer!r}")
    return numbers


class SuiteModel(torch.nn.Module):
    """MAE-AST with the HEAR module's options, for a suite's wrapper.

    Args:
        model: a registered name (`maeast-small`, packaged, the default; `mae-ast-patch`,
            `mae-ast-frame`), a checkpoint file, a Hub folder or id, or an MAEAST.
        layer: 'last' (default), a 1-based layer number, 'mean', 'all'/'concat' or a list
            (those layers concatenated per time step).
        freq_pool: patch model only: 'concat' (default, as s3prl) or 'mean'.
        batch_size: windows per forward pass (None: 32 on CUDA, 8 on CPU).
        chunk_seconds: window length for long audio.
        dtype: the engine's compute dtype; 'float32' (default) for parity with the reference.
        trust_checkpoint: allow arbitrary unpickling (trusted files only).
    """

    def __init__(
        self,
        model: MAEAST | str | os.PathLike = DEFAULT_MODEL,
        *,
        layer: str | int | Sequence[int] = "last",
        freq_pool: str = "concat",
        batch_size: int | None = None,
        chunk_seconds: float = 10.24,
        dtype: str = "float32",
        trust_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        check_dtype(dtype, torch.device("cpu"))  # the name; the device is checked on first use
        if freq_pool not in ("concat", "mean"):
            raise ConfigError(f"freq_pool must be 'concat' or 'mean', got {freq_pool!r}")
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not float(chunk_seconds) > 0:
            raise ConfigError(f"chunk_seconds must be positive, got {chunk_seconds!r}")
        if not isinstance(model, MAEAST):
            model = load_model(os.fspath(model), trust_checkpoint=trust_checkpoint)
        self.model = model.eval()
        self.layer = layer_spec(layer)
        cfg = model.cfg
        layers = select_layers([torch.zeros(0)] * cfg.encoder_layers, self.layer).shape[0]  # validates
        self.freq_pool = freq_pool
        self.batch_size = batch_size
        self.chunk_seconds = float(chunk_seconds)
        self.dtype = dtype
        self.output_dim = int(layers * cfg.embed_dim * (cfg.tokens_per_step if freq_pool == "concat" else 1))
        self.hop_size_in_ms = cfg.kernel_time * FRAME_SHIFT * 1000 / SAMPLE_RATE
        self._engine: tuple[tuple, Embedder] | None = None

    def embedder(self) -> Embedder:
        """The engine on the weights' current device (a suite may move the module), kept between calls."""
        device = next(self.model.parameters()).device
        self.model.eval()
        key = (device, self.batch_size, self.chunk_seconds, self.dtype)
        if self._engine is None or self._engine[0] != key:
            batch = self.batch_size or (32 if device.type == "cuda" else 8)
            engine = Embedder(self.model, device=device, dtype=self.dtype, batch_size=batch,
                              chunk_seconds=self.chunk_seconds)
            self._engine = (key, engine)
        return self._engine[1]

    def frames(self, waveforms: Sequence[Tensor]) -> list[Tensor]:
        """16 kHz mono clips -> per clip [T, output_dim] float32 on CPU (layers concatenated per step)."""
        features = self.embedder().frame_features(list(waveforms), layer=self.layer, freq_pool=self.freq_pool)
        return [f.permute(1, 0, 2).reshape(f.shape[1], -1) for f in features]


def suite_model(model: MAEAST | str | os.PathLike = DEFAULT_MODEL, **options) -> torch.nn.Module:
    """`SuiteModel(model, **options)`, or the `fbank` baseline for `model="fbank"` (which takes
    no encoder options: any other than their defaults is refused)."""
    from .baselines import FBANK, FbankBaseline

    if isinstance(model, str) and model == FBANK:
        defaults = {name: p.default for name, p in inspect.signature(SuiteModel).parameters.items()}
        given = sorted(k for k, v in options.items() if k not in defaults or defaults[k] != v)
        if given:
            raise ConfigError(f"the fbank baseline has no encoder, so no {', '.join(given)} option")
        return FbankBaseline()
    return SuiteModel(model, **options)


def batch_frames(model: torch.nn.Module, audio: Tensor, expected: str) -> Tensor:
    """A suite model's `frames` of a batch [B, T] of 16 kHz clips of one length, stacked
    [B, T', D] on the audio's device; an AudioError saying `expected`, and what came, otherwise."""
    if not isinstance(audio, Tensor) or audio.dim() != 2 or 0 in audio.shape:
        shape = tuple(audio.shape) if isinstance(audio, Tensor) else type(audio).__name__
        raise AudioError(f"{expected}, got {shape}")
    return torch.stack(model.frames(list(audio))).to(audio.device)  # one length: one frame count
