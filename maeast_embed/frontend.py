"""Batched Kaldi log-mel fbank (torchaudio.compliance.kaldi.fbank with MAE-AST's arguments),
checkpoint normalisation, and the patch unfold to time-major tokens.

Every function takes a padded batch and works on any device and float dtype.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import AudioError

SAMPLE_RATE = 16000
FRAME_LENGTH = 400  # 25 ms
FRAME_SHIFT = 160  # 10 ms
N_FFT = 512  # next power of two above FRAME_LENGTH
PREEMPHASIS = 0.97
LOW_FREQ = 20.0
NORM_EPS = 1e-5  # BatchNorm2d eps


def num_frames(num_samples: Tensor | int) -> Tensor | int:
    """Frames Kaldi makes with snip_edges=True: 1 + (N - 400) // 160, or 0 when N < 400."""
    if isinstance(num_samples, int):
        return 0 if num_samples < FRAME_LENGTH else 1 + (num_samples - FRAME_LENGTH) // FRAME_SHIFT
    return torch.where(
        num_samples >= FRAME_LENGTH,
        1 + (num_samples - FRAME_LENGTH).div(FRAME_SHIFT, rounding_mode="floor"),
        torch.zeros_like(num_samples),
    )


def _kaldi_mel(freq):
    return 1127.0 * (1.0 + freq / 700.0).log() if isinstance(freq, Tensor) else (
        1127.0 * math.log(1.0 + freq / 700.0)
    )


