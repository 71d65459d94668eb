"""Run-time shims that let s3prl 0.4.18's `run_downstream` work with torch/torchaudio >= 2.9,
huggingface_hub >= 1.0 and without catalyst (see REFERENCE.md section 8).

`apply()` is idempotent and only fills in what is missing, so it is harmless where the old
APIs still exist. It patches modules in place: forked DataLoader workers inherit the patches;
spawned/forkserver workers get them because the launcher module and the site hook (see
`maeast_upstream.cli`) apply them at import time in every interpreter.

What it provides:
- `torchaudio.set_audio_backend` / `get_audio_backend` (removed; s3prl calls them on import);
- `torchaudio.load` via soundfile when torchcodec is missing (torchaudio no longer decodes);
- `torchaudio.sox_effects.apply_effects_file/_tensor` for the `channels`, `rate`, `gain`
  effects the SUPERB recipes use (speech_commands reads every clip through them);
- `huggingface_hub.HfFolder` / `Repository` (removed) as placeholders that explain themselves
  when used (only `--hub huggingface` and `--push_to_hf_hub` need them);
- `catalyst.data.sampler.DistributedSamplerWrapper` (catalyst does not install with new pip);
- `argparse.Namespace` allowed by `torch.load(weights_only=True)`, so the runner can read
  back its own checkpoints (`-e`, `-m evaluate`) without disabling safe loading.

`key_voxceleb1_cache` (applied once s3prl's VoxCeleb1 dataset module is imported: by the
launcher, or by the site hook) moves that recipe's file-list cache out of s3prl's package.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import importlib.util
import math
import os
import sys
import types
import warnings
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DistributedSampler, Sampler

from maeast_embed.checkpoint import cache_dir

_MARK = "_maeast_embed_shim"
_applied = False
_warned_rates: set[int] = set()


class S3PRLCompatError(RuntimeError):
    """A feature of s3prl 0.4.18 these shims do not provide."""


def apply() -> None:
    """Install every shim that the current environment needs (safe to call repeatedly)."""
    global _applied
    if _applied:
        return
    _patch_torchaudio()
    _patch_huggingface_hub()
    _provide_catalyst()
    torch.serialization.add_safe_globals([argparse.Namespace])
    _applied = True


# --------------------------------------------------------------------------- torchaudio


def _set_audio_backend(backend: str | None) -> None:
    """No-op: torchaudio >= 2.9 has no backends; audio is read with soundfile."""


def _get_audio_backend() -> str:
    return "soundfile"


def _read_audio(path, frame_offset: int = 0, num_frames: int = -1) -> tuple[torch.Tensor, int]:
    """[channels, samples] float32 in [-1, 1] and the file's sample rate, via soundfile."""
    import soundfile

    try:
        with soundfile.SoundFile(str(path)) as handle:
            rate = handle.samplerate
            handle.seek(frame_offset)
            data = handle.read(frames=num_frames, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError) as err:  # LibsndfileError is a RuntimeError
        raise RuntimeError(f"cannot read audio file {path}: {err}") from err
    return torch.from_numpy(data.T.copy()), int(rate)


def _load(
    uri,
    frame_offset: int = 0,
    num_frames: int = -1,
    normalize: bool = True,
    channels_first: bool = True,
    format: str | None = None,
    buffer_size: int = 4096,
    backend: str | None = None,
) -> tuple[torch.Tensor, int]:
    """Drop-in for `torchaudio.load` (float32, normalised) reading with soundfile.

    The file's own rate is returned, as torchaudio does; a rate other than 16 kHz is warned
    about once per rate, since some SUPERB recipes (voxceleb1) do not resample.
    """
    if not normalize:
        raise S3PRLCompatError("the soundfile-based torchaudio.load shim only supports normalize=True")
    wave, rate = _read_audio(uri, frame_offset, num_frames)
    if rate != 16000 and rate not in _warned_rates:
        _warned_rates.add(rate)
        warnings.warn(
            f"{uri} is {rate} Hz; MAE-AST and most SUPERB upstreams need 16 kHz. s3prl's emotion and "
            "speech_commands recipes resample, voxceleb1 does not: resample that dataset to 16 kHz first.",
            stacklevel=2,
        )
    return (wave if channels_first else wave.T), rate


def _apply_effects(
    wave: torch.Tensor, rate: int, effects: Sequence[Sequence[str]]
) -> tuple[torch.Tensor, int]:
    """The sox effects SUPERB recipes use: channels N, rate R, gain dB (float32 [C, N])."""
    import torchaudio.functional as AF

    for effect in effects:
        name, *args = [str(part) for part in effect]
        if name == "channels" and len(args) == 1:
            channels = int(args[0])
            if channels == 1:
                wave = wave.mean(dim=0, keepdim=True)
            elif channels != wave.shape[0]:
                raise S3PRLCompatError(
                    f"sox 'channels {channels}' on {wave.shape[0]}-channel audio is not supported"
                )
        elif name == "rate" and len(args) == 1:
            new_rate = int(float(args[0]))
            if new_rate != rate:
                wave = AF.resample(wave, rate, new_rate)
                rate = new_rate
        elif name == "gain" and len(args) == 1:
            wave = wave * math.pow(10.0, float(args[0]) / 20.0)
        else:
            raise S3PRLCompatError(
                f"sox effect {list(effect)} is not provided by maeast-embed's shim "
                "(supported: channels N, rate R, gain dB)"
            )
    return wave, rate


