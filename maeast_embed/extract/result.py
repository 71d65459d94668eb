"""What embedding one job gave: its arrays, duration and frame count, or the reason it failed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .jobs import Job
from .npz import FrameSpool


@dataclass
class Result:
    job: Job
    embedding: np.ndarray | FrameSpool | None = None
    timestamps: np.ndarray | None = None
    duration: float | None = None
    frames: int | None = None
    error: str | None = None
