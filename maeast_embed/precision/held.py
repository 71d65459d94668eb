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


def mlp_rows(dtype: str) -> int | None:
    """HeldLayer's MLP chunk for `dtype`: FBGEMM's int8 runs a base-width layer stack 1.18x
    faster with the MLP 512 tokens at a time (its 3072-wide hidden stays in cache; measured on
    8 x 496 tokens, 2 cores); bf16 (oneDNN) and float32 gain nothing clear from it. Int8 works
    token by token (see Int8Linear), so the chunks never change a result."""
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
