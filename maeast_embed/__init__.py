"""maeast-embed: a faithful, fast MAE-AST toolkit.

The public names below are imported on first use, so that light modules (the command line,
error types) do not pay for importing torch.
"""

from importlib import import_module

__version__ = "0.1.0"

_PUBLIC = {
    "MAEAST": ".model",
    "ModelConfig": ".config",
    "preset": ".config",
    "DEFAULT_MODEL": ".defaults",
    "load_model": ".checkpoint",
    "save_official": ".checkpoint",
    "MAEASTError": ".errors",
    "AudioError": ".errors",
    "CheckpointError": ".errors",
    "ConfigError": ".errors",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'maeast_embed' has no attribute {name!r}")
    value = getattr(import_module(_PUBLIC[name], __name__), name)
    globals()[name] = value
    return value
