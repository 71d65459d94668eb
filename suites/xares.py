"""MAE-AST as an X-ARES audio encoder.

`maeast-embed xares run` runs X-ARES with it at any model and options. X-ARES's runner also
builds `MaeAstEncoder()` (the packaged model) from this module's path, `python -m xares.run
maeast_suites/xares.py tasks/esc50_task.py`, where torchaudio can load audio (from torchaudio 2.9:
TorchCodec and FFmpeg); the module defines no other name ending in "Encoder", as it requires.
"""

from __future__ import annotations

from torch import Tensor

from maeast_embed.frontend import SAMPLE_RATE

from .baselines import FbankBaseline
from .engine import SuiteModel, batch_frames

__all__ = ["MaeAstEncoder"]


class _XaresForward:
    """X-ARES's encoder contract over a suite model's `frames`."""

    sampling_rate = SAMPLE_RATE

    def forward(self, wave: Tensor) -> Tensor:
        return batch_frames(self, wave, "expected a batch of 16 kHz mono waveforms [B, T]")


class MaeAstEncoder(_XaresForward, SuiteModel):
    """`forward(wave [B, T]) -> [B, T', output_dim]`: one frame per token step
    (`hop_size_in_ms`: 160 patch, 20 frame), each clip encoded as if alone, on the audio's device.

    `sampling_rate` is 16000; options as `maeast_suites.engine.SuiteModel` (float32 by default).
    """


class FbankXares(_XaresForward, FbankBaseline):
    """The `fbank` baseline (`maeast_suites.baselines`) as an X-ARES encoder: 128 values per 10 ms
    (not named "...Encoder": X-ARES takes the one class so named from this module)."""
