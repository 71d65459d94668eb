"""ONNX export with the frontend inside: 16 kHz waveforms and lengths in, embeddings out.

The graph computes what `Embedder` computes for a window in float32: the Kaldi fbank (the DFT
as a matmul with a fixed basis), the checkpoint normalisation, patches, the encoder with its
padding mask, and the per-time-step regrouping (`freq_pool='concat'`). Each clip is encoded as
if alone (no partial patch), so its outputs do not depend on the batch. The file's metadata
names the model's sha256, the maeast-embed version and the settings; `cached_onnx` re-exports
a cached file whose metadata is not exactly that.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import os
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from .. import __version__
from ..atomic import atomic_open
from ..checkpoint import cache_dir, load_model
from ..errors import CheckpointError, ConfigError
from ..frontend import (
    FRAME_LENGTH,
    FRAME_SHIFT,
    N_FFT,
    NORM_EPS,
    PREEMPHASIS,
    _mel_matrix_cpu,
    _povey_window_cpu,
    min_samples_for_tokens,
)
from ..hub import config_fields, normalisation
from ..model import MAEAST

LayerSpec = str | int | tuple[int, ...] | list[int]  # as `features.LayerSpec` (not imported: no cycle)

FORMAT = "maeast-embed/onnx/1"
OPSET = 17
INPUTS = ("waveforms", "lengths")
OUTPUTS = ("embedding", "layers", "steps")


def layer_numbers(layers: LayerSpec, count: int) -> list[int]:
    """0-based encoder layers of the `layers` output: 'all', 'last', N or N,M,... (1-based,
    negative from the end)."""
    if layers == "all":
        return list(range(count))
    if layers == "last":
        return [count - 1]
    numbers = [layers] if isinstance(layers, int) else list(layers)
    if not numbers or any(not isinstance(n, int) or n == 0 or not -count <= n <= count for n in numbers):
        raise ConfigError(f"ONNX layers must be 'all', 'last' or layer numbers in 1..{count}, got {layers!r}")
    return [n - 1 if n > 0 else count + n for n in numbers]


class WaveformEncoder(nn.Module):
    """waveforms [B, N] float32 (16 kHz, [-1, 1]) + lengths [B] int64 ->
    embedding [B, T, D'] (last layer), layers [n, B, T, D'] and steps [B] (valid frames per clip;
    frames past them are zero). D' = tokens per step x width. Clips shorter than one token step
    are zero-padded to it, as `Embedder.prepare` does."""

    def __init__(self, model: MAEAST, layers: list[int]) -> None:
        super().__init__()
        self.model, self.layers = model, layers
        cfg = model.cfg
        self.min_samples = min_samples_for_tokens(cfg.kernel_time)
        n = torch.arange(FRAME_LENGTH, dtype=torch.float64).unsqueeze(1)
        k = torch.arange(N_FFT // 2 + 1, dtype=torch.float64).unsqueeze(0)
        angle = 2 * math.pi * n * k / N_FFT
        window = _povey_window_cpu().double().unsqueeze(1)  # folded into the basis
        # float64: float32 matmuls stray from the FFT by up to ~1e-3 in near-silent bands
        self.register_buffer("cos_basis", window * torch.cos(angle), persistent=False)
        self.register_buffer("sin_basis", window * torch.sin(angle), persistent=False)
        self.register_buffer("mel", _mel_matrix_cpu(cfg.num_mel_bins).clone(), persistent=False)
        half = torch.arange(0, cfg.embed_dim, 2, dtype=torch.float32)
        div_term = torch.exp(half * (-math.log(10000.0) / cfg.embed_dim))  # as `sinusoid_table`
        self.register_buffer("div_term", div_term, persistent=False)

    def fbank(self, waveforms: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        count = (waveforms.shape[1] - FRAME_LENGTH) // FRAME_SHIFT + 1
        index = torch.arange(count).unsqueeze(1) * FRAME_SHIFT + torch.arange(FRAME_LENGTH).unsqueeze(0)
        frames = waveforms[:, index]  # [B, T, 400]
        frames = frames - frames.mean(dim=-1, keepdim=True)
        previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
        frames = (frames - PREEMPHASIS * previous).double()
        power = ((frames @ self.cos_basis).square() + (frames @ self.sin_basis).square()).float()
        energies = (power @ self.mel).clamp_min(torch.finfo(torch.float32).eps).log()
        frame_lengths = (lengths - FRAME_LENGTH).div(FRAME_SHIFT, rounding_mode="floor") + 1
        valid = torch.arange(count).unsqueeze(0) < frame_lengths.unsqueeze(1)
        return energies * valid.unsqueeze(-1), frame_lengths

    def forward(self, waveforms: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        cfg = self.model.cfg
        norm = self.model.batch_norm
        inside = torch.arange(waveforms.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
        waveforms = nn.functional.pad(waveforms * inside, (0, self.min_samples))
        lengths = lengths.clamp_min(self.min_samples)
        fbank, frame_lengths = self.fbank(waveforms, lengths)
        fbank = (fbank - norm.running_mean) / torch.sqrt(norm.running_var + NORM_EPS) * 0.5
        per_step, kt = cfg.tokens_per_step, cfg.kernel_time
        batch, frames = fbank.shape[0], fbank.shape[1]
        steps_total = frames // kt
        tokens = fbank[:, : steps_total * kt].reshape(batch, steps_total, kt, per_step, cfg.kernel_chan)
        tokens = tokens.transpose(2, 3).reshape(batch, steps_total * per_step, cfg.patch_dim)
        steps = frame_lengths.div(kt, rounding_mode="floor")
        token_index = torch.arange(steps_total * per_step).unsqueeze(0)
        padding = token_index >= (steps * per_step).unsqueeze(1)  # True at padded tokens
        x = self.model.post_extract_proj(tokens)
        position = token_index.squeeze(0).unsqueeze(1).float() * self.div_term
        table = torch.stack([torch.sin(position), torch.cos(position)], dim=-1).flatten(1)
        x = x + table * (~padding).unsqueeze(-1)
        hidden = self.model.encoder(x, padding)
        picked = torch.stack([hidden[i] for i in self.layers])  # [n, B, L, D]
        step_valid = (torch.arange(steps_total).unsqueeze(0) < steps.unsqueeze(1)).unsqueeze(-1)
        picked = picked.reshape(len(self.layers), batch, steps_total, per_step * cfg.embed_dim) * step_valid
        last = hidden[-1].reshape(batch, steps_total, per_step * cfg.embed_dim) * step_valid
        return last, picked, steps


def weights_sha256(model: MAEAST) -> str:
    """sha256 of the weights the graph is made of (names, dtypes, shapes, bytes): the model in
    memory, whether or not it still equals its checkpoint file."""
    digest = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        value = value.detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def metadata(model: MAEAST, layers: list[int]) -> dict[str, str]:
    """What the file is: checked by `cached_onnx` before a cached file is used."""
    info = getattr(model, "checkpoint", None)
    return {
        "format": FORMAT,
        "maeast_embed_version": __version__,
        "weights_sha256": weights_sha256(model),
        "model_sha256": info.sha256 if info else "",
        "model_name": (info.name or "") if info else "",
        "layers": json.dumps([n + 1 for n in layers]),
        "config": json.dumps(config_fields(model.cfg)),
        "normalisation": json.dumps(normalisation(model.state_dict())),
        "freq_pool": "concat",
        "inputs": "waveforms [B, N] float32 16 kHz; lengths [B] int64 samples",
        "outputs": "embedding [B, T, D] last layer; layers [n, B, T, D]; steps [B] valid frames",
    }


def export_model(model: MAEAST, path: str | os.PathLike, layers: LayerSpec = "all") -> Path:
    """Export `model` (float32, CPU) to `path` with its metadata; returns the path."""
    try:
        import onnx
    except ImportError as err:
        raise CheckpointError("ONNX export needs onnx: pip install 'maeast-embed[onnx]'") from err
    numbers = layer_numbers(layers, model.cfg.encoder_layers)
    float_cpu = all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())
    source = model if float_cpu else copy.deepcopy(model).float().cpu()
    wrapper = WaveformEncoder(source, numbers).eval()
    example = (torch.zeros(2, 16000), torch.tensor([16000, 12000]))
    buffer = io.BytesIO()
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shape arithmetic and deprecations
        torch.onnx.export(
            wrapper, example, buffer, input_names=list(INPUTS), output_names=list(OUTPUTS),
            dynamic_axes={"waveforms": {0: "batch", 1: "samples"}, "lengths": {0: "batch"},
                          "embedding": {0: "batch", 1: "frames"}, "layers": {1: "batch", 2: "frames"},
                          "steps": {0: "batch"}},
            opset_version=OPSET, dynamo=False,
        )
    graph = onnx.load_from_string(buffer.getvalue())
    for key, value in metadata(model, numbers).items():
        graph.metadata_props.add(key=key, value=value)
    path = Path(path)
    with atomic_open(path) as handle:
        handle.write(graph.SerializeToString())
    return path


def export_onnx(
    source: str | os.PathLike | MAEAST, path: str | os.PathLike, *, layers: LayerSpec = "all",
    trust_checkpoint: bool = False,
) -> Path:
    """Export a model given by name, file or Hub folder (or an MAEAST) to an ONNX file."""
    model = source if isinstance(source, MAEAST) else load_model(source, trust_checkpoint=trust_checkpoint)
    return export_model(model, path, layers)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False)
    return {prop.key: prop.value for prop in graph.metadata_props}


def cached_onnx(model: MAEAST, layers: LayerSpec = "all") -> Path:
    """The ONNX file of `model` under the cache dir (named by its weights' sha256), exported on
    first use and re-exported when the cached file was made by another version, for other
    weights or another checkpoint, or with other settings."""
    numbers = layer_numbers(layers, model.cfg.encoder_layers)
    expected = metadata(model, numbers)
    key = f"{expected['weights_sha256'][:16]}-{'-'.join(str(n + 1) for n in numbers)}"
    path = cache_dir() / "onnx" / f"{key}.onnx"
    try:
        if path.is_file() and read_metadata(path) == expected:
            return path
    except Exception:  # noqa: BLE001 - a damaged cached file is simply made again
        pass
    return export_model(model, path, tuple(n + 1 for n in numbers))
