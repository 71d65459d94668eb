"""Typed model configuration, presets, and conversion to/from the official fairseq cfg dicts.

Loading is tolerant: every official cfg setting the forward pass does not use (mask type and
ratio, loss weights, dropout, data settings, other cfg sections) is accepted and kept, so that
`to_official` writes it back; only settings that change what the encoder computes are refused.
Whether a config can be *pretrained* with is a separate question (`pretraining_issues`).
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

MASK_TYPES = ("random_mask", "random_mask_batched", "chunk_mask", "chunk_mask_batched", "retain_spans")
SPAN_LENGTH = 10  # retain_spans: the fairseq span length (cfg.model.mask_length) the official code uses

# Official settings that change what the encoder computes: (section, key) -> (value assumed when
# the key is absent, the only value this port computes with, what the setting means).
INFERENCE_SETTINGS: dict[tuple[str, str], tuple[Any, Any, str]] = {
    ("task", "feature_type"): ("fbank", "fbank", "input features; this port computes Kaldi fbank"),
    ("task", "sample_rate"): (16000, 16000, "sample rate of the features; this port computes them at 16 kHz"),
    ("task", "feature_dim"): (128, 128, "mel bins; this port computes 128"),
    ("task", "deltas"): (False, False, "delta features appended to the fbank"),
    ("model", "layer_norm_first"): (False, False, "pre-LN transformer layers; this port is post-LN"),
    ("model", "activation_fn"): ("gelu", "gelu", "activation function"),
    ("model", "enc_sine_pos"): (False, True, "the encoder's sinusoidal positions"),
    ("model", "enc_conv_pos"): (False, False, "convolutional encoder positions"),
}
# Decoder settings this port cannot build: such a checkpoint loads its encoder only (inference).
DECODER_SETTINGS: dict[str, tuple[Any, Any]] = {  # key -> (value when absent, buildable value)
    "use_post_enc_proj": (False, False),
    "dec_sine_pos": (False, True),
    "dec_conv_pos": (False, False),
}
# retain_spans: the fairseq span options the official code passes, as this port implements them.
SPAN_SETTINGS: dict[str, Any] = {
    "mask_length": SPAN_LENGTH, "mask_selection": "static", "no_mask_overlap": False,
}
# Official entries the typed fields determine (never taken from `official`).
TYPED_KEYS = {
    "model": (
        "ast_kernel_size_chan", "ast_kernel_size_time", "ast_kernel_stride_chan", "ast_kernel_stride_time",
        "encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim", "encoder_attention_heads",
        "decoder_layers", "decoder_layerdrop", "dropout", "attention_dropout", "activation_dropout",
        "encoder_layerdrop", "dropout_input", "random_mask_prob", "max_token_length",
    ),
    "task": ("feature_dim", "mask_type"),
}


def mask_prob_error(mask_type: str, mask_prob: float) -> str | None:
    """Why `mask_prob` cannot drive `mask_type` (None when it can). For retain_spans it is the
    official span-start rate (mask_prob * L / 10 spans per clip), which may exceed 1."""
    spans = mask_type == "retain_spans"
    high = SPAN_LENGTH if spans else 1
    if not 0.0 < mask_prob < high:
        return f"mask_prob must be in (0, {high}){' for retain_spans' if spans else ''}, got {mask_prob}"
    return None


@dataclass(frozen=True)
class ModelConfig:
    """Shape and regularisation of an MAE-AST model (names follow the paper, not fairseq).

    `official` holds what a loaded checkpoint's cfg says beyond these fields (entries that differ
    from `to_official`'s defaults, other cfg sections such as the criterion's loss weights),
    verbatim; `to_official` writes it back. It takes no part in comparisons.
    """

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
    official: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

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

    def decoder_issue(self) -> str | None:
        """Why this port cannot build the checkpoint's decoder (None when it can)."""
        model = self.to_official()["model"]
        for key, (_, buildable) in DECODER_SETTINGS.items():
            if model[key] != buildable:
                return f"{key}={model[key]} (decoder built differently)"
        if model["decoder_embed_dim"] != self.embed_dim:
            return f"decoder_embed_dim={model['decoder_embed_dim']} differs from embed_dim={self.embed_dim}"
        return None

    def pretraining_issues(self) -> list[str]:
        """What stops pretraining with this config, each naming its setting (empty when nothing)."""
        issues = []
        if self.mask_type not in MASK_TYPES:
            issues.append(
                f"model.mask_type={self.mask_type!r} is not a mask type this port implements "
                f"(choose one of {', '.join(MASK_TYPES)})"
            )
        elif problem := mask_prob_error(self.mask_type, self.mask_prob):
            issues.append(f"model.{problem}")
        if self.mask_type == "retain_spans":
            model = self.to_official()["model"]
            for key, value in SPAN_SETTINGS.items():
                if model[key] != value:
                    issues.append(
                        f"{key}={model[key]!r} (checkpoint cfg.model): retain_spans is implemented with "
                        f"the official {key}={value!r} only; choose another model.mask_type"
                    )
        if problem := self.decoder_issue():
            issues.append(f"{problem}: this port cannot build that decoder")
        return issues

    def _default_official(self) -> dict[str, dict[str, Any]]:
        """The official cfg written for this config when no checkpoint said otherwise."""
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
            "mask_length": SPAN_LENGTH,
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

    def to_official(self) -> dict[str, Any]:
        """The fairseq `cfg` dict that the official code and s3prl read: model and task entries
        from these fields and defaults, with `official` (a loaded checkpoint's other settings and
        sections) written back over the defaults."""
        out = copy.deepcopy(self.official)
        for section, entries in self._default_official().items():
            typed = {k: entries[k] for k in TYPED_KEYS[section]}
            out[section] = {**entries, **out.get(section, {}), **typed}
        return out

    @classmethod
    def from_official(cls, cfg: dict[str, Any], *, source: str = "checkpoint") -> ModelConfig:
        """Build from a fairseq checkpoint's `cfg` (plain dicts). Refuses only what changes the
        encoder's output; warns about a mask type it does not know (inference never masks)."""
        try:
            model, task = cfg["model"], cfg["task"]
        except (KeyError, TypeError) as err:
            raise ConfigError("checkpoint cfg lacks the 'model'/'task' sections of MAE-AST") from err
        if "ast_kernel_size_time" not in model:
            raise ConfigError(
                f"checkpoint cfg.model is not an MAE-AST config (model name {model.get('_name')!r})"
            )
        absent_decoder = {key: absent for key, (absent, _) in DECODER_SETTINGS.items() if key not in model}
        sections = {"model": {**model, **absent_decoder}, "task": task}
        for (section, key), (absent, required, meaning) in INFERENCE_SETTINGS.items():
            value = sections[section].get(key, absent)
            if value != required:
                raise ConfigError(
                    f"unsupported MAE-AST variant: {key}={value!r} ({meaning}; needs {required!r}): "
                    "it changes the embeddings, so the checkpoint cannot be used here"
                )
        for axis in ("time", "chan"):
            if model[f"ast_kernel_stride_{axis}"] != model[f"ast_kernel_size_{axis}"]:
                raise ConfigError(
                    f"unsupported MAE-AST variant: overlapping patches (stride != kernel along {axis})"
                )
        mask_type = task.get("mask_type", "random_mask")
        if mask_type not in MASK_TYPES:
            warnings.warn(
                f"{source}: mask_type {mask_type!r} is unknown to this port; inference does not use "
                "it (pretraining from this checkpoint needs another model.mask_type)",
                stacklevel=2,
            )
        fields = dict(
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
            mask_type=str(mask_type),
            max_token_length=int(model.get("max_token_length", 48000)),
        )
        try:
            config = cls(**fields)
        except ConfigError as err:
            raise ConfigError(f"unsupported MAE-AST variant: {err}") from err
        defaults = config._default_official()
        official = {k: copy.deepcopy(v) for k, v in cfg.items() if k not in defaults}
        for section, entries in sections.items():
            rest = {
                k: copy.deepcopy(v) for k, v in entries.items()
                if k not in TYPED_KEYS[section] and defaults[section].get(k, ...) != v
            }
            if rest:
                official[section] = rest
        return config.replace(official=official)


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
