"""Exceptions that carry a message meant for the user, not a traceback from deep inside torch."""


class MAEASTError(ValueError):
    """Base class for every error this package raises on bad input."""


class ConfigError(MAEASTError):
    """A model/training configuration that cannot work."""


class CheckpointError(MAEASTError):
    """A checkpoint that cannot be read, is not MAE-AST, or is not trusted."""


class AudioError(MAEASTError):
    """Audio that cannot be decoded or used (empty, too short, NaN/Inf, wrong rate)."""
