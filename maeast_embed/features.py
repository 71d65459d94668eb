"""The extraction engine every consumer shares: waveforms -> per-time-step features.

Long audio is cut into fixed windows aligned to token steps, so the tokens of all windows
together are exactly the tokens of the whole file; windows from many clips are batched
together, and each window is encoded as if it were alone (no partial patches, padding masked),
so a clip's embedding never depends on the batch or on the other files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .checkpoint import DEFAULT_MODEL, load_model
from .errors import AudioError, ConfigError
from .frontend import (
    FRAME_LENGTH,
    FRAME_SHIFT,
    SAMPLE_RATE,
    kaldi_fbank,
    min_samples_for_tokens,
    num_frames,
    token_centre_seconds,
)
from .model import MAEAST
from .precision import auto_dtype, check_dtype, compute_dtype, inference_model

LayerSpec = str | int | Sequence[int]
# Windows are encoded at their token count rounded up to this: the attention kernels reduce over
# keys in SIMD blocks and GEMM panels whose split depends on the sequence length, so a clip must
# be encoded at the same length alone and in a batch to give the same numbers.
TOKEN_ALIGN = 16
BACKENDS = ("torch", "onnxruntime")


@dataclass(frozen=True)
class Window:
    """A slice of one clip that covers `num_steps` whole token steps from `first_step`."""

    clip: int
    start: int  # first sample
    length: int  # samples
    first_step: int
    num_steps: int


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is available")
    return device


def plan_windows(num_samples: int, kernel_time: int, chunk_steps: int, clip: int = 0) -> list[Window]:
    """Cut a clip into windows of at most `chunk_steps` token steps (the last may be shorter).

    A window of n steps spans (n * kt - 1) * 160 + 400 samples; consecutive windows start
    chunk_steps * kt * 160 samples apart (so they overlap by 240 samples, one frame's tail).
    """
    step_samples = kernel_time * FRAME_SHIFT
    total_steps = num_frames(num_samples) // kernel_time
    windows = []
    for first in range(0, total_steps, chunk_steps):
        steps = min(chunk_steps, total_steps - first)
        length = (steps * kernel_time - 1) * FRAME_SHIFT + FRAME_LENGTH
        windows.append(Window(clip, first * step_samples, length, first, steps))
    return windows


def pad_tokens(tokens: Tensor, padding_mask: Tensor | None, length: int) -> tuple[Tensor, Tensor | None]:
    """Tokens [B, L, C] zero-padded (and masked) to `length` >= L tokens."""
    batch, current, _ = tokens.shape
    if current == length:
        return tokens, padding_mask
    if padding_mask is None:
        padding_mask = torch.zeros(batch, current, dtype=torch.bool, device=tokens.device)
    tokens = torch.nn.functional.pad(tokens, (0, 0, 0, length - current))
    return tokens, torch.nn.functional.pad(padding_mask, (0, length - current), value=True)


def select_layers(hidden_states: Sequence[Tensor], layer: LayerSpec) -> Tensor:
    """Stack the requested layers: [n, ...]. 'last', 'all', 'mean', a 1-based layer number
    (negative counts from the end), or a sequence of numbers (stacked, for concatenation)."""
    count = len(hidden_states)
    if layer == "last":
        return hidden_states[-1].unsqueeze(0)
    if layer == "all":
        return torch.stack(list(hidden_states))
    if layer == "mean":
        return torch.stack(list(hidden_states)).mean(0, keepdim=True)
    numbers = [layer] if isinstance(layer, int) else list(layer)
    picked = []
    for number in numbers:
        if not isinstance(number, int) or number == 0 or not -count <= number <= count:
            raise ConfigError(
                f"layer must be 'last', 'all', 'mean' or a layer number in 1..{count} "
                f"(negative from the end), got {layer!r}"
            )
        picked.append(hidden_states[number - 1 if number > 0 else number])
    return torch.stack(picked)


def parse_layer(text: str) -> LayerSpec:
    """CLI/JSON form: 'last', 'all', 'mean', '7', '-1', or '4,8,12'."""
    text = str(text).strip()
    if text in ("last", "all", "mean"):
        return text
    try:
        numbers = [int(part) for part in text.split(",")]
    except ValueError as err:
        raise ConfigError(f"cannot read layer {text!r}: use last, all, mean, N or N,M,...") from err
    return numbers[0] if len(numbers) == 1 else tuple(numbers)


def pool_time(features: Tensor, how: str = "mean") -> Tensor:
    """[..., T, D] -> [..., D] ('mean') or [..., 2D] ('meanmax': mean then max)."""
    if how == "mean":
        return features.mean(-2)
    if how == "meanmax":
        return torch.cat([features.mean(-2), features.amax(-2)], dim=-1)
    raise ConfigError(f"pool must be 'mean' or 'meanmax', got {how!r}")


class Embedder:
    """Batched, chunked MAE-AST feature extraction on any device and dtype.

    Args:
        model: an MAEAST, a checkpoint path, or a registered name.
        device: 'auto', 'cpu', 'cuda', ... (the model is moved there).
        dtype: compute dtype of the encoder: 'auto' (bfloat16 on AMX CPUs and GPUs with native
            bf16, int8 on other x86 CPUs for a model whose int8 features agree with
            float32, else float32; see `maeast_embed.precision.policy`), 'float32', 'bfloat16',
            'float16' or 'int8' (CPU). `self.dtype` holds the one in use and `self.dtype_reason`
            why. Other than float32,
            the encoder runs from a copy held in that dtype (a model passed in is not changed).
            The fbank is always float32 and outputs are float32.
        batch_size: windows per forward pass.
        chunk_seconds: window length for long audio (10.24 s by default).
        backend: 'torch', or 'onnxruntime' (CPU, float32): the model's ONNX export (frontend
            included, exported once and cached by checksum under the cache dir) runs each batch.
    """

    def __init__(
        self,
        model: MAEAST | str | Path = DEFAULT_MODEL,
        *,
        device: str | torch.device = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        chunk_seconds: float = 10.24,
        trust_checkpoint: bool = False,
        backend: str = "torch",
    ) -> None:
        if batch_size < 1:
            raise ConfigError("batch_size must be at least 1")
        if backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        onnx = backend == "onnxruntime"
        if onnx and (str(device) not in ("auto", "cpu") or dtype not in ("auto", "float32")):
            raise ConfigError("the onnxruntime backend runs float32 on the CPU (device cpu, dtype float32)")
        self.device = resolve_device("cpu" if onnx else device)
        check_dtype(dtype, self.device)  # before the checkpoint is read
        if not isinstance(model, MAEAST):
            model = load_model(model, trust_checkpoint=trust_checkpoint)
        choice = auto_dtype(self.device, model) if dtype == "auto" and not onnx else None
        self.dtype = choice.dtype if choice else "float32" if onnx else dtype
        self.dtype_reason = choice.reason if choice else "asked for"
        if onnx:
            self.dtype_reason = "the onnxruntime graph is float32"
        self.backend = backend
        self.model = inference_model(model, self.dtype, self.device)
        self.onnx = None
        if onnx:
            from .export.ort import OnnxEncoder

            self.onnx = OnnxEncoder(self.model)
        self.batch_size = batch_size
        cfg = self.model.cfg
        self.chunk_steps = max(1, round(chunk_seconds * SAMPLE_RATE / (FRAME_SHIFT * cfg.kernel_time)))
        self.min_samples = min_samples_for_tokens(cfg.kernel_time)

    @property
    def step_seconds(self) -> float:
        """Hop between consecutive feature frames (0.16 s patch, 0.02 s frame)."""
        return self.model.cfg.kernel_time * FRAME_SHIFT / SAMPLE_RATE

    def timestamps(self, num_steps: int) -> np.ndarray:
        """Centre (seconds, float64) of the audio that each feature frame covers."""
        return token_centre_seconds(num_steps, self.model.cfg.kernel_time).numpy()

    def feature_dim(self, freq_pool: str = "concat") -> int:
        cfg = self.model.cfg
        return cfg.embed_dim * (cfg.tokens_per_step if freq_pool == "concat" else 1)

    def prepare(self, waveform: Tensor | np.ndarray) -> Tensor:
        """Validate one 16 kHz mono clip; clips shorter than one token step are zero-padded."""
        wave = torch.as_tensor(waveform)
        if wave.dim() != 1:
            raise AudioError(f"expected a 1-D mono waveform, got shape {tuple(wave.shape)}")
        if not wave.is_floating_point():
            raise AudioError(f"expected float samples in [-1, 1], got dtype {wave.dtype}")
        if wave.numel() == 0:
            raise AudioError("empty waveform")
        if not bool(torch.isfinite(wave).all()):
            raise AudioError("waveform contains NaN or Inf samples")
        wave = wave.float()
        if wave.numel() < self.min_samples:
            wave = torch.nn.functional.pad(wave, (0, self.min_samples - wave.numel()))
        return wave

    def padded_tokens(self, num_samples: int) -> int:
        """Tokens a window of `num_samples` is encoded with: its whole token steps, padded up
        to a multiple of TOKEN_ALIGN (the same alone and in any batch; see `pad_tokens`)."""
        tokens = num_frames(num_samples) // self.model.cfg.kernel_time * self.model.cfg.tokens_per_step
        return -(-tokens // TOKEN_ALIGN) * TOKEN_ALIGN

    @torch.inference_mode()
    def encode_windows(
        self, windows: Sequence[Tensor], *, layer: LayerSpec = "last", freq_pool: str = "concat"
    ) -> list[Tensor]:
        """Encode aligned windows (each whole token steps) -> [n_layers, steps, D'] float32 on CPU.

        Windows are grouped by `padded_tokens` and batched `batch_size` at a time within a
        group, so each is encoded at the same length it has alone: no kernel sees another
        shape for it, and its numbers never depend on the batch or on the other files.
        """
        if freq_pool not in ("concat", "mean"):
            raise ConfigError(f"freq_pool must be 'concat' or 'mean', got {freq_pool!r}")
        sizes = [self.padded_tokens(w.numel()) for w in windows]
        order = sorted(range(len(windows)), key=lambda i: (-sizes[i], -windows[i].numel(), i))
        results: list[Tensor | None] = [None] * len(windows)
        start = 0
        while start < len(order):
            size = sizes[order[start]]
            stop = start + 1
            while stop < min(len(order), start + self.batch_size) and sizes[order[stop]] == size:
                stop += 1
            index = order[start:stop]
            encoded = self._encode_batch([windows[i] for i in index], size, layer, freq_pool)
            for i, features in zip(index, encoded, strict=True):
                results[i] = features
            start = stop
        return results  # type: ignore[return-value]

    def _encode_batch(
        self, windows: list[Tensor], size: int, layer: LayerSpec, freq_pool: str
    ) -> list[Tensor]:
        """One forward pass over windows that all encode at `size` tokens."""
        cfg = self.model.cfg
        lengths = torch.tensor([w.numel() for w in windows])
        batch = torch.zeros(len(windows), int(lengths.max()))
        for row, wave in enumerate(windows):
            batch[row, : wave.numel()] = wave
        per_step = cfg.tokens_per_step
        if self.onnx is not None:  # layers [B, T, per_step * D], a clip's steps first
            layers_out, steps = self.onnx(batch, lengths)
            hidden = select_layers(layers_out, layer)
            if freq_pool == "mean":
                hidden = hidden.unflatten(-1, (per_step, cfg.embed_dim)).mean(-2)
            return [hidden[:, row, : steps[row]].clone() for row in range(len(windows))]
        batch, lengths = batch.to(self.device), lengths.to(self.device)
        fbank, frame_lengths = kaldi_fbank(batch, lengths)
        tokens, padding_mask = pad_tokens(*self.model.tokenize(fbank, frame_lengths), size)
        if padding_mask is not None:  # padding is zeros whatever the batch's longest window is
            tokens = tokens.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        hidden_states = self.model(tokens.to(compute_dtype(self.dtype)), padding_mask)
        if layer == "mean":  # average the layers in float32, not in a low-precision dtype
            hidden_states = [h.float() for h in hidden_states]
        hidden = select_layers(hidden_states, layer)
        layers, rows, length, dim = hidden.shape
        hidden = hidden.float().reshape(layers, rows, length // per_step, per_step, dim)
        hidden = hidden.flatten(-2) if freq_pool == "concat" else hidden.mean(-2)
        steps = frame_lengths.div(cfg.kernel_time, rounding_mode="floor").tolist()
        hidden = hidden.cpu()
        return [hidden[:, row, : steps[row]].clone() for row in range(rows)]

    def frame_features(
        self,
        waveforms: Sequence[Tensor | np.ndarray],
        *,
        layer: LayerSpec = "last",
        freq_pool: str = "concat",
    ) -> list[Tensor]:
        """Per clip: [n_layers, T, D'] features, one frame per token step (see `timestamps`)."""
        clips = [self.prepare(w) for w in waveforms]
        plan = [
            window
            for clip, wave in enumerate(clips)
            for window in plan_windows(wave.numel(), self.model.cfg.kernel_time, self.chunk_steps, clip)
        ]
        encoded = self.encode_windows(
            [clips[w.clip][w.start : w.start + w.length] for w in plan], layer=layer, freq_pool=freq_pool
        )
        per_clip: list[list[Tensor]] = [[] for _ in clips]
        for window, features in zip(plan, encoded):
            per_clip[window.clip].append(features)
        return [torch.cat(parts, dim=1) for parts in per_clip]

    def clip_embeddings(
        self,
        waveforms: Sequence[Tensor | np.ndarray],
        *,
        layer: LayerSpec = "last",
        freq_pool: str = "concat",
        pool: str = "mean",
    ) -> list[Tensor]:
        """Per clip: [n_layers, D'] (or [n_layers, 2D'] for meanmax) time-pooled embeddings."""
        return [pool_time(f, pool) for f in self.frame_features(waveforms, layer=layer, freq_pool=freq_pool)]

    def package(
        self,
        features: Tensor,
        duration: float,
        *,
        granularity: str = "frame",
        layer: LayerSpec = "last",
        pool: str = "mean",
    ) -> Embedding:
        """[n_layers, T, D'] features of one clip -> an `Embedding` (clip: pooled over time)."""
        if granularity == "frame":
            values, stamps = features, self.timestamps(features.shape[1])
        elif granularity == "clip":
            values, stamps = pool_time(features, pool), np.array([duration / 2], dtype=np.float64)
        else:
            raise ConfigError(f"granularity must be 'clip' or 'frame', got {granularity!r}")
        values = values if keeps_layer_axis(layer) else values[0]
        return Embedding(values.float().numpy(), stamps, duration, int(features.shape[1]))

    def embed_waveforms(
        self,
        waveforms: Sequence[Tensor | np.ndarray],
        *,
        sample_rate: int = SAMPLE_RATE,
        granularity: str = "frame",
        layer: LayerSpec = "last",
        freq_pool: str = "concat",
        pool: str = "mean",
    ) -> list[Embedding]:
        """Embed 1-D mono clips (resampled to 16 kHz if `sample_rate` differs).

        Clips shorter than one 25 ms fbank frame raise AudioError; clips shorter than one
        token step are zero-padded to it (one frame).
        """
        from .audio import resample

        waves = []
        for wave in waveforms:
            wave = torch.as_tensor(wave)
            if sample_rate != SAMPLE_RATE and wave.is_floating_point() and wave.dim() == 1:
                wave = resample(wave.float(), sample_rate)
            if wave.dim() == 1 and wave.numel() < FRAME_LENGTH:
                raise AudioError(f"audio of {wave.numel()} samples is shorter than one 25 ms fbank frame")
            waves.append(wave)
        features = self.frame_features(waves, layer=layer, freq_pool=freq_pool)
        return [
            self.package(f, w.numel() / SAMPLE_RATE, granularity=granularity, layer=layer, pool=pool)
            for f, w in zip(features, waves, strict=True)
        ]


@dataclass
class Embedding:
    """One clip's output: `embedding` float32 ([T, D'] or [n_layers, T, D'] per frame; [D'] or
    [n_layers, D'] per clip), `timestamps` float64 seconds (frame centres, or the clip centre),
    `duration` seconds and `frames` (time steps encoded)."""

    embedding: np.ndarray
    timestamps: np.ndarray
    duration: float
    frames: int


def keeps_layer_axis(layer: LayerSpec) -> bool:
    """'all' and sequences of layer numbers keep the stacked layer axis; others drop it."""
    return layer == "all" or not isinstance(layer, str | int)
