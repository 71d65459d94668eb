"""Run-time shims so hear-eval-kit 2021.1.3 and hear-validator 2021.0.2 work unchanged on
Python 3.11 / torch >= 2.6 / pytorch-lightning 1.9.5 (REFERENCE.md section 9).

`apply()` is idempotent and touches nothing that is not needed:
- tensorflow: heareval and hearvalidator import it only to ask `isinstance(model, tf.Module)`
  and, with CUDA, `tf.test.is_gpu_available()`. Without a real install a small stub module is
  registered (with a `__spec__`, so `importlib.util.find_spec` keeps working).
- `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`: the predictions runner `torch.load`s its own Lightning
  checkpoints, which hold more than tensors (refused by torch >= 2.6's weights_only default).
- `FitLoop.current_epoch`: the predictions runner sets `trainer.fit_loop.current_epoch` to pick
  the event post-processing of the best epoch; PL 1.9 has no such property, so the assignment
  would silently do nothing. The shim maps it onto `epoch_progress.current.completed`, which is
  what `trainer.current_epoch` reads.
- `heareval.gpu_max_mem.device_name`: nvidia-ml-py >= 11.5 returns `str`, heareval calls
  `.decode()` on it.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import types

import torch


def _tensorflow_stub() -> types.ModuleType:
    stub = types.ModuleType("tensorflow")
    stub.__spec__ = importlib.machinery.ModuleSpec("tensorflow", loader=None)
    stub.__doc__ = "Stub registered by hear_module.compat: no TensorFlow models are supported."

    class Module:  # nothing is an instance of it, so every model is treated as torch
        pass

    def is_gpu_available(cuda_only: bool = False, min_cuda_compute_capability=None) -> bool:
        return torch.cuda.is_available()

    stub.Module = Module
    stub.test = types.SimpleNamespace(is_gpu_available=is_gpu_available)
    return stub


def _patch_tensorflow() -> None:
    if "tensorflow" in sys.modules or importlib.util.find_spec("tensorflow") is not None:
        return
    sys.modules["tensorflow"] = _tensorflow_stub()


def _patch_lightning() -> None:
    from pytorch_lightning.loops import FitLoop

    if isinstance(getattr(FitLoop, "current_epoch", None), property):
        return

    def get_epoch(self) -> int:
        return self.epoch_progress.current.completed

    def set_epoch(self, value: int) -> None:
        self.epoch_progress.current.completed = int(value)

    FitLoop.current_epoch = property(get_epoch, set_epoch)


def _patch_gpu_name() -> None:
    import heareval.gpu_max_mem as gpu_max_mem

    if not torch.cuda.is_available() or getattr(gpu_max_mem.device_name, "_maeast_shim", False):
        return

    def device_name(device_index: int = 0) -> str:
        return torch.cuda.get_device_name(device_index)

    device_name._maeast_shim = True
    gpu_max_mem.device_name = device_name


def apply() -> None:
    """Install every shim (safe to call more than once)."""
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    _patch_tensorflow()
    if importlib.util.find_spec("pytorch_lightning") is not None:
        _patch_lightning()
    if importlib.util.find_spec("heareval") is not None:
        _patch_gpu_name()


def on_import(module: types.ModuleType) -> None:
    """Site-hook entry (`maeast-embed hear register`): apply the shims once heareval or
    hearvalidator is imported, before any of their runners' own imports."""
    apply()
