"""`--dtype`: which names exist, which run on a device, and what `auto` picks.

`auto` is a pure function of the machine (device, CPU flags and caps, torch build): no timing.
On a CPU it is bfloat16 with AMX, int8 on every other x86 CPU (int8 runs 2-3x float32
there, ahead of AVX512-BF16's bf16), bfloat16 on ARM CPUs with BF16, else float32; on CUDA,
bfloat16 where the GPU has it natively, else float32. Int8 is taken only for a model whose int8
features agree with float32 on a fixed speech-like signal (a deterministic check).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..defaults import DTYPE_CHOICES
from ..errors import ConfigError
from ..frontend import kaldi_fbank
from ..model import MAEAST
from .cpu import CpuReport, cpu_report
from .held import inference_model
from .kernels import bf16_packing_problem, int8_kernel_problem

INT8_MIN_COSINE = 0.995  # auto's int8 check: worst token cosine to float32 on `probe_signal`


class PrecisionWarning(UserWarning):
    """A dtype that works here but is likely slower than float32."""


@dataclass(frozen=True)
class Choice:
    """A dtype and why."""

    dtype: str
    reason: str


@dataclass(frozen=True)
class Support:
    """How a dtype runs on a device: 'native', 'emulated' (works, likely slower than float32)
    or 'unavailable' (refused before any file is read)."""

    status: str
    note: str


def _cuda_native_bf16(device: torch.device) -> bool:
    return torch.cuda.is_bf16_supported(including_emulation=False)


def dtype_support(device: torch.device, report: CpuReport | None = None) -> dict[str, Support]:
    """How each concrete dtype runs on `device`."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        bf16 = Support("native", name) if _cuda_native_bf16(device) else Support(
            "unavailable", f"{name} has no native bfloat16 support (compute capability below 8.0)")
        return {
            "float32": Support("native", "reference"),
            "bfloat16": bf16,
            "float16": Support("native", name),
            "int8": Support("unavailable", "int8 (dynamically quantised linear layers) runs on CPU only"),
        }
    if device.type != "cpu":
        return {"float32": Support("native", "reference"),
                **{d: Support("emulated", f"untested on {device.type}") for d in ("bfloat16", "float16")},
                "int8": Support("unavailable", "int8 runs on CPU only")}
    report = report or cpu_report()
    packing = bf16_packing_problem()
    if report.bf16_units and packing is None:
        bf16 = Support("native", "AMX tiles" if report.amx_bf16 else "bf16 units, oneDNN-packed weights")
    elif report.bf16_units:
        bf16 = Support("emulated", f"bf16 units, but oneDNN cannot pack bf16 weights here ({packing})")
    else:
        bf16 = Support("emulated", "no bf16 units (AMX, AVX512-BF16), or ONEDNN_MAX_CPU_ISA hides them")
    int8_problem = int8_kernel_problem()
    if int8_problem is not None:
        int8 = Support("unavailable", f"torch's dynamic int8 Linear does not run here ({int8_problem})")
    else:
        bits = "8-bit activations (VNNI)" if report.int8_exact else "7-bit activations (no VNNI)"
        int8 = Support("native", f"int8 quantised per window, {bits}")
    return {
        "float32": Support("native", "reference"),
        "bfloat16": bf16,
        "float16": Support("native" if "amx_fp16" in report.flags else "emulated", "float16 matmuls"),
        "int8": int8,
    }


def check_dtype(name: str, device: torch.device, *, quiet: bool = False) -> None:
    """Raise ConfigError for a dtype that does not exist or cannot run on `device`; warn
    (PrecisionWarning, unless `quiet`) for bfloat16 emulated on a CPU."""
    if name not in DTYPE_CHOICES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPE_CHOICES)}; got {name!r}")
    if name == "auto" or name == "float32":
        return
    if name == "int8" and device.type != "cpu":
        raise ConfigError(
            f"dtype int8 (dynamically quantised linear layers) runs on CPU only, not on {device}; "
            "pass --device cpu, or use bfloat16 or float16 there"
        )
    if name == "bfloat16" and device.type == "cuda" and not _cuda_native_bf16(device):
        raise ConfigError(
            f"{torch.cuda.get_device_name(device)} has no native bfloat16 support (compute capability "
            "below 8.0); use --dtype float16 or float32"
        )
    if device.type != "cpu":
        return
    support = dtype_support(device)[name]
    if support.status == "unavailable":
        raise ConfigError(f"dtype {name} cannot run on this CPU: {support.note}; use float32")
    if name == "bfloat16" and support.status == "emulated" and not quiet:
        warnings.warn(f"bfloat16 runs emulated here, likely slower than float32: {support.note}",
                      PrecisionWarning, stacklevel=3)


def auto_choice(device: torch.device, report: CpuReport | None = None) -> Choice:
    """What `auto` means on `device` (before the model's int8 check): the README's rule."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        if _cuda_native_bf16(device):
            return Choice("bfloat16", f"{name} has native bfloat16")
        return Choice("float32", f"{name} has no native bfloat16")
    if device.type != "cpu":
        return Choice("float32", f"reduced precision is untested on {device.type}")
    report = report or cpu_report()
    if report.amx_bf16 and bf16_packing_problem() is None:
        return Choice("bfloat16", "AMX: bf16 layers run ~3.8x float32")
    if report.x86 and int8_kernel_problem() is None:
        return Choice("int8", "x86 without AMX: int8 layers run ~2-3x float32")
    if report.bf16_units and bf16_packing_problem() is None:
        return Choice("bfloat16", f"{report.arch} BF16 extension")
    return Choice("float32", "no reduced-precision kernel this toolkit uses runs faster here")


def auto_dtype(device: torch.device, model: MAEAST | None = None) -> Choice:
    """`auto_choice`, with int8 only for a `model` whose int8 features agree with float32."""
    choice = auto_choice(device)
    if choice.dtype != "int8":
        return choice
    if model is None:
        return Choice("float32", "int8 is only picked for a model it can be checked on")
    cosine = int8_cosine(model)
    if cosine < INT8_MIN_COSINE:
        return Choice("float32", f"the model's int8 features reach cosine {cosine} < {INT8_MIN_COSINE} "
                                 "to float32 on the test signal")
    return Choice("int8", f"{choice.reason}; the model's int8 features agree with float32 (cosine {cosine})")


def resolve_dtype(name: str, device: torch.device, model: MAEAST | None = None) -> str:
    """The dtype to compute in: `name` itself, or what `auto` picks for `device` (int8 only with
    a `model` to check it on). Call `check_dtype` first for its warning."""
    check_dtype(name, device, quiet=True)
    return auto_dtype(device, model).dtype if name == "auto" else name


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


_COSINES: dict[str, float] = {}  # checkpoint sha256 -> int8_cosine, for this process


def int8_cosine(model: MAEAST) -> float:
    """Worst token cosine of `model`'s last-layer int8 features to float32 on `probe_signal`
    (on the CPU, where int8 runs; once per checkpoint and process)."""
    sha = getattr(getattr(model, "checkpoint", None), "sha256", None)
    if sha in _COSINES:
        return _COSINES[sha]
    training = model.training
    model.cpu().eval()
    try:
        with torch.inference_mode():
            tokens, mask = model.tokenize(*kaldi_fbank(probe_signal().unsqueeze(0)))
            want = model(tokens, mask)[-1]
            got = inference_model(model, "int8", "cpu")(tokens, mask)[-1]
    finally:
        model.train(training)
    cosine = round(float(F.cosine_similarity(want, got, dim=-1).min()), 6)
    if sha:
        _COSINES[sha] = cosine
    return cosine
