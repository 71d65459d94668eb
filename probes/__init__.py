"""Linear-probe and fine-tuning evaluation of MAE-AST representations (`maeast-embed probe`)."""

from .datasets import Clip, ProbeDataset, ProbeWarning, Split, load_dataset, make_splits, read_audio
from .run import RunConfig, run_probe

__all__ = [
    "Clip",
    "ProbeDataset",
    "ProbeWarning",
    "Split",
    "load_dataset",
    "make_splits",
    "read_audio",
    "RunConfig",
    "run_probe",
]
