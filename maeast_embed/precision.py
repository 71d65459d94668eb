"""Inference precision: `--dtype` names, what `auto` picks, and the model held in that dtype.

`auto` is bfloat16 on CUDA devices with native bf16 and on CPUs whose bf16 matmuls beat float32:
AMX (trusted from the CPU flags alone), or AVX512-BF16 / ARM BF16 units confirmed by a one-off
micro-measurement (one base-width transformer layer, cached per machine in
`$MAEAST_CACHE/precision.json`; delete it to measure again). A CPU without such units gets int8
when the same measurement shows int8 faster and the model's int8 features agree with float32 on
a fixed speech-like signal; otherwise float32. oneDNN's `ONEDNN_MAX_CPU_ISA` (read before torch
starts) can hide bf16 units: it is honoured here too. The decision never looks at the model's
name or size.

`inference_model` gives the model the Embedder runs: the caller's model itself for float32,
else an encoder-only copy whose weights are cast once (bfloat16/float16; LayerNorm statistics,
softmax and GELU still accumulate in float32 inside torch's kernels) or whose linear layers are
dynamically quantised (int8: per-channel int8 weights, activations quantised per call). Its
layers run in an inference form (`HeldLayer`): q/k/v as one matmul, GELU and the residual adds
fused into the matmuls where oneDNN can (bf16 on CPU).
"""

from __future__ import annotations

import json
import os
import platform
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .atomic import atomic_open
from .checkpoint import cache_dir
from .config import preset
from .defaults import DTYPE_CHOICES
from .errors import ConfigError
from .frontend import kaldi_fbank
from .model import MAEAST, TransformerLayer

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MIN_GAIN = 1.3  # a measured speed-up below this is noise or not worth a precision change
INT8_MIN_COSINE = 0.995  # auto's int8 check: worst token cosine to float32 on `probe_signal`

# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA / DNNL_MAX_CPU_ISA) that leave each kind of unit usable.
_BF16_ISAS = {"AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX10_1_512", "AVX512_CORE_AMX",
              "AVX10_1_512_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX_FP16", "AVX10_2_512",
              "AVX10_2_512_AMX_2", "ALL", "DEFAULT"}
_AMX_ISAS = {"AVX512_CORE_AMX", "AVX10_1_512_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX_FP16",
             "AVX10_2_512_AMX_2", "ALL", "DEFAULT"}
_FBGEMM_NO_VNNI = {"AVX2", "AVX512", "AVX512_256"}  # FBGEMM_ENABLE_INSTRUCTIONS values without VNNI


class PrecisionWarning(UserWarning):
    """A dtype that works here but is likely slower than float32."""


@dataclass(frozen=True)
class CpuReport:
    """What this CPU and the environment say about reduced-precision units."""

    arch: str  # platform.machine(), lower case
    model_name: str
    flags: frozenset[str] = field(default_factory=frozenset)  # /proc/cpuinfo flags or Features
    capability: str = ""  # torch.backends.cpu.get_cpu_capability()
    onednn_max_isa: str | None = None
    fbgemm_isa: str | None = None

    @property
    def x86(self) -> bool:
        return self.arch in ("x86_64", "amd64", "i686", "x86")

    def _isa_allows(self, allowed: set[str]) -> bool:
        return self.onednn_max_isa is None or self.onednn_max_isa in allowed

    @property
    def amx_bf16(self) -> bool:
        return self.x86 and "amx_bf16" in self.flags and self._isa_allows(_AMX_ISAS)

    @property
    def bf16_units(self) -> bool:
        """AMX or AVX512-BF16 usable by oneDNN (x86), or the ARM BF16 extension."""
        if self.x86:
            return self.amx_bf16 or ("avx512_bf16" in self.flags and self._isa_allows(_BF16_ISAS))
        return "bf16" in self.flags

    @property
    def int8_exact(self) -> bool:
        """Whether int8 products accumulate straight into int32: FBGEMM without VNNI sums pairs
        of u8*s8 products in saturating int16, so activations must then use 7 bits."""
        if not self.x86:
            return True
        return "avx512_vnni" in self.flags and (self.fbgemm_isa or "").upper() not in _FBGEMM_NO_VNNI

    def key(self) -> str:
        """Identifies the measurement conditions: CPU, caps, torch build, threads."""
        return "|".join([
            self.model_name, self.arch, self.capability, self.onednn_max_isa or "-", self.fbgemm_isa or "-",
            os.environ.get("MKL_ENABLE_INSTRUCTIONS", "-"), torch.__version__, str(torch.get_num_threads()),
        ])


