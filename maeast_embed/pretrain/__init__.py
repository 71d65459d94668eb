"""MAE-AST pretraining: typed config, data pipeline, and the training loop (imported on first use)."""

from ..lazy import lazy_attributes

_PUBLIC = {"TrainConfig": ".config", "build_config": ".config", "train": ".loop", "TrainingError": ".loop"}

__all__ = list(_PUBLIC)


__getattr__ = lazy_attributes(__name__, _PUBLIC)
