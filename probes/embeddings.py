"""What gets probed (a checkpoint, the `fbank` baseline, a `random` initialisation) and the on-disk
cache of clip embeddings, keyed by model hash + options + the dataset's audio fingerprint."""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maeast_embed.atomic import atomic_open
from maeast_embed.checkpoint import cache_dir, load_model
from maeast_embed.config import PRESETS, preset
from maeast_embed.errors import AudioError, MAEASTError
from maeast_embed.features import Embedder, resolve_device
from maeast_embed.frontend import FRAME_LENGTH, kaldi_fbank
from maeast_embed.model import MAEAST
from maeast_embed.outpaths import safe_filename
from maeast_embed.precision import resolve_dtype

from .datasets import ProbeDataset, read_clip, warn

CACHE_VERSION = 1


@dataclass
class ModelSpec:
    """One model to evaluate: kind 'checkpoint', 'random' or 'fbank'."""

    label: str
    kind: str
    model_hash: str
    model: MAEAST | None = None
    info: dict[str, Any] = field(default_factory=dict)


def _state_hash(model: MAEAST) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def random_model(reference: MAEAST | str, seed: int = 0) -> MAEAST:
    """The architecture of `reference` (a model or preset name) at initialisation, seeded.

    A model reference lends its fbank normalisation statistics (part of the input pipeline, not
    learned weights), so the comparison isolates what pretraining taught the transformer.
    """
    cfg = reference.cfg if isinstance(reference, MAEAST) else preset(reference)
    torch.manual_seed(seed)
    model = MAEAST(cfg)
    if isinstance(reference, MAEAST):
        model.batch_norm.load_state_dict(reference.batch_norm.state_dict())
    return model.eval()


def resolve_models(names: list[str], *, trust_checkpoint: bool = False, seed: int = 0) -> list[ModelSpec]:
    """`fbank`, `random` (the first checkpoint's architecture), `random:PRESET`, `random:PATH`,
    or a checkpoint path / registered name."""
    specs: list[ModelSpec] = []
    checkpoints = [n for n in names if n != "fbank" and not n.startswith("random")]
    loaded: dict[str, MAEAST] = {}

    def load(source: str) -> MAEAST:
        if source not in loaded:
            loaded[source] = load_model(source, trust_checkpoint=trust_checkpoint)
        return loaded[source]

    for name in names:
        if name == "fbank":
            specs.append(
                ModelSpec("fbank", "fbank", "fbank-meanstd-v1", info={"features": "log-mel mean+std"})
            )
            continue
        if name.startswith("random"):
            target = name.partition(":")[2] or (checkpoints[0] if checkpoints else "")
            if not target:
                raise MAEASTError(
                    "--model random takes the architecture of a checkpoint given in the same command; "
                    f"add one, or name it: random:PRESET ({', '.join(sorted(PRESETS))}) or random:PATH"
                )
            reference: MAEAST | str = target if target in PRESETS else load(target)
            model = random_model(reference, seed)
            info = {"architecture_from": target, "seed": seed, "config": _config_dict(model)}
            specs.append(ModelSpec(name, "random", _state_hash(model), model, info))
            continue
        model = load(name)
        ckpt = model.checkpoint
        info = {"path": ckpt.path, "sha256": ckpt.sha256, "name": ckpt.name, "config": _config_dict(model)}
        specs.append(ModelSpec(name, "checkpoint", ckpt.sha256, model, info))
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise MAEASTError(f"the same --model was given twice: {labels}")
    return specs


def _config_dict(model: MAEAST) -> dict[str, Any]:
    return {k: getattr(model.cfg, k) for k in model.cfg.__dataclass_fields__}


