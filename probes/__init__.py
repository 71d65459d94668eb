"""Linear-probe and fine-tuning evaluation of MAE-AST representations (`maeast-embed probe`).

The names below are imported on first use (the command line lists `probe` without torch).
"""

from importlib import import_module

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


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'probes' has no attribute {name!r}")
    value = getattr(import_module(_PUBLIC[name], __name__), name)
    globals()[name] = value
    return value