@cache
def _cpuinfo() -> tuple[str, frozenset[str]]:
    """(model name, flags) from /proc/cpuinfo (x86 `flags`, ARM `Features`); where it is
    missing, the x86 units torch's own CPU probes report."""
    name, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = (part.strip() for part in line.partition(":"))
                if key.lower() in ("model name", "cpu part") and not name:
                    name = value
                elif key.lower() in ("flags", "features") and not flags:
                    flags = set(value.split())
    except OSError:
        probes = {"amx_bf16": "_is_amx_tile_supported", "avx512_bf16": "_is_avx512_bf16_supported",
                  "avx512_vnni": "_is_vnni_supported"}
        flags = {flag for flag, probe in probes.items() if getattr(torch.cpu, probe, lambda: False)()}
    return name or platform.processor() or platform.machine(), frozenset(flags)


def cpu_report() -> CpuReport:
    name, flags = _cpuinfo()
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return CpuReport(
        arch=platform.machine().lower(),
        model_name=name,
        flags=flags,
        capability=torch.backends.cpu.get_cpu_capability(),
        onednn_max_isa=isa.strip().upper() if isa else None,
        fbgemm_isa=os.environ.get("FBGEMM_ENABLE_INSTRUCTIONS"),
    )


def check_dtype(name: str, device: torch.device, *, quiet: bool = False) -> None:
    """Raise ConfigError for a dtype that does not exist or cannot run on `device`; warn
    (PrecisionWarning, unless `quiet`) for bfloat16 on a CPU without bf16 units."""
    if name not in DTYPE_CHOICES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPE_CHOICES)}; got {name!r}")
    if name == "int8" and device.type != "cpu":
        raise ConfigError(
            f"dtype int8 (dynamically quantised linear layers) runs on CPU only, not on {device}; "
            "pass --device cpu, or use bfloat16 or float16 there"
        )
    native_bf16 = device.type != "cuda" or torch.cuda.is_bf16_supported(including_emulation=False)
    if name == "bfloat16" and not native_bf16:
        raise ConfigError(
            f"{torch.cuda.get_device_name(device)} has no native bfloat16 support (compute capability "
            "below 8.0); use --dtype float16 or float32"
        )
    if name == "bfloat16" and device.type == "cpu" and not quiet and not cpu_report().bf16_units:
        warnings.warn(
            "this CPU reports no bf16 units (AMX, AVX512-BF16), or ONEDNN_MAX_CPU_ISA hides them: "
            "bfloat16 runs emulated, likely slower than float32",
            PrecisionWarning,
            stacklevel=3,
        )


def resolve_dtype(name: str, device: torch.device, model: MAEAST | None = None) -> str:
    """The dtype to compute in: `name` itself, or what `auto` picks for `device` (int8 is only
    considered with a `model` to check it on). Call `check_dtype` first for its warning."""
    check_dtype(name, device, quiet=True)
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported(including_emulation=False) else "float32"
    if device.type != "cpu":
        return "float32"
    report = cpu_report()
    if report.amx_bf16 or (report.bf16_units and measured_gain("bfloat16", report) >= MIN_GAIN):
        return "bfloat16"
    if model is not None and measured_gain("int8", report) >= MIN_GAIN and int8_agrees(model):
        return "int8"
    return "float32"


# ---------------------------------------------------------------- the model held in a dtype