@lru_cache(maxsize=8)
def _mel_matrix_cpu(num_mel_bins: int) -> Tensor:
    """[N_FFT // 2 + 1, num_mel_bins] triangular Kaldi mel filters (last FFT bin unused).

    Computed in float32 with the same arithmetic as Kaldi/torchaudio so that near-silent
    bands (log energies close to the float32 floor) agree too.
    """
    mel = _kaldi_mel((SAMPLE_RATE / N_FFT) * torch.arange(N_FFT // 2)).unsqueeze(0)
    mel_low, mel_high = _kaldi_mel(LOW_FREQ), _kaldi_mel(SAMPLE_RATE / 2)
    delta = (mel_high - mel_low) / (num_mel_bins + 1)
    index = torch.arange(num_mel_bins).unsqueeze(1)
    left, centre, right = (mel_low + (index + k) * delta for k in (0.0, 1.0, 2.0))
    up = (mel - left) / (centre - left)
    down = (right - mel) / (right - centre)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return F.pad(banks, (0, 1)).T.contiguous()


@lru_cache(maxsize=8)
def _povey_window_cpu() -> Tensor:
    return torch.hann_window(FRAME_LENGTH, periodic=False).pow(0.85)


def kaldi_fbank(
    waveforms: Tensor,
    lengths: Tensor | None = None,
    *,
    num_mel_bins: int = 128,
    sample_rate: int = SAMPLE_RATE,
) -> tuple[Tensor, Tensor]:
    """Log-mel fbank of a padded batch of 16 kHz mono waveforms in [-1, 1].

    Args:
        waveforms: [B, N] float samples (padding after each clip's end is ignored).
        lengths: [B] valid samples per clip; None means every clip fills N.

    Returns:
        fbank [B, T, num_mel_bins] (rows past a clip's frames are zero) and frame lengths [B].
    """
    if sample_rate != SAMPLE_RATE:
        raise AudioError(
            f"the MAE-AST frontend needs {SAMPLE_RATE} Hz audio, got {sample_rate} Hz: resample first"
        )
    if waveforms.dim() != 2:
        raise AudioError(f"expected a [batch, samples] waveform tensor, got shape {tuple(waveforms.shape)}")
    if not waveforms.is_floating_point():
        raise AudioError(f"expected float waveforms in [-1, 1], got dtype {waveforms.dtype}")
    batch, total = waveforms.shape
    device = waveforms.device
    if lengths is None:
        lengths = torch.full((batch,), total, dtype=torch.long, device=device)
    lengths = lengths.to(device=device, dtype=torch.long)
    if bool((lengths < FRAME_LENGTH).any()):
        shortest = int(lengths.min())
        raise AudioError(
            f"audio of {shortest} samples is shorter than one 25 ms fbank frame ({FRAME_LENGTH} samples)"
        )
    if bool((lengths > total).any()):
        raise AudioError("a length exceeds the padded waveform width")
    if not bool(torch.isfinite(waveforms).all()):
        raise AudioError("waveform contains NaN or Inf samples")

    frame_lengths = num_frames(lengths)
    frames = waveforms.float().unfold(-1, FRAME_LENGTH, FRAME_SHIFT)  # [B, T, 400]
    frames = frames - frames.mean(dim=-1, keepdim=True)
    previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
    frames = (frames - PREEMPHASIS * previous) * _povey_window_cpu().to(device)
    power = torch.fft.rfft(frames, n=N_FFT).abs().pow(2.0)
    mel_energies = power @ _mel_matrix_cpu(num_mel_bins).to(device)
    fbank = mel_energies.clamp_min(torch.finfo(torch.float32).eps).log()
    valid = torch.arange(fbank.shape[1], device=device) < frame_lengths.unsqueeze(1)
    return fbank * valid.unsqueeze(-1), frame_lengths


class FbankNorm(nn.BatchNorm2d):
    """MAE-AST's `batch_norm`: BatchNorm2d(1, affine=False) over [B, 1, T, F], times 0.5.

    In eval mode this is `0.5 * (x - running_mean) / sqrt(running_var + 1e-5)` with the
    checkpoint's scalar statistics; in train mode it uses (and updates) batch statistics.
    """

    def __init__(self) -> None:
        super().__init__(1, affine=False, eps=NORM_EPS)

    def forward(self, fbank: Tensor) -> Tensor:  # [B, T, F] -> [B, T, F]
        return super().forward(fbank.unsqueeze(1)).squeeze(1) * 0.5


def patchify(features: Tensor, kernel_time: int, kernel_chan: int) -> Tensor:
    """[B, T, F] -> time-major tokens [B, (T // kt) * (F // kc), kt * kc] (nn.Unfold order).

    Token index = time_block * (F // kc) + freq_block; inside a token, t_off * kc + f_off.
    Trailing frames that do not fill a patch are dropped.
    """
    batch, frames, chans = features.shape
    steps = frames // kernel_time
    x = features[:, : steps * kernel_time].reshape(
        batch, steps, kernel_time, chans // kernel_chan, kernel_chan
    )
    return x.transpose(2, 3).reshape(batch, steps * (chans // kernel_chan), kernel_time * kernel_chan)


def unpatchify(tokens: Tensor, kernel_time: int, kernel_chan: int, num_mel_bins: int = 128) -> Tensor:
    """Inverse of `patchify`: [B, L, kt * kc] -> [B, (L // per_step) * kt, F]."""
    batch, length, _ = tokens.shape
    per_step = num_mel_bins // kernel_chan
    x = tokens.reshape(batch, length // per_step, per_step, kernel_time, kernel_chan)
    return x.transpose(2, 3).reshape(batch, -1, num_mel_bins)


def token_padding_mask(
    frame_lengths: Tensor,
    num_tokens: int,
    kernel_time: int,
    tokens_per_step: int,
    *,
    include_partial: bool,
) -> Tensor | None:
    """[B, L] bool, True at padded tokens; None when no token is padded.

    include_partial=False treats each clip as it would be alone (a trailing partial patch is
    dropped); include_partial=True is the reference (s3prl) rule: ceil(frames / kt) steps valid
    whenever the batch has padding, so a zero-padded partial patch counts as a real token.
    """
    if include_partial:
        if bool((frame_lengths == frame_lengths.max()).all()):
            return None
        steps = (frame_lengths + kernel_time - 1).div(kernel_time, rounding_mode="floor")
    else:
        steps = frame_lengths.div(kernel_time, rounding_mode="floor")
    valid = steps * tokens_per_step
    if bool((valid >= num_tokens).all()):
        return None
    return torch.arange(num_tokens, device=frame_lengths.device) >= valid.unsqueeze(1)


def min_samples_for_tokens(kernel_time: int, steps: int = 1) -> int:
    """Fewest samples that give `steps` full token time steps."""
    return FRAME_LENGTH + (steps * kernel_time - 1) * FRAME_SHIFT


def token_step_seconds(kernel_time: int) -> float:
    """Hop between token time steps (0.16 s for patches, 0.02 s for frame pairs)."""
    return kernel_time * FRAME_SHIFT / SAMPLE_RATE


def token_centre_seconds(steps: int, kernel_time: int) -> Tensor:
    """Centre, in seconds, of the audio each token time step covers (float64)."""
    first = torch.arange(steps, dtype=torch.float64) * kernel_time * FRAME_SHIFT
    last = first + (kernel_time - 1) * FRAME_SHIFT + FRAME_LENGTH
    return (first + last) / 2 / SAMPLE_RATE


__all__ = [
    "SAMPLE_RATE",
    "FRAME_LENGTH",
    "FRAME_SHIFT",
    "FbankNorm",
    "kaldi_fbank",
    "num_frames",
    "patchify",
    "unpatchify",
    "token_padding_mask",
    "min_samples_for_tokens",
    "token_step_seconds",
    "token_centre_seconds",
]