@torch.inference_mode()
def fbank_stats(waveforms: list[np.ndarray], device: str | torch.device = "cpu") -> torch.Tensor:
    """The `fbank` baseline: per clip mean and std over time of the Kaldi log-mel -> [B, 1, 256]."""
    lengths = torch.tensor([max(w.size, FRAME_LENGTH) for w in waveforms])
    batch = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(w) for w in waveforms], batch_first=True)
    batch = torch.nn.functional.pad(batch, (0, int(lengths.max()) - batch.shape[1])).to(device)
    fbank, frames = kaldi_fbank(batch, lengths.to(device))
    valid = (torch.arange(fbank.shape[1], device=device) < frames[:, None]).unsqueeze(-1)
    count = frames[:, None].float()
    mean = (fbank * valid).sum(1) / count
    var = (((fbank - mean[:, None]) * valid) ** 2).sum(1) / count
    return torch.cat([mean, var.sqrt()], dim=-1).unsqueeze(1).cpu()


@dataclass(frozen=True)
class EmbedOptions:
    """Everything besides the model and the audio that changes the embeddings."""

    pool: str = "mean"
    freq_pool: str = "concat"
    dtype: str = "auto"
    chunk_seconds: float = 10.24

    def resolved(self, spec: ModelSpec, device: str) -> EmbedOptions:
        """These options with `dtype` the one the encoder of `spec` runs in on `device` (`auto`
        resolved), so cache keys and reports name the dtype actually used."""
        if spec.kind == "fbank":
            return self
        return replace(self, dtype=resolve_dtype(self.dtype, resolve_device(device), spec.model))

    def key(self, spec: ModelSpec) -> dict[str, Any]:
        if spec.kind == "fbank":
            return {"features": "fbank-meanstd"}
        return {
            "pool": self.pool,
            "freq_pool": self.freq_pool,
            "dtype": self.dtype,
            "chunk_seconds": self.chunk_seconds,
        }


def make_embed_fn(
    spec: ModelSpec, options: EmbedOptions, device: str, batch_size: int
) -> Callable[[list[np.ndarray]], torch.Tensor]:
    """waveforms -> [B, n_layers, D] float32 clip embeddings for `spec`."""
    if spec.kind == "fbank":
        target = resolve_device(device)
        return lambda waves: fbank_stats(waves, target)
    embedder = Embedder(
        spec.model,
        device=device,
        dtype=options.dtype,
        batch_size=batch_size,
        chunk_seconds=options.chunk_seconds,
    )

    def embed(waves: list[np.ndarray]) -> torch.Tensor:
        return torch.stack(
            embedder.clip_embeddings(waves, layer="all", freq_pool=options.freq_pool, pool=options.pool)
        )

    return embed


@dataclass
class Embeddings:
    """Clip embeddings [N, n_layers, D] (rows of unreadable clips are zero) and what was skipped."""

    values: np.ndarray
    ok: np.ndarray  # [N] bool
    skipped: dict[str, str]  # relative path -> reason
    from_cache: bool
    cache_file: str | None
    dtype: str | None = None  # the encoder's compute dtype (None for the fbank baseline)


def read_clips(
    ds: ProbeDataset, indices: list[int], skipped: dict[str, str]
) -> tuple[list[int], list[np.ndarray]]:
    """Decode clips; unreadable ones go into `skipped` (relative path -> reason)."""
    good, waves = [], []
    for i in indices:
        clip = ds.clips[i]
        try:
            waves.append(read_clip(clip))
            good.append(i)
        except AudioError as err:
            skipped[_rel(ds, i)] = str(err)
    return good, waves


def _rel(ds: ProbeDataset, i: int) -> str:
    path = ds.clips[i].path
    try:
        return path.relative_to(ds.root).as_posix()
    except ValueError:
        return str(path)