class Int8Linear(nn.Module):
    """A Linear with per-output-channel symmetric int8 weights; float32 in and out, the input
    quantised per call (`torch.ops.quantized.linear_dynamic`), then GELU and a residual add."""

    def __init__(self, linear: nn.Linear, activation: str = "none", *, reduce_range: bool = False) -> None:
        super().__init__()
        weight = linear.weight.detach().float().cpu()
        scale = (weight.abs().amax(dim=1) / 127).clamp_min(1e-12).double()
        zero = torch.zeros(weight.shape[0], dtype=torch.long)
        qweight = torch.quantize_per_channel(weight, scale, zero, 0, torch.qint8)
        bias = None if linear.bias is None else linear.bias.detach().float().cpu()
        self.packed = torch.ops.quantized.linear_prepack(qweight, bias)
        self.activation, self.reduce_range = _activation(activation), reduce_range
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        return _epilogue(torch.ops.quantized.linear_dynamic(x, self.packed, self.reduce_range),
                         self.activation, residual)


class PackedLinear(nn.Module):
    """A CPU Linear whose weight oneDNN reorders once into its blocked matmul layout, with the
    bias, GELU and a residual add fused into the matmul. Plain bf16 `F.linear` re-packs the
    weight on every call: this halves the time of the encoder's bf16 matmuls."""

    def __init__(self, linear: nn.Linear, activation: str = "none") -> None:
        super().__init__()
        self.weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), None)
        self.bias = None if linear.bias is None else linear.bias.detach()
        self.activation = _activation(activation)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        if residual is None:  # oneDNN's "gelu" post-op with algorithm "none" is the exact (erf) GELU
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, self.activation, [], "none")
        if self.activation != "none":
            raise ValueError("a residual add after an activation is not fused")
        return torch.ops.mkldnn._linear_pointwise.binary(x, residual, self.weight, self.bias, "add")


class CastLinear(nn.Linear):
    """A plain Linear (weights already in the compute dtype) with the same call as the others."""

    def __init__(self, linear: nn.Linear, activation: str = "none") -> None:
        super().__init__(linear.in_features, linear.out_features, linear.bias is not None, device="meta")
        self.weight, self.bias = linear.weight, linear.bias
        self.activation = _activation(activation)

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        return _epilogue(super().forward(x), self.activation, residual)


def _epilogue(y: Tensor, activation: str, residual: Tensor | None) -> Tensor:
    """What PackedLinear fuses into its matmul, for a fresh matmul output `y`."""
    y = F.gelu(y) if activation == "gelu" else y
    return y if residual is None else y.add_(residual)


def _activation(name: str) -> str:
    if name not in ("none", "gelu"):
        raise ValueError(f"activation must be 'none' or 'gelu', got {name!r}")
    return name


def can_pack() -> bool:
    """Whether this torch build has oneDNN's prepacked linear (x86 and ARM CPU builds do)."""
    ops = torch.ops.mkldnn
    return torch.backends.mkldnn.is_available() and all(
        hasattr(ops, op) for op in ("_reorder_linear_weight", "_linear_pointwise")
    )


LinearForm = Callable[[nn.Linear, str], nn.Module]  # (linear, activation) -> its inference form


def linear_form(dtype: str, device: torch.device) -> LinearForm:
    """How a Linear (already cast to `dtype`, on `device`) is held for inference."""
    if dtype == "int8":
        reduce_range = not cpu_report().int8_exact
        return lambda linear, activation: Int8Linear(linear, activation, reduce_range=reduce_range)
    if dtype == "bfloat16" and device.type == "cpu" and can_pack():
        return PackedLinear
    return CastLinear


def mlp_rows(dtype: str) -> int | None:
    """HeldLayer's MLP chunk for `dtype`: FBGEMM's int8 runs a base-width layer stack 1.18x
    faster with the MLP 512 tokens at a time (its 3072-wide hidden stays in cache; measured on
    8 x 496 tokens, 2 cores); bf16 (oneDNN) and float32 gain nothing clear from it."""
    return 512 if dtype == "int8" else None


