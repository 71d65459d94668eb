"""The MAE-AST network: post-LN transformer encoder/decoder over fbank patch tokens.

Module names match the official fairseq state dict, so checkpoints load strictly. The
sinusoidal position tables are computed on the fly instead of being stored (they are fixed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .config import ModelConfig
from .errors import AudioError, MAEASTError
from .frontend import FbankNorm, patchify, token_padding_mask


def sinusoid_table(length: int, dim: int, device=None) -> Tensor:
    """[length, dim] interleaved sin/cos table, bit-identical to the official `pe` buffer."""
    position = torch.arange(length, device=device).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, dim, 2, device=device) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(position * div_term)
    table[:, 1::2] = torch.cos(position * div_term)
    return table


class SinusoidalPositions(nn.Module):
    """Fixed positions over the flat token index, zeroed at padded tokens."""

    def __init__(self, dim: int, max_len: int) -> None:
        super().__init__()
        self.dim, self.max_len = dim, max_len
        self._table: Tensor | None = None

    def forward(self, length: int, device: torch.device) -> Tensor:  # -> [length, dim]
        if length > self.max_len:
            raise AudioError(
                f"{length} tokens exceed the model's {self.max_len} positions: chunk the audio"
            )
        table = self._table
        if table is None or table.shape[0] < length or table.device != device:
            table = sinusoid_table(max(length, 1024), self.dim, device)
            self._table = table
        return table[:length]


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """`F.dropout`, with a cheaper mask on CPU than its `bernoulli_`: each 64-bit random word
    gives two uniform int32 draws, so the drop probability is exact to 2**-32."""
    if not training or p == 0.0 or p >= 1.0 or x.device.type != "cpu":
        return F.dropout(x, p, training)
    words = torch.empty((x.numel() + 1) // 2, dtype=torch.int64).random_(-(2**63), None)
    keep = words.view(torch.int32)[: x.numel()].view(x.shape) >= round(p * 2**32) - 2**31
    return torch.where(keep, x, 0.0).mul_(1.0 / (1.0 - p))


class Dropout(nn.Dropout):
    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads, self.dropout = num_heads, dropout
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        batch, length, dim = x.shape

        def heads(t: Tensor) -> Tensor:
            return t.view(batch, length, self.num_heads, -1).transpose(1, 2)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        dropout_p = self.dropout if self.training else 0.0
        if dropout_p > 0 and x.device.type == "cpu":  # SDPA would take its slower math path
            scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
            if attn_mask is not None:
                scores = scores.masked_fill(~attn_mask, float("-inf"))
            out = dropout(scores.softmax(dim=-1), dropout_p, True) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, dim))


class TransformerLayer(nn.Module):
    """Post-LN layer: x = LN(x + attn(x)); x = LN(x + fc2(gelu(fc1(x))))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.self_attn = SelfAttention(cfg.embed_dim, cfg.num_heads, cfg.attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(cfg.embed_dim)
        self.fc1 = nn.Linear(cfg.embed_dim, cfg.ffn_dim)
        self.fc2 = nn.Linear(cfg.ffn_dim, cfg.embed_dim)
        self.final_layer_norm = nn.LayerNorm(cfg.embed_dim)
        self.dropout = Dropout(cfg.dropout)
        self.activation_dropout = Dropout(cfg.activation_dropout)

    def forward(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        x = self.self_attn_layer_norm(x + self.dropout(self.self_attn(x, attn_mask)))
        hidden = self.fc2(self.activation_dropout(F.gelu(self.fc1(x))))
        return self.final_layer_norm(x + self.dropout(hidden))


class Transformer(nn.Module):
    """Input LayerNorm + dropout, then a stack of post-LN layers (with optional layerdrop)."""

    def __init__(self, cfg: ModelConfig, num_layers: int, layerdrop: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(TransformerLayer(cfg) for _ in range(num_layers))
        self.layer_norm = nn.LayerNorm(cfg.embed_dim)
        self.dropout = Dropout(cfg.dropout)
        self.layerdrop = layerdrop
        self.checkpoint_activations = False  # recompute layers in backward (training only)

    def forward(self, x: Tensor, padding_mask: Tensor | None = None) -> list[Tensor]:
        """Returns the output of every layer that ran (all of them in eval mode)."""
        return self.run(x, padding_mask)[1]

    def run(self, x: Tensor, padding_mask: Tensor | None = None) -> tuple[Tensor, list[Tensor]]:
        """(final output, every ran layer's output); the output is defined even when layerdrop
        skips every layer (then it is the normalised input, as in fairseq)."""
        attn_mask = None if padding_mask is None else ~padding_mask[:, None, None, :]
        x = self.dropout(self.layer_norm(x))
        drop = (
            torch.rand(len(self.layers)) < self.layerdrop
            if self.training and self.layerdrop > 0
            else torch.zeros(len(self.layers), dtype=torch.bool)
        )
        hidden_states = []
        for layer, skip in zip(self.layers, drop.tolist()):
            if not skip:
                if self.checkpoint_activations and self.training and torch.is_grad_enabled():
                    x = checkpoint(layer, x, attn_mask, use_reentrant=False)
                else:
                    x = layer(x, attn_mask)
                hidden_states.append(x)
        return x, hidden_states


@dataclass
class PretrainOutput:
    """What the losses need: predictions and targets at masked tokens, [B, M, patch_dim]."""

    reconstruction: Tensor
    classification: Tensor
    target: Tensor


class MAEAST(nn.Module):
    """MAE-AST: fbank -> normalise -> patch tokens -> encoder (-> decoder -> heads)."""

    def __init__(self, cfg: ModelConfig, *, with_decoder: bool = True) -> None:
        """`with_decoder=False` builds the encoder side only (inference; no pretraining heads)."""
        super().__init__()
        self.cfg = cfg
        self.has_decoder = with_decoder
        dim = cfg.embed_dim
        self.encoder_mask_emb = nn.Parameter(torch.empty(dim).uniform_())
        if with_decoder:
            self.decoder_mask_emb = nn.Parameter(torch.empty(dim).uniform_())
        self.post_extract_proj = nn.Linear(cfg.patch_dim, dim)
        self.layer_norm = nn.LayerNorm(cfg.num_mel_bins)  # in the official state dict, unused
        self.batch_norm = FbankNorm()
        self.dropout_input = Dropout(cfg.dropout_input)
        self.enc_sine_pos_embed = SinusoidalPositions(dim, cfg.max_token_length)
        self.encoder = Transformer(cfg, cfg.encoder_layers, cfg.encoder_layerdrop)
        if with_decoder:
            self.dec_sine_pos_embed = SinusoidalPositions(dim, cfg.max_token_length)
            self.decoder = Transformer(cfg, cfg.decoder_layers, cfg.decoder_layerdrop)
            self.final_proj_reconstruction = nn.Linear(dim, cfg.patch_dim)
            self.final_proj_classification = nn.Linear(dim, cfg.patch_dim)
        self.encoder.apply(_init_bert)
        if with_decoder:
            self.decoder.apply(_init_bert)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def tokenize(
        self, fbank: Tensor, frame_lengths: Tensor | None = None, *, include_partial: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Normalised time-major tokens [B, L, patch_dim] and their padding mask (True = pad).

        `include_partial` selects the reference's batch-dependent rule (see
        `frontend.token_padding_mask`); the default gives each clip the tokens it has alone.
        """
        cfg = self.cfg
        tokens = patchify(self.batch_norm(fbank), cfg.kernel_time, cfg.kernel_chan)
        if frame_lengths is None:
            return tokens, None
        mask = token_padding_mask(
            frame_lengths, tokens.shape[1], cfg.kernel_time, cfg.tokens_per_step,
            include_partial=include_partial,
        )
        return tokens, mask

    def embed_tokens(self, tokens: Tensor, padding_mask: Tensor | None) -> Tensor:
        """Patch projection plus encoder positions (zero at padded tokens), in the projection's
        output dtype (the weights' dtype when they are held in bfloat16 or float16)."""
        x = self.post_extract_proj(tokens)
        pos = self.enc_sine_pos_embed(x.shape[1], x.device).to(x.dtype)
        if padding_mask is None:
            return x + pos
        return x + pos * (~padding_mask).unsqueeze(-1)

    def forward(self, tokens: Tensor, padding_mask: Tensor | None = None) -> list[Tensor]:
        """Inference: every encoder layer's hidden states [B, L, D] for a padded token batch."""
        if padding_mask is not None and bool(padding_mask.all(dim=1).any()):
            raise AudioError(
                "a clip has no complete token: it needs at least "
                f"{self.cfg.kernel_time} fbank frames"
            )
        return self.encoder(self.embed_tokens(tokens, padding_mask), padding_mask)

    def forward_pretrain(
        self, tokens: Tensor, kept: Tensor, masked: Tensor, *, mode: str = "mae"
    ) -> PretrainOutput:
        """Pretraining on an unpadded token batch given kept [B, K] and masked [B, M] indices.

        mode 'mae': the encoder sees kept tokens only, the decoder all positions (mask
        embedding at masked ones). mode 'ssast': masked tokens are replaced by the encoder mask
        embedding and everything runs through the encoder; the heads sit on its output.
        """
        if not self.has_decoder:
            raise MAEASTError("this model holds encoder weights only; pretraining needs a full checkpoint")
        batch, length, _ = tokens.shape
        dim = self.cfg.embed_dim
        x = self.dropout_input(self.post_extract_proj(tokens))
        enc_pos = self.enc_sine_pos_embed(length, x.device)
        if mode == "ssast":
            is_masked = torch.zeros(batch, length, dtype=torch.bool, device=x.device)
            is_masked.scatter_(1, masked, True)
            x = torch.where(is_masked.unsqueeze(-1), self.encoder_mask_emb.to(x.dtype), x)
            out = self.encoder.run(x + enc_pos)[0]
        elif mode == "mae":
            x = torch.gather(x + enc_pos, 1, kept.unsqueeze(-1).expand(-1, -1, dim))
            encoded = self.encoder.run(x)[0]
            full = self.decoder_mask_emb.to(encoded.dtype).expand(batch, length, dim).clone()
            full = full.scatter(1, kept.unsqueeze(-1).expand(-1, -1, dim), encoded)
            full = full + self.dec_sine_pos_embed(length, x.device)
            out = self.decoder.run(full)[0]
        else:
            raise ValueError(f"mode must be 'mae' or 'ssast', got {mode!r}")
        at_masked = torch.gather(out, 1, masked.unsqueeze(-1).expand(-1, -1, out.shape[-1]))
        target = torch.gather(tokens, 1, masked.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
        return PretrainOutput(
            reconstruction=self.final_proj_reconstruction(at_masked),
            classification=self.final_proj_classification(at_masked),
            target=target,
        )


def _init_bert(module: nn.Module) -> None:
    """BERT init as in fairseq: Linear weights N(0, 0.02), biases 0."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        nn.init.zeros_(module.bias)
