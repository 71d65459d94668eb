"""Small, deterministic test data shared by the test modules: checkpoints and audio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from maeast_embed.checkpoint import save_official
from maeast_embed.config import preset
from maeast_embed.model import MAEAST

SR = 16000


def make_model(name: str = "tiny-patch", seed: int = 0, **overrides) -> MAEAST:
    """A random-weight model with non-trivial normalisation statistics."""
    torch.manual_seed(seed)
    model = MAEAST(preset(name, **overrides))
    with torch.no_grad():
        model.batch_norm.running_mean.fill_(-6.5)
        model.batch_norm.running_var.fill_(10.0)
        model.batch_norm.num_batches_tracked.fill_(1000)
    return model.eval()


def make_checkpoint(path: Path, name: str = "tiny-patch", seed: int = 0, **overrides) -> Path:
    """Write a random-weight model in the official fairseq layout; returns the path."""
    save_official(make_model(name, seed, **overrides), path)
    return path


def tone(seconds: float, freq: float = 440.0, sr: int = SR, amp: float = 0.3, seed: int = 0) -> np.ndarray:
    """A sine with a little noise (float32, mono)."""
    t = np.arange(int(round(seconds * sr))) / sr
    rng = np.random.default_rng(seed)
    return (amp * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def noise(seconds: float, sr: int = SR, amp: float = 0.1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (amp * rng.standard_normal(int(round(seconds * sr)))).astype(np.float32)


def chirp(seconds: float, f0: float = 200.0, f1: float = 4000.0, sr: int = SR) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))
    return (0.3 * np.sin(phase)).astype(np.float32)


def write_audio(path: Path, data: np.ndarray, sr: int = SR, subtype: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, sr, subtype=subtype)
    return path


def child_venv(root: Path) -> tuple[Path, Path]:
    """A throw-away venv that sees the packages of the interpreter running the tests (a venv
    made with system_site_packages from inside a venv would see the base interpreter's instead):
    a .pth in its site-packages adds this interpreter's site dirs, .pth files included.
    Returns (its python, its site-packages)."""
    import site
    import sys
    import venv

    venv.create(root, with_pip=False)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    child_site = root / "lib" / version / "site-packages"
    dirs = [*site.getsitepackages(), *([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])]
    (child_site / "_maeast_test_parent_site.pth").write_text(
        "import site; " + "; ".join(f"site.addsitedir({d!r})" for d in dirs) + "\n"
    )
    return root / "bin" / "python", child_site
