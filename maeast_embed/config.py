"""Typed model configuration, presets, and conversion to/from the official fairseq cfg dicts."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

MASK_TYPES = ("random_mask", "random_mask_batched", "chunk_mask")


@dataclass(frozen=True)
class ModelConfig:
    """Shape and regularisation of an MAE-AST model (names follow the paper, not fairseq)."""

    kernel_time: int = 16
    kernel_chan: int = 16
    num_mel_bins: int = 128
    encoder_layers: int = 12
    embed_dim: int = 768
    ffn_dim: int = 3072
    num_heads: int = 12
    decoder_layers: int = 2
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    dropout_input: float = 0.1
    encoder_layerdrop: float = 0.05
    decoder_layerdrop: float = 0.0
    mask_prob: float = 0.75
    mask_type: str = "chunk_mask"
    max_token_length: int = 48000

    def __post_init__(self) -> None:
        if self.num_mel_bins % self.kernel_chan:
            raise ConfigError(
                f"kernel_chan={self.kernel_chan} must divide num_mel_bins={self.num_mel_bins}"
            )
        if self.kernel_time < 1 or self.kernel_chan < 1:
            raise ConfigError("patch kernel sizes must be positive")
        if self.embed_dim % self.num_heads:
            raise ConfigError(
                f"embed_dim={self.embed_dim} must be divisible by num_heads={self.num_heads}"
            )
        if self.embed_dim % 2:
            raise ConfigError("embed_dim must be even (sinusoidal positions)")
        if self.mask_type not in MASK_TYPES:
            raise ConfigError(f"mask_type must be one of {MASK_TYPES}, got {self.mask_type!r}")
        if not 0.0 < self.mask_prob < 1.0:
            raise ConfigError(f"mask_prob must be in (0, 1), got {self.mask_prob}")
        if self.encoder_layers < 1 or self.decoder_layers < 1:
            raise ConfigError("need at least one encoder layer and one decoder layer")

    @property
    def variant(self) -> str:
        """'frame' when a token spans every mel bin, else 'patch'."""
        return "frame" if self.kernel_chan == self.num_mel_bins else "patch"

    @property
    def patch_dim(self) -> int:
        return self.kernel_time * self.kernel_chan

    @property
    def tokens_per_step(self) -> int:
        """Tokens per time step (8 frequency patches for the 16x16 patch model, 1 for frames)."""
        return self.num_mel_bins // self.kernel_chan

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_official(self) -> dict[str, dict[str, Any]]:
        """The fairseq `cfg` dict (model + task) that the official code and s3prl read."""
        model = {
            "_name": "mae_ast",
            "ast_kernel_size_chan": self.kernel_chan,
            "ast_kernel_size_time": self.kernel_time,
            "ast_kernel_stride_chan": self.kernel_chan,
            "ast_kernel_stride_time": self.kernel_time,
            "encoder_layers": self.encoder_layers,
            "encoder_embed_dim": self.embed_dim,
            "encoder_ffn_embed_dim": self.ffn_dim,
            "encoder_attention_heads": self.num_heads,
            "activation_fn": "gelu",
            "layer_norm_first": False,
            "feature_grad_mult": 1.0,
            "use_post_enc_proj": False,
            "decoder_embed_dim": self.embed_dim,
            "decoder_layers": self.decoder_layers,
            "decoder_layerdrop": self.decoder_layerdrop,
            "dropout": self.dropout,
            "attention_dropout": self.attention_dropout,
            "activation_dropout": self.activation_dropout,
            "encoder_layerdrop": self.encoder_layerdrop,
            "dropout_input": self.dropout_input,
            "random_mask_prob": self.mask_prob,
            "mask_length": 10,
            "mask_selection": "static",
            "mask_other": 0.0,
            "no_mask_overlap": False,
            "mask_min_space": 0,
            "conv_pos": 128,
            "conv_pos_groups": 16,
            "checkpoint_activations": False,
            "max_token_length": self.max_token_length,
            "enc_sine_pos": True,
            "enc_conv_pos": False,
            "dec_sine_pos": True,
            "dec_conv_pos": False,
        }
        task = {
            "_name": "mae_ast_pretraining",
            "data": "",
            "sample_rate": 16000,
            "normalize": False,
            "enable_padding": False,
            "max_keep_size": None,
            "max_sample_size": None,
            "min_sample_size": 32000,
            "random_crop": True,
            "pad_audio": False,
            "feature_type": "fbank",
            "feature_rate": 100,
            "feature_dim": self.num_mel_bins,
            "deltas": False,
            "mask_spans": False,
            "mask_type": self.mask_type,
        }
        return {"model": model, "task": task}

    @classmethod
    def from_official(cls, cfg: dict[str, Any]) -> ModelConfig:
        """Build from a fairseq checkpoint's `cfg` (plain dicts); rejects what this port lacks."""
        try:
            model, task = cfg["model"], cfg["task"]
        except (KeyError, TypeError) as err:
            raise ConfigError("checkpoint cfg lacks the 'model'/'task' sections of MAE-AST") from err
        if "ast_kernel_size_time" not in model:
            raise ConfigError(
                f"checkpoint cfg.model is not an MAE-AST config (model name {model.get('_name')!r})"
            )
        unsupported = {
            "enc_conv_pos": False,
            "dec_conv_pos": False,
            "use_post_enc_proj": False,
            "layer_norm_first": False,
        }
        for key, expected in unsupported.items():
            if bool(model.get(key, expected)) != expected:
                raise ConfigError(f"unsupported MAE-AST variant: {key}={model[key]}")
        for key in ("enc_sine_pos", "dec_sine_pos"):
            if not model.get(key, False):
                raise ConfigError(f"unsupported MAE-AST variant: {key} is off")
        if model.get("activation_fn", "gelu") != "gelu":
            raise ConfigError(f"unsupported activation_fn {model['activation_fn']!r}")
        for axis in ("time", "chan"):
            if model[f"ast_kernel_stride_{axis}"] != model[f"ast_kernel_size_{axis}"]:
                raise ConfigError(f"overlapping patches (stride != kernel along {axis}) unsupported")
        if model.get("decoder_embed_dim", model["encoder_embed_dim"]) != model["encoder_embed_dim"]:
            raise ConfigError("decoder_embed_dim != encoder_embed_dim needs use_post_enc_proj")
        mask_type = task.get("mask_type", "random_mask")
        if mask_type not in MASK_TYPES:
            raise ConfigError(f"unsupported mask_type {mask_type!r}")
        return cls(
            kernel_time=int(model["ast_kernel_size_time"]),
            kernel_chan=int(model["ast_kernel_size_chan"]),
            num_mel_bins=int(task.get("feature_dim", 128)),
            encoder_layers=int(model["encoder_layers"]),
            embed_dim=int(model["encoder_embed_dim"]),
            ffn_dim=int(model["encoder_ffn_embed_dim"]),
            num_heads=int(model["encoder_attention_heads"]),
            decoder_layers=int(model["decoder_layers"]),
            dropout=float(model.get("dropout", 0.1)),
            attention_dropout=float(model.get("attention_dropout", 0.1)),
            activation_dropout=float(model.get("activation_dropout", 0.0)),
            dropout_input=float(model.get("dropout_input", 0.0)),
            encoder_layerdrop=float(model.get("encoder_layerdrop", 0.0)),
            decoder_layerdrop=float(model.get("decoder_layerdrop", 0.0)),
            mask_prob=float(model.get("random_mask_prob", 0.75)),
            mask_type=mask_type,
            max_token_length=int(model.get("max_token_length", 48000)),
        )


_BASE = ModelConfig()
_TINY = dict(encoder_layers=2, embed_dim=64, ffn_dim=128, num_heads=4, decoder_layers=1)

PRESETS: dict[str, ModelConfig] = {
    "patch": _BASE,
    "frame": _BASE.replace(kernel_time=2, kernel_chan=128, mask_type="random_mask"),
    "tiny-patch": _BASE.replace(**_TINY),
    "tiny-frame": _BASE.replace(kernel_time=2, kernel_chan=128, mask_type="random_mask", **_TINY),
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    """A named preset (patch, frame, tiny-patch, tiny-frame) with optional field overrides."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]

