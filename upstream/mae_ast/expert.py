"""s3prl `UpstreamExpert` for MAE-AST, thin over maeast_embed's batched frontend and model.

It reproduces s3prl's own `mae_ast` port (the code SUPERB numbers were made with): Kaldi fbank
per clip, zero-padded to the batch's longest clip, the checkpoint's BatchNorm, and the
reference's batch-dependent token padding rule (a clip's trailing partial patch is a valid
token when the batch is padded). Patch tokens are regrouped per time step, [B, T/16, 8 * D].

Precision: float32 by default (parity with the reference). `dtype` (or `MAEAST_DTYPE` under
s3prl, which passes no options) = 'bfloat16', 'float16' or 'auto' (bfloat16 where the device has
fast bf16 units, else float32) runs the encoder under autocast, so the upstream stays trainable
for s3prl's fine-tuning (`-f`); int8 is for frozen extraction (`maeast-embed extract`).

Short clips: a clip needs at least 400 samples (one 25 ms fbank frame), and the longest clip of
a batch must fill one token time step (2800 samples for the patch model, 560 for the frame
model); otherwise `AudioError` is raised. Shorter clips inside a longer batch are handled as
the reference handles them (their one partial patch is a token).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

from maeast_embed.checkpoint import load_model
from maeast_embed.errors import AudioError, CheckpointError, ConfigError
from maeast_embed.frontend import FRAME_LENGTH, FRAME_SHIFT, kaldi_fbank, min_samples_for_tokens
from maeast_embed.precision import compute_dtype, resolve_dtype

TRUST_ENV = "MAEAST_TRUST_CHECKPOINT"
DTYPE_ENV = "MAEAST_DTYPE"
UPSTREAM_DTYPES = ("float32", "bfloat16", "float16", "auto")


def trust_from_env() -> bool:
    """`MAEAST_TRUST_CHECKPOINT=1` allows arbitrary unpickling (s3prl passes no such option)."""
    return os.environ.get(TRUST_ENV, "").strip().lower() in ("1", "true", "yes")


class UpstreamExpert(nn.Module):
    """forward(list of 1-D 16 kHz float tensors) -> {'hidden_states': [layers], 'last_hidden_state'}.

    Every hidden state is [B, T', tokens_per_step * D] with T' = len(range(0, max_len, rate))
    at most, rate = `get_downsample_rates()` (2560 samples patch, 320 frame).
    """

    def __init__(self, ckpt: str, dtype: str | None = None) -> None:
        super().__init__()
        self.dtype = dtype or os.environ.get(DTYPE_ENV, "").strip() or "float32"
        if self.dtype not in UPSTREAM_DTYPES:
            raise ConfigError(
                f"the s3prl upstream's dtype ({DTYPE_ENV}) must be one of {', '.join(UPSTREAM_DTYPES)}; "
                f"got {self.dtype!r}"
            )
        trust = trust_from_env()
        try:
            self.model = load_model(ckpt, trust_checkpoint=trust)
        except CheckpointError as err:
            if trust or "trust" not in str(err):
                raise
            raise CheckpointError(f"{err} Under s3prl, set {TRUST_ENV}=1 to allow it.") from err
        # As in the reference: every layer runs, so hidden-state indices are stable (-f too).
        self.model.encoder.layerdrop = 0.0
        cfg = self.model.cfg
        self.downsample_rate = cfg.kernel_time * FRAME_SHIFT
        self.min_batch_samples = min_samples_for_tokens(cfg.kernel_time)

    def get_downsample_rates(self, key: str | None = None) -> int:
        return self.downsample_rate

    def compute_dtype(self, device: torch.device) -> torch.dtype | None:
        """The autocast dtype for `device` (None: float32, no autocast)."""
        name = resolve_dtype(self.dtype, device)  # no model: auto never means int8 here
        return None if name == "float32" else compute_dtype(name)

    def forward(self, wavs: list[Tensor]) -> dict[str, Tensor | list[Tensor]]:
        lengths = self._check(wavs)
        cfg = self.model.cfg
        padded = pad_sequence([wav.float() for wav in wavs], batch_first=True)
        with torch.autocast(padded.device.type, enabled=False):  # fp16 power spectra overflow
            fbank, frame_lengths = kaldi_fbank(padded, lengths, num_mel_bins=cfg.num_mel_bins)
        tokens, padding_mask = self.model.tokenize(fbank, frame_lengths, include_partial=True)
        dtype = self.compute_dtype(padded.device)
        with torch.autocast(padded.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            hidden = [h.float() for h in self.model(tokens, padding_mask)]
        steps = len(range(0, int(lengths.max()), self.downsample_rate))
        batch, dim = tokens.shape[0], cfg.tokens_per_step * cfg.embed_dim
        hidden_states = [h.reshape(batch, -1, dim)[:, :steps] for h in hidden]
        return {"hidden_states": hidden_states, "last_hidden_state": hidden_states[-1]}

    def _check(self, wavs: list[Tensor]) -> Tensor:
        if not isinstance(wavs, (list, tuple)) or not wavs:
            raise AudioError("the MAE-AST upstream expects a non-empty list of 1-D waveform tensors")
        bad = [i for i, wav in enumerate(wavs) if not torch.is_tensor(wav) or wav.dim() != 1]
        if bad:
            raise AudioError(f"waveforms must be 1-D tensors of 16 kHz samples; clip {bad[0]} is not")
        lengths = torch.tensor([wav.numel() for wav in wavs], device=wavs[0].device)
        too_short = (lengths < FRAME_LENGTH).nonzero().flatten().tolist()
        if too_short:
            raise AudioError(
                f"clip {too_short[0]} of the batch has {int(lengths[too_short[0]])} samples; MAE-AST needs "
                f"at least {FRAME_LENGTH} (one 25 ms fbank frame at 16 kHz)"
            )
        if int(lengths.max()) < self.min_batch_samples:
            raise AudioError(
                f"the longest clip of the batch has {int(lengths.max())} samples, shorter than one "
                f"{self.model.cfg.variant} token step ({self.min_batch_samples} samples at 16 kHz)"
            )
        return lengths
