"""Exceptions that carry a message meant for the user, not a traceback from deep inside torch."""


class MAEASTError(ValueError):
    """Base class for every error this package raises on bad input."""


class ConfigError(MAEASTError):
    """A model/training configuration that cannot work."""


class CheckpointError(MAEASTError):
    """A checkpoint that cannot be read, is not MAE-AST, or is not trusted."""


class AudioError(MAEASTError):
    """Audio that cannot be decoded or used (empty, too short, NaN/Inf, wrong rate)."""


class OutputError(MAEASTError, OSError):
    """A file this package writes (embeddings, manifest, spool, cache, report, checkpoint,
    metrics) that cannot be written: a full disk, a read-only folder, no permission. The message
    names the path; `errno` and `filename` are those of the OSError underneath. Being an OSError
    too, code that tolerates write failures keeps catching it."""

    def __init__(self, message: str, errno: int | None = None, filename: str | None = None) -> None:
        super().__init__(message)
        self.errno, self.filename = errno, filename

    def __str__(self) -> str:
        return str(self.args[0])
