"""The toy tasks' audio, for X-ARES and MAEB alike: 1 s clips of a tone in loud noise, class
`low` (300-600 Hz) or `high` (600-1200 Hz), so near the boundary the classes are hard to tell."""

from __future__ import annotations

import numpy as np

LABELS = ("low", "high")
SR = 16000


def toy_clips(count: int, seed: int) -> list[tuple[np.ndarray, int]]:
    """`count` (waveform float32, label index) pairs, classes alternating."""
    rng = np.random.default_rng(seed)
    t = np.arange(SR) / SR
    clips = []
    for i in range(count):
        label = i % 2
        freq = rng.uniform(300, 600) if label == 0 else rng.uniform(600, 1200)
        tone = np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
        wave = 0.05 * tone + 0.2 * rng.standard_normal(t.size)
        clips.append((wave.astype(np.float32), label))
    return clips
