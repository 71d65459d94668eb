"""maeast-embed: a faithful, fast MAE-AST toolkit."""

__version__ = "0.1.0"

from .checkpoint import DEFAULT_MODEL, load_model, save_official  # noqa: E402
from .config import ModelConfig, preset  # noqa: E402
from .errors import AudioError, CheckpointError, ConfigError, MAEASTError  # noqa: E402
from .model import MAEAST  # noqa: E402

__all__ = [
    "__version__",
    "MAEAST",
    "ModelConfig",
    "preset",
    "DEFAULT_MODEL",
    "load_model",
    "save_official",
    "MAEASTError",
    "AudioError",
    "CheckpointError",
    "ConfigError",
]
