"""The `fbank` baseline: the log-mel filterbank MAE-AST reads (Kaldi fbank, 128 bins, 10 ms hop,
the packaged model's input normalisation), one frame per 10 ms, no learned weights. What a
suite's score owes to the encoder is its distance from this row."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from maeast_embed.checkpoint import DEFAULT_MODEL, load_model
from maeast_embed.frontend import FRAME_LENGTH, FRAME_SHIFT, SAMPLE_RATE, FbankNorm, kaldi_fbank

FBANK = "fbank"
NUM_MEL_BINS = 128


class FbankBaseline(torch.nn.Module):
    """`frames(clips) -> [T, 128]` per 16 kHz mono clip (a clip shorter than one 25 ms frame is
    zero-padded to one), with `output_dim` and `hop_size_in_ms` as `SuiteModel` has them."""

    output_dim = NUM_MEL_BINS
    hop_size_in_ms = FRAME_SHIFT * 1000 / SAMPLE_RATE
    first_centre_ms = FRAME_LENGTH / 2 * 1000 / SAMPLE_RATE

    def __init__(self) -> None:
        super().__init__()
        self.norm = FbankNorm()
        self.norm.load_state_dict(load_model(DEFAULT_MODEL, progress=False).batch_norm.state_dict())
        self.norm.eval()

    @torch.no_grad()
    def frames(self, waveforms: Sequence[Tensor]) -> list[Tensor]:
        out = []
        for wave in waveforms:  # one clip at a time: no padding can reach another clip's frames
            wave = torch.as_tensor(wave, dtype=torch.float32).reshape(-1).cpu()
            if wave.numel() < FRAME_LENGTH:
                wave = torch.nn.functional.pad(wave, (0, FRAME_LENGTH - wave.numel()))
            fbank, _ = kaldi_fbank(wave[None], num_mel_bins=NUM_MEL_BINS)
            out.append(self.norm.eval()(fbank)[0])
        return out
