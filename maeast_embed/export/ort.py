"""The onnxruntime backend: an exported graph (see `export.onnx`) run as the encoder."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError
from ..model import MAEAST
from .onnx import cached_onnx


class OnnxEncoder:
    """Every encoder layer of a model, run by onnxruntime on the CPU from its cached export."""

    def __init__(self, model: MAEAST, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise ConfigError(
                "the onnxruntime backend needs onnxruntime: pip install 'maeast-embed[onnx]'"
            ) from err
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.path = cached_onnx(model, "all")
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

    def __call__(self, waveforms: Tensor, lengths: Tensor) -> tuple[list[Tensor], list[int]]:
        """[B, N] float32 waveforms and [B] lengths -> per layer [B, T, D'] (tokens of a step
        concatenated) and the valid steps of each clip."""
        feeds = {"waveforms": waveforms.float().cpu().numpy(),
                 "lengths": lengths.cpu().numpy().astype(np.int64)}
        _, layers, steps = self.session.run(None, feeds)
        hidden = torch.from_numpy(layers)
        return list(hidden.unbind(0)), steps.tolist()
