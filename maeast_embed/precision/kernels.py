"""Which reduced-precision kernels this torch build runs here, found by one tiny real call each.

Flags say what a CPU has; these probes say what the kernels accept (oneDNN refuses to pack bf16
weights on a CPU without AVX512-BW/VL/DQ or AVX-NE-CONVERT; a torch build may lack the private
or deprecated ops). Each probe runs once per process; None means the kernel works, otherwise
the reason it does not.
"""

from __future__ import annotations

import warnings
from functools import cache

import torch
import torch.nn.functional as F

_FAILURES = (RuntimeError, AttributeError, NotImplementedError, TypeError)


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def pack_bf16_weight(weight: torch.Tensor) -> torch.Tensor:
    """oneDNN's blocked layout of a bf16 Linear weight (for `linear_pointwise`)."""
    return torch.ops.mkldnn._reorder_linear_weight(weight, None)


def linear_pointwise(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None, activation: str,
                     residual: torch.Tensor | None = None) -> torch.Tensor:
    """oneDNN's matmul on a packed weight, bias and GELU or a residual add fused in."""
    ops = torch.ops.mkldnn._linear_pointwise
    if residual is None:  # oneDNN's "gelu" post-op with algorithm "none" is the exact (erf) GELU
        return ops(x, packed, bias, activation, [], "none")
    return ops.binary(x, residual, packed, bias, "add")


@cache
def bf16_packing_problem() -> str | None:
    """None where oneDNN packs bf16 Linear weights and its fused matmuls agree with F.linear."""
    if not torch.backends.mkldnn.is_available():
        return "this torch build has no oneDNN"
    try:
        torch.manual_seed(0)
        weight, bias = torch.randn(24, 32).bfloat16(), torch.randn(24).bfloat16()
        x, residual = torch.randn(5, 32).bfloat16(), torch.randn(5, 24).bfloat16()
        packed = pack_bf16_weight(weight)
        want = F.linear(x.float(), weight.float(), bias.float())
        got = (linear_pointwise(x, packed, bias, "gelu"), linear_pointwise(x, packed, bias, "none", residual))
        expected = (F.gelu(want), want + residual.float())
    except _FAILURES as err:
        return _first_line(err)
    for g, e in zip(got, expected, strict=True):
        if g.shape != e.shape or not torch.allclose(g.float(), e, rtol=0.05, atol=0.1):
            return "oneDNN's packed bf16 matmul gave wrong results"
    return None


def prepack_int8(weight: torch.Tensor, bias: torch.Tensor | None = None) -> object:
    """A float Linear weight [out, in] as FBGEMM's packed per-output-channel symmetric int8.

    torch 2.13 deprecates the quantized tensor it is built from (a warning on every run);
    `int8_kernel_problem` notices the day the ops are gone, so the warning is silenced here.
    """
    scale = (weight.abs().amax(dim=1) / 127).clamp_min(1e-12).double()
    zero = torch.zeros(weight.shape[0], dtype=torch.long)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*deprecated")
        qweight = torch.quantize_per_channel(weight, scale, zero, 0, torch.qint8)
        return torch.ops.quantized.linear_prepack(qweight, bias)


def linear_int8(x: torch.Tensor, packed: object, reduce_range: bool) -> torch.Tensor:
    """FBGEMM's (QNNPACK's) dynamic int8 Linear: `x` quantised with the min/max of the tensor."""
    return torch.ops.quantized.linear_dynamic(x, packed, reduce_range)


@cache
def int8_kernel_problem() -> str | None:
    """None where torch's dynamic int8 Linear runs here and agrees with float32."""
    try:
        torch.manual_seed(0)
        weight, x = torch.randn(16, 32), torch.randn(6, 32)
        got = linear_int8(x, prepack_int8(weight), True)
    except _FAILURES as err:
        return _first_line(err)
    if got.shape != (6, 16) or F.cosine_similarity(got.flatten(), (x @ weight.T).flatten(), dim=0) < 0.99:
        return "the dynamic int8 Linear gave wrong results"
    return None
