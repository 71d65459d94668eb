"""The model held in a dtype for inference: an encoder-only copy whose layers run in `HeldLayer`
form (q/k/v as one matmul, GELU and residual adds fused where oneDNN can)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..model import MAEAST, TransformerLayer
from .linear import LinearForm, linear_form

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def compute_dtype(dtype: str) -> torch.dtype:
    """The dtype of the tokens fed to `inference_model(model, dtype)`."""
    return TORCH_DTYPES.get(dtype, torch.float32)


def mlp_per_window(dtype: str) -> bool:
    """Whether HeldLayer runs its MLP one window at a time: for int8, whose activations are
    quantised per window (see Int8Linear), and FBGEMM runs a base-width layer stack ~1.2x
    faster with the MLP ~500 tokens at a time (its 3072-wide hidden stays in cache); bf16
    (oneDNN) and float32 gain nothing clear from it."""
    return dtype == "int8"


class HeldLayer(nn.Module):
    """A TransformerLayer's inference form (eval only, the same post-LN math): q, k and v as
    one matmul, GELU inside fc1, the residual adds inside out_proj and fc2 (fused into the
    matmul by PackedLinear), and the MLP block one window at a time if `per_window`."""

    def __init__(self, layer: TransformerLayer, form: LinearForm, *, per_window: bool = False) -> None:
        super().__init__()
        attn = layer.self_attn
        parts = (attn.q_proj, attn.k_proj, attn.v_proj)
        qkv = nn.Linear(attn.q_proj.in_features, 3 * attn.q_proj.out_features, device="meta")
        qkv.weight = nn.Parameter(torch.cat([p.weight for p in parts]), requires_grad=False)
        qkv.bias = nn.Parameter(torch.cat([p.bias for p in parts]), requires_grad=False)
        self.num_heads, self.per_window = attn.num_heads, per_window
        self.qkv, self.out_proj = form(qkv, "none"), form(attn.out_proj, "none")
        self.fc1, self.fc2 = form(layer.fc1, "gelu"), form(layer.fc2, "none")
        self.self_attn_layer_norm, self.final_layer_norm = layer.self_attn_layer_norm, layer.final_layer_norm

    def forward(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        batch, length, dim = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        x = self.self_attn_layer_norm(self.out_proj(out.transpose(1, 2).reshape(batch, length, dim), x))
        if not self.per_window:
            return self.mlp(x)
        return torch.stack([self.mlp(window) for window in x.unbind(0)])

    def mlp(self, x: Tensor) -> Tensor:
        return self.final_layer_norm(self.fc2(self.fc1(x), x))


def hold_layers(layers: Iterable[TransformerLayer], dtype: str, device: torch.device) -> nn.ModuleList:
    """TransformerLayers (already cast to `dtype`, on `device`) as the HeldLayers `dtype` runs."""
    form, per_window = linear_form(dtype, device), mlp_per_window(dtype)
    return nn.ModuleList(HeldLayer(layer, form, per_window=per_window) for layer in layers)


def inference_model(model: MAEAST, dtype: str, device: torch.device | str = "cpu") -> MAEAST:
    """The model to run for `dtype` on `device`, in eval mode: `model` itself for float32;
    otherwise an encoder-only copy (no decoder; `model` is left unchanged) whose patch
    projection and encoder layers are held in `dtype` (see `linear_form`, `HeldLayer`). The
    fbank normalisation stays float32; feed the tokens in `compute_dtype(dtype)`."""
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
    held = held.requires_grad_(False).to(device)
    held.post_extract_proj = linear_form(dtype, device)(held.post_extract_proj, "none")
    held.encoder.layers = hold_layers(held.encoder.layers, dtype, device)
    if hasattr(model, "checkpoint"):
        held.checkpoint = model.checkpoint
    return held.eval()
