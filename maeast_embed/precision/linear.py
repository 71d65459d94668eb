"""Linear layers held for inference in a dtype; all share `forward(x, residual=None)` with an
optional GELU, so `HeldLayer` runs any of them."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .cpu import cpu_report
from .kernels import bf16_packing_problem, linear_int8, linear_pointwise, pack_bf16_weight, prepack_int8


def _activation(name: str) -> str:
    if name not in ("none", "gelu"):
        raise ValueError(f"activation must be 'none' or 'gelu', got {name!r}")
    return name


def _epilogue(y: Tensor, activation: str, residual: Tensor | None) -> Tensor:
    """What PackedLinear fuses into its matmul, done in place on a fresh matmul output `y`."""
    y = torch.ops.aten.gelu_(y) if activation == "gelu" else y
    return y if residual is None else y.add_(residual)


class CastLinear(nn.Linear):
    """A plain Linear (weights already in the compute dtype) with the same call as the others."""

    def __init__(self, linear: nn.Linear, activation: str = "none") -> None:
        super().__init__(linear.in_features, linear.out_features, linear.bias is not None, device="meta")
        self.weight, self.bias = linear.weight, linear.bias
        self.activation = _activation(activation)

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        return _epilogue(super().forward(x), self.activation, residual)


class PackedLinear(nn.Module):
    """A CPU bf16 Linear whose weight oneDNN reorders once into its blocked matmul layout, with
    the bias, GELU and a residual add fused into the matmul. Plain bf16 `F.linear` re-packs the
    weight on every call: this halves the time of the encoder's bf16 matmuls."""

    def __init__(self, linear: nn.Linear, activation: str = "none") -> None:
        super().__init__()
        self.weight = pack_bf16_weight(linear.weight.detach())
        self.bias = None if linear.bias is None else linear.bias.detach()
        self.activation = _activation(activation)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        if residual is not None and self.activation != "none":
            raise ValueError("a residual add after an activation is not fused")
        return linear_pointwise(x, self.weight, self.bias, self.activation, residual)


class Int8Linear(nn.Module):
    """A Linear with per-output-channel symmetric int8 weights and dynamically quantised int8
    activations (FBGEMM's `linear_dynamic`); float32 in and out, then GELU and a residual add.

    FBGEMM quantises its whole input with one scale, so each window is its own call: the leading
    dimension of a 3-D input [windows, tokens, features] (a 2-D input is one window). A window's
    numbers then never depend on the other windows of its batch (its padded length is its own;
    see `Embedder.encode_windows`), and integer products accumulate exactly.
    `reduce_range`: 7-bit activations, for FBGEMM without VNNI (see `CpuReport.int8_exact`).
    """

    def __init__(self, linear: nn.Linear, activation: str = "none", *, reduce_range: bool = False) -> None:
        super().__init__()
        bias = None if linear.bias is None else linear.bias.detach().float().cpu()
        self.packed = prepack_int8(linear.weight.detach().float().cpu(), bias)
        self.activation, self.reduce_range = _activation(activation), reduce_range
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        if x.dim() == 3:
            y = torch.stack([linear_int8(window, self.packed, self.reduce_range) for window in x.unbind(0)])
        else:
            y = linear_int8(x, self.packed, self.reduce_range)
        return _epilogue(y, self.activation, residual)


LinearForm = Callable[[nn.Linear, str], nn.Module]  # (linear, activation) -> its inference form


def linear_form(dtype: str, device: torch.device) -> LinearForm:
    """How a Linear (already cast to `dtype`, on `device`) is held for inference: int8 per window
    (Int8Linear); bf16 on a CPU with bf16 units where oneDNN packs it (PackedLinear); else the
    cast Linear itself (CastLinear: CUDA, float16, and bf16 emulated on other CPUs)."""
    if dtype == "int8":
        reduce_range = not cpu_report().int8_exact
        return lambda linear, activation: Int8Linear(linear, activation, reduce_range=reduce_range)
    if dtype != "bfloat16" or device.type != "cpu":
        return CastLinear
    return PackedLinear if cpu_report().bf16_units and bf16_packing_problem() is None else CastLinear