class HeldLayer(nn.Module):
    """A TransformerLayer's inference form (eval only, the same post-LN math): q, k and v as
    one matmul, GELU inside fc1, the residual adds inside out_proj and fc2 (fused into the
    matmul by PackedLinear), and the MLP block `mlp_rows` tokens at a time if set."""

    def __init__(self, layer: TransformerLayer, form: LinearForm, *, mlp_rows: int | None = None) -> None:
        super().__init__()
        attn = layer.self_attn
        parts = (attn.q_proj, attn.k_proj, attn.v_proj)
        qkv = nn.Linear(attn.q_proj.in_features, 3 * attn.q_proj.out_features, device="meta")
        qkv.weight = nn.Parameter(torch.cat([p.weight for p in parts]), requires_grad=False)
        qkv.bias = nn.Parameter(torch.cat([p.bias for p in parts]), requires_grad=False)
        self.num_heads, self.mlp_rows = attn.num_heads, mlp_rows
        self.qkv, self.out_proj = form(qkv, "none"), form(attn.out_proj, "none")
        self.fc1, self.fc2 = form(layer.fc1, "gelu"), form(layer.fc2, "none")
        self.self_attn_layer_norm, self.final_layer_norm = layer.self_attn_layer_norm, layer.final_layer_norm

    def forward(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        batch, length, dim = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        x = self.self_attn_layer_norm(self.out_proj(out.transpose(1, 2).reshape(batch, length, dim), x))
        if self.mlp_rows is None:
            return self.mlp(x)
        rows = x.reshape(-1, dim).split(self.mlp_rows)
        return torch.cat([self.mlp(part) for part in rows]).view(batch, length, dim)

    def mlp(self, x: Tensor) -> Tensor:
        return self.final_layer_norm(self.fc2(self.fc1(x), x))


def hold_layers(layers: Iterable[TransformerLayer], dtype: str, device: torch.device) -> nn.ModuleList:
    """TransformerLayers (already cast to `dtype`, on `device`) as the HeldLayers `dtype` runs."""
    form, rows = linear_form(dtype, device), mlp_rows(dtype)
    return nn.ModuleList(HeldLayer(layer, form, mlp_rows=rows) for layer in layers)


def hold_encoder(model: MAEAST, dtype: str, device: torch.device) -> MAEAST:
    """`model` (encoder-only, already cast to `dtype` and on `device`) with its patch projection
    and encoder layers in their inference form (see `linear_form`, `HeldLayer`)."""
    model.post_extract_proj = linear_form(dtype, device)(model.post_extract_proj, "none")
    model.encoder.layers = hold_layers(model.encoder.layers, dtype, device)
    return model


def inference_model(model: MAEAST, dtype: str, device: torch.device | str = "cpu") -> MAEAST:
    """The model to run for `dtype` on `device`, in eval mode: `model` itself for float32;
    otherwise an encoder-only copy (no decoder; `model` is left unchanged) whose patch
    projection and encoder are held in `dtype`. The fbank normalisation stays float32; feed the
    tokens in `compute_dtype(dtype)`."""
    device = torch.device(device)
    if dtype == "float32":
        return model.to(device).eval()
    with torch.device("meta"):
        held = MAEAST(model.cfg, with_decoder=False)
    source, target = model.state_dict(), TORCH_DTYPES.get(dtype)
    held_in_dtype = ("post_extract_proj.", "encoder.")
    state = {
        name: source[name].to(target) if target and name.startswith(held_in_dtype) else source[name]
        for name in held.state_dict()
    }
    held.load_state_dict(state, assign=True)
    held = hold_encoder(held.requires_grad_(False).to(device), dtype, device)
    if hasattr(model, "checkpoint"):
        held.checkpoint = model.checkpoint
    return held.eval()


def compute_dtype(dtype: str) -> torch.dtype:
    """The dtype of the tokens fed to `inference_model(model, dtype)`."""
    return TORCH_DTYPES.get(dtype, torch.float32)


# ---------------------------------------------------------------- auto's measurements


def _timed_layer(dtype: str) -> tuple[nn.Module, Tensor]:
    """One base-width layer as the Embedder runs it in `dtype`, and 512 tokens for it."""
    torch.manual_seed(0)
    layer = TransformerLayer(preset("patch")).eval().requires_grad_(False)
    x = torch.randn(2, 256, layer.fc1.in_features)
    if dtype == "float32":
        return layer, x
    target = TORCH_DTYPES.get(dtype, torch.float32)
    return hold_layers([layer.to(target)], dtype, torch.device("cpu"))[0].eval(), x.to(target)


def measure_gains(kinds: tuple[str, ...] = ("bfloat16", "int8"), repeats: int = 3) -> dict[str, float]:
    """float32 time / `kind` time of one base-width transformer layer on 512 tokens (best of
    `repeats` interleaved runs each, after one warm-up run)."""
    contenders = {kind: _timed_layer(kind) for kind in ("float32", *kinds)}
    best = dict.fromkeys(contenders, float("inf"))
    with torch.inference_mode():
        for layer, x in contenders.values():
            layer(x, None)
        for _ in range(repeats):
            for kind, (layer, x) in contenders.items():
                start = time.perf_counter()
                layer(x, None)
                best[kind] = min(best[kind], time.perf_counter() - start)
    return {kind: round(best["float32"] / best[kind], 3) for kind in kinds}


_GAINS: dict[tuple[str, str], dict[str, float]] = {}  # (cache file, CpuReport.key()) -> values


def _read_gains(path: Path) -> dict:
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return stored if isinstance(stored, dict) else {}


def _cached(name: str, compute: Callable[[], float], report: CpuReport | None = None) -> float:
    """`compute()` once per machine: kept in `$MAEAST_CACHE/precision.json` under the conditions
    it was measured in (CPU, oneDNN/FBGEMM caps, torch, threads) and `name`."""
    path = cache_dir() / "precision.json"
    key = (report or cpu_report()).key()
    values = _GAINS.setdefault((str(path), key), dict(_read_gains(path).get(key, {})))
    if name not in values:
        values[name] = compute()
        stored = _read_gains(path)
        stored[key] = {**stored.get(key, {}), **values}
        try:
            with atomic_open(path, "w") as handle:
                json.dump(stored, handle, indent=1)
        except OSError:
            pass  # a read-only cache folder: this process keeps its value in _GAINS
    return values[name]


def measured_gain(kind: str, report: CpuReport | None = None) -> float:
    """`measure_gains` of `kind` on this machine, measured once (see `_cached`)."""
    return _cached(kind, lambda: measure_gains((kind,))[kind], report)


def probe_signal(seconds: float = 3.0, rate: int = 16000) -> Tensor:
    """A fixed speech-like clip: a gliding harmonic voice with formant-shaped partials, pauses
    and a noise burst (the same samples every time)."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = 110 + 60 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voice = sum(np.sin(k * phase) * np.exp(-(((k * f0) - 700) / 500) ** 2 / 2) / k for k in range(1, 30))
    envelope = np.clip(np.sin(2 * np.pi * 1.3 * t) * 2, 0, 1)
    noise = np.random.default_rng(0).standard_normal(t.size) * ((t > 1.8) & (t < 2.1))
    wave = 0.3 * voice * envelope + 0.05 * noise
    return torch.from_numpy((wave / np.abs(wave).max() * 0.5).astype(np.float32))


def int8_cosine(model: MAEAST) -> float:
    """Worst token cosine of `model`'s last-layer int8 features to float32 on `probe_signal`."""
    wave, training = probe_signal().unsqueeze(0), model.training
    model.eval()
    try:
        with torch.inference_mode():
            tokens, mask = model.tokenize(*kaldi_fbank(wave))
            want = model(tokens, mask)[-1]
            got = inference_model(model, "int8", "cpu")(tokens, mask)[-1]
    finally:
        model.train(training)
    return round(float(torch.nn.functional.cosine_similarity(want, got, dim=-1).min()), 6)


def int8_agrees(model: MAEAST) -> bool:
    """Whether `int8_cosine(model)` reaches INT8_MIN_COSINE; kept per machine for a checkpoint
    (by its sha256), computed afresh for other models."""
    if next(model.parameters()).device.type != "cpu":
        return False
    sha = getattr(getattr(model, "checkpoint", None), "sha256", None)
    cosine = _cached(f"int8_cosine:{sha}", lambda: int8_cosine(model)) if sha else int8_cosine(model)
    return cosine >= INT8_MIN_COSINE
