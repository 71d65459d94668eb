"""What to extract and how: the options of one extraction run."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from ..features import LayerSpec
from .launch import shard_from_environment

AUTO_TIMEOUT_BASE = 60.0  # seconds, plus
AUTO_TIMEOUT_FACTOR = 10.0  # x the duration of the audio being decoded
FORMATS = ("npz", "parquet", "webdataset")
STORAGE_DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class ExtractOptions:
    """What to extract and how to run (the embedder holds device, dtype, batch and chunk size).

    Files longer than `stream_seconds` are never held whole: they are read in blocks of
    `block_seconds`, frame outputs are spooled to disk and clip outputs pooled on the fly.

    `file_timeout` bounds each decoding step (a whole file, or one block of a streamed file):
    None (auto) allows 60 s plus 10 x the audio's duration, a number that many seconds, 0 no
    limit. A step past its limit makes the file a failure (see `decoding`).
    """

    granularity: str = "frame"
    layer: LayerSpec = "last"
    pool: str = "mean"
    freq_pool: str = "concat"
    num_workers: int = 0
    overwrite: bool = False
    shard: tuple[int, int] = (0, 1)
    stream_seconds: float = 600.0
    block_seconds: float = 120.0
    file_timeout: float | None = None
    format: str = "npz"  # npz: one file per input; parquet, webdataset: parts of many clips
    storage_dtype: str = "float32"  # of the stored embeddings (timestamps stay float64)
    part_size: int | None = None  # clips per part (parquet, webdataset); None: about 256 MB

    def __post_init__(self) -> None:
        if self.granularity not in ("clip", "frame"):
            raise ConfigError(f"granularity must be 'clip' or 'frame', got {self.granularity!r}")
        if self.pool not in ("mean", "meanmax"):
            raise ConfigError(f"pool must be 'mean' or 'meanmax', got {self.pool!r}")
        if self.freq_pool not in ("concat", "mean"):
            raise ConfigError(f"freq_pool must be 'concat' or 'mean', got {self.freq_pool!r}")
        if self.num_workers < 0:
            raise ConfigError("num_workers must be 0 (one decoding thread, none with file_timeout=0) or more")
        index, count = self.shard
        if count < 1 or not 0 <= index < count:
            raise ConfigError(f"shard must be I/N with 0 <= I < N, got {index}/{count}")
        if self.stream_seconds <= 0 or self.block_seconds <= 0:
            raise ConfigError("stream_seconds and block_seconds must be positive")
        if self.format not in FORMATS:
            raise ConfigError(f"format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.storage_dtype not in STORAGE_DTYPES:
            raise ConfigError(f"storage_dtype must be float32 or float16, got {self.storage_dtype!r}")
        if self.part_size is not None and self.part_size < 1:
            raise ConfigError(f"part_size must be at least 1, got {self.part_size}")
        if self.file_timeout is not None and not self.file_timeout >= 0:
            raise ConfigError(f"file_timeout must be 0 (no limit), a number of seconds or None (auto), "
                              f"got {self.file_timeout!r}")

    def decode_limit(self, seconds: float | None) -> float | None:
        """Seconds one decoding step of `seconds` of audio may take (None: no limit; with
        `seconds` None, not known yet, the auto limit's constant part)."""
        if self.file_timeout is None:
            return AUTO_TIMEOUT_BASE + AUTO_TIMEOUT_FACTOR * (seconds or 0.0)
        return self.file_timeout or None


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' (0-based I) -> (I, N); 'auto' -> this process's shard of a torchrun/SLURM launch."""
    if text == "auto":
        return shard_from_environment()
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError as err:
        raise ConfigError(f"shard must look like I/N (e.g. 0/4), got {text!r}") from err
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"shard must be I/N with 0 <= I < N, got {text!r}")
    return index, count




def parse_timeout(text: str) -> float | None:
    """'auto' -> None (60 s + 10 x the duration), '0' -> 0.0 (no limit), 'S' -> S seconds."""
    if text == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise ConfigError(f"--file-timeout must be auto, 0 (no limit) or a number of seconds, got {text!r}")
    return value