def compute_embeddings(
    ds: ProbeDataset,
    embed: Callable[[list[np.ndarray]], torch.Tensor],
    *,
    clips_per_batch: int = 64,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """Embed every clip, `clips_per_batch` decoded at a time (bounded memory)."""
    from tqdm.auto import tqdm

    values: np.ndarray | None = None
    ok = np.zeros(len(ds), dtype=bool)
    skipped: dict[str, str] = {}
    for start in tqdm(range(0, len(ds), clips_per_batch), desc="embedding", disable=not progress):
        good, waves = read_clips(ds, list(range(start, min(start + clips_per_batch, len(ds)))), skipped)
        if not good:
            continue
        try:
            batch = embed(waves).numpy()
        except AudioError:  # find the culprit(s) one by one
            rows = []
            for i, wave in zip(good, waves, strict=True):
                try:
                    rows.append(embed([wave]).numpy()[0])
                except AudioError as err:
                    skipped[_rel(ds, i)] = str(err)
                    rows.append(None)
            keep = [k for k, row in enumerate(rows) if row is not None]
            good = [good[k] for k in keep]
            batch = np.stack([rows[k] for k in keep]) if keep else None
        if batch is None:
            continue
        if values is None:
            values = np.zeros((len(ds), *batch.shape[1:]), dtype=np.float32)
        values[good] = batch
        ok[good] = True
    if values is None:
        raise MAEASTError(
            f"{ds.name}: no clip could be read ({len(skipped)} unreadable, e.g. "
            f"{next(iter(skipped.items()), ('', ''))})"
        )
    return values, ok, skipped


def cache_path(
    spec: ModelSpec, options: EmbedOptions, ds: ProbeDataset, root: Path | None
) -> tuple[Path, dict]:
    meta = {
        "version": CACHE_VERSION,
        "model_hash": spec.model_hash,
        "options": options.key(spec),
        "audio_fingerprint": ds.audio_fingerprint(),
        "num_clips": len(ds),
    }
    key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:32]
    folder = Path(root) if root is not None else cache_dir() / "probe_embeddings"
    label = spec.label.replace("/", "_").replace(":", "_")[-40:]
    # ds.name may come from the data (a HEAR task's task_name): one safe file name, in `folder`
    return folder / (safe_filename(f"{ds.name}-{label}-{key}") + ".npz"), meta


def load_cache(path: Path, meta: dict, sink: list[str]) -> Embeddings | None:
    """The cached embeddings if the file exists and matches `meta`; warns and returns None otherwise."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            stored = json.loads(str(data["meta"]))
            values, ok = data["values"], data["ok"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        warn(f"embedding cache {path} is unreadable ({err}): recomputing", sink)
        return None
    mismatched = sorted(k for k in meta if stored.get(k) != meta[k])
    if mismatched or values.shape[0] != meta["num_clips"] or ok.shape != (meta["num_clips"],):
        warn(
            f"embedding cache {path} does not match this run ({', '.join(mismatched) or 'shape'} "
            "differ): recomputing",
            sink,
        )
        return None
    return Embeddings(values, ok, dict(stored.get("skipped", {})), True, str(path))


def save_cache(path: Path, meta: dict, emb: Embeddings) -> None:
    """np.savez through `atomic_open` (a temporary file in the cache folder, then a rename)."""
    with atomic_open(path) as handle:
        meta_json = np.array(json.dumps({**meta, "skipped": emb.skipped}))
        np.savez(handle, values=emb.values, ok=emb.ok, meta=meta_json)


def get_embeddings(
    spec: ModelSpec,
    ds: ProbeDataset,
    options: EmbedOptions,
    *,
    device: str = "auto",
    batch_size: int = 8,
    cache_root: Path | None = None,
    use_cache: bool = True,
    progress: bool = False,
    sink: list[str] | None = None,
) -> Embeddings:
    """Embeddings of every clip, from the cache when a matching file exists."""
    sink = sink if sink is not None else []
    options = options.resolved(spec, device)
    dtype = None if spec.kind == "fbank" else options.dtype
    path, meta = cache_path(spec, options, ds, cache_root)
    if use_cache:
        cached = load_cache(path, meta, sink)
        if cached is not None:
            return replace(cached, dtype=dtype)
    values, ok, skipped = compute_embeddings(
        ds, make_embed_fn(spec, options, device, batch_size), progress=progress
    )
    emb = Embeddings(values, ok, skipped, False, str(path) if use_cache else None, dtype)
    if use_cache:
        save_cache(path, meta, emb)
    return emb
