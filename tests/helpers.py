"""Small, deterministic test data shared by the test modules: checkpoints and audio."""

from __future__ import annotations

import textwrap
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


def reference_checkpoint(path: Path, name: str) -> Path:
    """A random checkpoint built by s3prl's own MAE_AST class, saved in the official fairseq
    layout (skips the calling test where s3prl is not installed)."""
    from types import SimpleNamespace

    import pytest

    s3prl_mae = pytest.importorskip("s3prl.upstream.mae_ast.mae_ast")
    torch.manual_seed(11)
    cfg = preset(name).to_official()
    ref = s3prl_mae.MAE_AST(SimpleNamespace(**cfg["model"]), SimpleNamespace(**cfg["task"]))
    with torch.no_grad():  # non-trivial normalisation statistics
        ref.batch_norm.running_mean.fill_(-5.5)
        ref.batch_norm.running_var.fill_(12.0)
    torch.save({"cfg": cfg, "model": ref.state_dict()}, path)
    return path


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


class SmallDisk:
    """A small tmpfs mounted on `path` for the full-disk tests (needs root, or CAP_SYS_ADMIN).
    `fill(room)` leaves about `room` bytes free (a ballast file), `free()` removes the ballast."""

    def __init__(self, path: Path, size_kb: int) -> None:
        import subprocess

        path.mkdir(parents=True, exist_ok=True)
        self.path, self.size = path, size_kb * 1024
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise OSError(f"cannot mount a tmpfs on {path}: {result.stderr.strip()}")
        self.ballast = path / ".ballast"

    def available(self) -> int:
        import os

        stat = os.statvfs(self.path)
        return stat.f_bavail * stat.f_frsize

    def fill(self, room: int) -> None:
        """Grow the ballast until at most `room` bytes (rounded to pages) are left."""
        import os

        with open(self.ballast, "ab") as handle:
            while self.available() > room:
                try:
                    handle.write(bytes(min(self.available() - room, 1 << 20)) or b"\0")
                    handle.flush()
                    os.fsync(handle.fileno())
                except OSError:
                    break

    def free(self) -> None:
        self.ballast.unlink(missing_ok=True)

    def unmount(self) -> None:
        import subprocess

        subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


class InjectedFullDisk:
    """The SmallDisk interface without a filesystem: files under `path` opened by this process
    (open, os.fdopen, tempfile.TemporaryFile, os.write) fail with ENOSPC once `fill(room)`'s byte
    budget is spent, as a full disk makes them fail. Installed with a pytest monkeypatch."""

    def __init__(self, path: Path, monkeypatch) -> None:
        import builtins
        import errno
        import os
        import tempfile

        path.mkdir(parents=True, exist_ok=True)
        self.path, self.room = path.resolve(), None
        disk = self

        def spend(count: int) -> int:
            """How many of `count` bytes fit; raises ENOSPC when none does."""
            if disk.room is None:
                return count
            fits = min(count, disk.room)
            if fits == 0 and count:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            disk.room -= fits
            return fits

        class Counted:
            def __init__(self, handle) -> None:
                self._handle = handle

            def write(self, data):
                size = len(memoryview(data).cast("B")) if not isinstance(data, str) else len(data.encode())
                fits = spend(size)
                if fits < size:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return self._handle.write(data)

            def __getattr__(self, name):
                return getattr(self._handle, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self._handle.close()

            def __iter__(self):
                return iter(self._handle)

        def under(name) -> bool:
            try:
                return Path(os.path.abspath(name)).resolve().is_relative_to(disk.path)
            except (TypeError, ValueError, OSError):
                return False

        real_open, real_fdopen, real_write = builtins.open, os.fdopen, os.write
        real_temporary = tempfile.TemporaryFile

        def fd_under(fd: int) -> bool:
            return under(os.readlink(f"/proc/self/fd/{fd}")) if os.path.isdir("/proc/self/fd") else True

        def fake_open(file, mode="r", *args, **kwargs):
            handle = real_open(file, mode, *args, **kwargs)
            writes = any(c in mode for c in "wax+") and isinstance(file, str | os.PathLike)
            return Counted(handle) if writes and under(file) else handle

        def fake_fdopen(fd, mode="r", *args, **kwargs):
            handle = real_fdopen(fd, mode, *args, **kwargs)
            return Counted(handle) if any(c in mode for c in "wax+") and fd_under(fd) else handle

        def fake_write(fd, data):
            if fd_under(fd):
                fits = spend(len(data))
                return real_write(fd, memoryview(data)[:fits])
            return real_write(fd, data)

        def fake_temporary(*args, dir=None, **kwargs):
            handle = real_temporary(*args, dir=dir, **kwargs)
            return Counted(handle) if dir is not None and under(dir) else handle

        monkeypatch.setattr(builtins, "open", fake_open)
        monkeypatch.setattr(os, "fdopen", fake_fdopen)
        monkeypatch.setattr(os, "write", fake_write)
        monkeypatch.setattr(tempfile, "TemporaryFile", fake_temporary)

    def fill(self, room: int) -> None:
        self.room = room

    def free(self) -> None:
        self.room = None

    def unmount(self) -> None:
        pass


def kill_mid_write_script(module: str) -> str:
    """Python source for a child that runs the `maeast-embed` CLI (sys.argv[2:]) with
    `maeast_embed.extract.<module>.atomic_open` patched: the N-th file it opens (N = sys.argv[1])
    SIGKILLs the process once more than 4 KiB of it are on disk. A kill inside a write, made
    deterministic."""
    return textwrap.dedent(
        f"""
        import contextlib, os, signal, sys
        from maeast_embed.extract import {module} as target

        kill_at, real, count = int(sys.argv[1]), target.atomic_open, [0]

        class Dying:  # the temporary file's handle: SIGKILL once part of the file is on disk
            def __init__(self, handle):
                self.handle, self.written = handle, 0
            def write(self, data):
                n = self.handle.write(data)
                self.written += len(data)
                if self.written > 4096:
                    self.handle.flush()
                    os.fsync(self.handle.fileno())
                    os.kill(os.getpid(), signal.SIGKILL)
                return n
            def __getattr__(self, name):
                return getattr(self.handle, name)

        @contextlib.contextmanager
        def atomic_open(path, *args, **kwargs):
            count[0] += 1
            with real(path, *args, **kwargs) as handle:
                yield Dying(handle) if count[0] == kill_at else handle

        target.atomic_open = atomic_open
        from maeast_embed.cli import main
        main(sys.argv[2:], prog_name="maeast-embed")
        """
    )
