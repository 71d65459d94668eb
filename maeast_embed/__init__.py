"""maeast-embed: a faithful, fast MAE-AST toolkit.

The public names below are imported on first use, so that light modules (the command line,
error types) do not pay for importing torch.
"""

from .lazy import lazy_attributes

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
    "load_embeddings": ".extract.reader",
}

__all__ = ["__version__", *_PUBLIC]


__getattr__ = lazy_attributes(__name__, _PUBLIC)
