"""MAE-AST pretraining: typed config, data pipeline, and the training loop (imported on first use)."""

from importlib import import_module

_PUBLIC = {"TrainConfig": ".config", "build_config": ".config", "train": ".loop", "TrainingError": ".loop"}

__all__ = list(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'maeast_embed.pretrain' has no attribute {name!r}")
    value = getattr(import_module(_PUBLIC[name], __name__), name)
    globals()[name] = value
    return value
