"""Inference precision: what the CPU offers (`cpu`), which kernels run here (`kernels`), what
`--dtype auto` picks (`policy`), and the model held in a dtype (`linear`, `held`).

Reduced precisions run an encoder-only copy whose weights are converted once: bfloat16/float16
cast (LayerNorm statistics, softmax and GELU still accumulate in float32 inside torch's
kernels; bf16 linears prepacked by oneDNN on CPUs with bf16 units), or int8 (per-channel int8
weights, activations quantised per window, so a clip's numbers never depend on its batch).
"""

from .cpu import CpuReport, cpu_report
from .held import TORCH_DTYPES, HeldLayer, compute_dtype, hold_layers, inference_model, mlp_per_window
from .kernels import bf16_packing_problem, int8_kernel_problem
from .linear import CastLinear, Int8Linear, PackedLinear, linear_form
from .policy import (
    INT8_MIN_COSINE,
    Choice,
    PrecisionWarning,
    Support,
    auto_choice,
    auto_dtype,
    check_dtype,
    dtype_support,
    int8_cosine,
    probe_signal,
    resolve_dtype,
)

__all__ = [
    "INT8_MIN_COSINE", "TORCH_DTYPES", "CastLinear", "Choice", "CpuReport", "HeldLayer", "Int8Linear",
    "PackedLinear", "PrecisionWarning", "Support", "auto_choice", "auto_dtype", "bf16_packing_problem",
    "check_dtype", "compute_dtype", "cpu_report", "dtype_support", "hold_layers", "inference_model",
    "int8_cosine", "int8_kernel_problem", "linear_form", "mlp_per_window", "probe_signal", "resolve_dtype",
]
