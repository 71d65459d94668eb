"""Linear-probe and fine-tuning evaluation of MAE-AST representations (`maeast-embed probe`).

The names below are imported on first use (the command line lists `probe` without torch).
"""

from maeast_embed.lazy import lazy_attributes

_PUBLIC = {
    "Clip": ".datasets",
    "ProbeDataset": ".datasets",
    "ProbeWarning": ".datasets",
    "Split": ".datasets",
    "load_dataset": ".datasets",
    "make_splits": ".datasets",
    "read_audio": ".datasets",
    "RunConfig": ".run",
    "run_probe": ".run",
}

__all__ = list(_PUBLIC)


__getattr__ = lazy_attributes(__name__, _PUBLIC)