def _apply_effects_file(path, effects, normalize: bool = True, channels_first: bool = True, format=None):
    wave, rate = _apply_effects(*_read_audio(path), effects)
    return (wave if channels_first else wave.T), rate


def _apply_effects_tensor(tensor: torch.Tensor, sample_rate: int, effects, channels_first: bool = True):
    wave = tensor if channels_first else tensor.T
    wave, rate = _apply_effects(wave.float(), sample_rate, effects)
    return (wave if channels_first else wave.T), rate


def _patch_torchaudio() -> None:
    try:
        import torchaudio
    except ImportError:  # the core without the s3prl extra: nothing to patch
        return

    if not hasattr(torchaudio, "set_audio_backend"):
        torchaudio.set_audio_backend = _set_audio_backend
        torchaudio.get_audio_backend = _get_audio_backend
    if importlib.util.find_spec("torchcodec") is None and not getattr(torchaudio.load, _MARK, False):
        _load.__dict__[_MARK] = True
        torchaudio.load = _load
    try:
        import torchaudio.sox_effects  # noqa: F401  (present before torchaudio 2.9)
    except ImportError:
        module = types.ModuleType("torchaudio.sox_effects")
        module.__doc__ = "maeast-embed shim: the sox effects SUPERB recipes use, without libsox."
        module.apply_effects_file = _apply_effects_file
        module.apply_effects_tensor = _apply_effects_tensor
        sys.modules["torchaudio.sox_effects"] = module
        torchaudio.sox_effects = module


# ----------------------------------------------------------------------- huggingface_hub


class _RemovedHubAPI:
    """Placeholder for a huggingface_hub class removed in 1.0; fails clearly when used."""

    def __init__(self, *args, **kwargs) -> None:
        raise S3PRLCompatError(
            f"huggingface_hub.{type(self).__name__} was removed in huggingface_hub 1.0; s3prl 0.4.18 "
            "uses it only for --hub huggingface / --push_to_hf_hub. Install huggingface_hub<1 "
            "and transformers<5 for those options."
        )

    @classmethod
    def save_token(cls, *args, **kwargs) -> None:
        cls()


def _patch_huggingface_hub() -> None:
    try:
        import huggingface_hub
    except ImportError:
        return
    for name in ("HfFolder", "Repository"):
        if not hasattr(huggingface_hub, name):
            setattr(huggingface_hub, name, type(name, (_RemovedHubAPI,), {"__module__": __name__}))


# ------------------------------------------------------------------------------ catalyst


class DistributedSamplerWrapper(DistributedSampler):
    """Shard the indices another sampler draws (e.g. WeightedRandomSampler) across ranks.

    Each epoch draws a fresh list from the wrapped sampler; every rank then takes its
    DistributedSampler share of that list (same list on every rank: seed per epoch).
    """

    def __init__(
        self,
        sampler: Sampler,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
    ) -> None:
        super().__init__(range(len(sampler)), num_replicas=num_replicas, rank=rank, shuffle=shuffle)
        self.sampler = sampler

    def __iter__(self) -> Iterator[int]:
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(self.seed + self.epoch)
        drawn = list(self.sampler)
        torch.random.set_rng_state(generator_state)
        return (drawn[position] for position in super().__iter__())


def _provide_catalyst() -> None:
    try:
        from catalyst.data.sampler import DistributedSamplerWrapper as _  # noqa: F401

        return
    except ImportError:
        pass
    names = ("catalyst", "catalyst.data", "catalyst.data.sampler")
    if any(name in sys.modules for name in names):
        return
    modules = {name: types.ModuleType(name, "maeast-embed shim for s3prl 0.4.18") for name in names}
    modules["catalyst.data.sampler"].DistributedSamplerWrapper = DistributedSamplerWrapper
    modules["catalyst"].data = modules["catalyst.data"]
    modules["catalyst.data"].sampler = modules["catalyst.data.sampler"]
    sys.modules.update(modules)


# ------------------------------------------------------------------------ SUPERB SID cache


def voxceleb1_cache_dir(file_path: str | os.PathLike, meta_data: str | os.PathLike) -> str:
    """Where the VoxCeleb1 file lists of one dataset folder and split file are kept:
    `<maeast-embed cache>/s3prl-voxceleb1/<hash of the folder's path and the split file's bytes>/`."""
    digest = hashlib.sha256(os.path.abspath(file_path).encode("utf-8", "surrogateescape") + b"\0")
    with open(meta_data, "rb") as split_file:
        digest.update(split_file.read())
    return os.path.join(cache_dir(), "s3prl-voxceleb1", digest.hexdigest()[:16], "")


def key_voxceleb1_cache(module: types.ModuleType) -> None:
    """s3prl's `SpeakerClassifiDataset` keeps one file list per split in its own package
    (`downstream/voxceleb1/.cache/{train,dev,test}.pkl`) whatever the dataset: another dataset
    folder or split file would silently read the first one's lists, and a read-only install cannot
    write them. Each dataset gets its own folder instead (`voxceleb1_cache_dir`). Idempotent."""
    dataset = module.SpeakerClassifiDataset
    if getattr(dataset.__init__, _MARK, False):
        return
    original = dataset.__init__

    @functools.wraps(original)
    def __init__(self, mode, file_path, meta_data, *args, **kwargs):
        module.CACHE_PATH = voxceleb1_cache_dir(file_path, meta_data)
        original(self, mode, file_path, meta_data, *args, **kwargs)

    setattr(__init__, _MARK, True)
    dataset.__init__ = __init__
