"""MAE-AST pretraining: typed config, data pipeline, and the training loop."""

from .config import TrainConfig, build_config
from .loop import TrainingError, train

__all__ = ["TrainConfig", "build_config", "train", "TrainingError"]
