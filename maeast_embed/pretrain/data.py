"""Pretraining data: sources (folders, list files, fairseq tsv manifests), length-grouped
batch plans, and a collate step that crops every batch to its shortest clip and draws masks.

Everything random about a batch (which clips, crop starts, masks) is derived from
(seed, epoch, batch index), so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..audio import find_audio, load_audio, probe, read_path_list
from ..config import ModelConfig
from ..errors import AudioError, ConfigError
from ..frontend import SAMPLE_RATE, num_frames
from ..masking import sample_mask

log = logging.getLogger(__name__)
LIST_SUFFIXES = {".txt", ".lst", ".list", ".csv"}


class DataError(ConfigError):
    """A dataset that cannot be trained on (empty, every clip too short, unreadable manifest)."""


@dataclass(frozen=True)
class Clip:
    path: str
    num_samples: int  # at 16 kHz


@dataclass
class ScanReport:
    clips: list[Clip]
    unreadable: list[str]
    too_short: int


def _probe(path: Path) -> int | None:
    """Samples at 16 kHz from the file header, or None when the file cannot be read."""
    try:
        return probe(path).samples_16k
    except AudioError:
        return None


def _read_manifest(path: Path) -> list[tuple[Path, int | None]]:
    """fairseq tsv: first line = root folder, then `relative/path<TAB>num_samples` lines."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read manifest {path}: {err}") from err
    if not lines:
        raise DataError(f"manifest {path} is empty (expected a root folder on its first line)")
    root = Path(lines[0].strip())
    if not root.is_absolute():
        root = path.parent / root
    out = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split("\t")
        try:
            out.append((root / parts[0], int(parts[1]) if len(parts) > 1 else None))
        except ValueError as err:
            raise DataError(f"{path}:{number}: expected 'path<TAB>num_samples', got {line!r}") from err
    return out


def _expand(source: str) -> list[tuple[Path, int | None]]:
    path = Path(source).expanduser()
    if path.is_dir():
        return [(p, None) for p in find_audio(path)]
    if not path.exists():
        raise DataError(f"data source not found: {source}")
    if path.suffix.lower() == ".tsv":
        return _read_manifest(path)
    if path.suffix.lower() in LIST_SUFFIXES:
        try:
            root, entries = read_path_list(path)
        except AudioError as err:
            raise DataError(str(err)) from err
        return [(root / Path(entry).expanduser(), None) for entry in entries]
    return [(path, None)]


def scan_sources(sources: Iterable[str], min_samples: int) -> ScanReport:
    """Every clip of every source with its length; unreadable and too-short files set aside."""
    clips, unreadable, too_short = [], [], 0
    for source in sources:
        for path, length in _expand(source):
            if length is None:
                length = _probe(path)
                if length is None:
                    unreadable.append(str(path))
                    continue
            if length < min_samples:
                too_short += 1
                continue
            clips.append(Clip(str(path), length))
    return ScanReport(clips, unreadable, too_short)


def load_dataset_index(sources: list[str], min_samples: int) -> list[Clip]:
    """Scan and report; a dataset with no usable clip is an error before training starts."""
    if not sources:
        raise DataError("no data given: pass --data FOLDER|LIST|MANIFEST.tsv (several allowed)")
    report = scan_sources(sources, min_samples)
    if report.unreadable:
        log.warning("skipping %d unreadable files (first: %s)", len(report.unreadable), report.unreadable[0])
    if report.too_short:
        log.info("skipping %d clips shorter than %d samples", report.too_short, min_samples)
    if not report.clips:
        found = len(report.unreadable) + report.too_short
        if report.too_short:
            raise DataError(
                f"all {found} clips found are unusable: {report.too_short} are shorter than the "
                f"minimum of {min_samples} samples ({min_samples / SAMPLE_RATE:g} s; lower it with "
                f"min_seconds=...) and {len(report.unreadable)} are unreadable"
            )
        raise DataError(f"no readable audio found in {', '.join(sources)} ({found} unreadable files)")
    return report.clips


def batch_seed(seed: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


def plan_epoch(
    lengths: np.ndarray, batch_size: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1
) -> list[list[tuple[int, int]]]:
    """This rank's batches for one epoch as [(batch_index, clip_index), ...] lists.

    Clips are sorted by length (random tie-break), cut into batches of similar lengths, and
    the batches shuffled; every rank gets the same number of batches.
    """
    rng = np.random.default_rng([seed, epoch])
    order = np.lexsort((rng.permutation(len(lengths)), lengths))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    batches = [batches[i] for i in rng.permutation(len(batches))]
    usable = (len(batches) // world_size) * world_size
    if usable == 0:
        raise DataError(
            f"{len(lengths)} clips make {len(batches)} batches of {batch_size}: too few for "
            f"{world_size} processes"
        )
    return [[(index, int(c)) for c in batches[index]] for index in range(rank, usable, world_size)]


class ClipDataset(torch.utils.data.Dataset):
    """Reads one clip; a file that fails to decode (or is too short) comes back as None."""

    def __init__(self, clips: list[Clip], min_samples: int) -> None:
        self.clips, self.min_samples = clips, min_samples

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, int, np.ndarray | None]:
        batch_index, clip_index = key
        try:
            wave = load_audio(self.clips[clip_index].path).numpy()  # mono, 16 kHz, finite
        except AudioError:
            wave = None
        if wave is not None and wave.size < self.min_samples:
            wave = None
        return batch_index, clip_index, wave


@dataclass
class Batch:
    """A cropped, unpadded batch with its masks; `wave` is None when every clip failed."""

    wave: Tensor | None
    kept: Tensor | None
    masked: Tensor | None
    skipped: list[str]
    index: int


@dataclass
class Collator:
    """Crop every clip to the batch's shortest (random start), then draw the masks."""

    model: ModelConfig
    clips: list[Clip]
    seed: int
    epoch: int
    max_samples: int | None = None

    def __call__(self, items: list[tuple[int, int, np.ndarray | None]]) -> Batch:
        index = items[0][0]
        skipped = [self.clips[c].path for _, c, wave in items if wave is None]
        waves = [wave for _, _, wave in items if wave is not None]
        if not waves:
            return Batch(None, None, None, skipped, index)
        gen = torch.Generator().manual_seed(batch_seed(self.seed, self.epoch, index))
        crop = min(w.size for w in waves)
        if self.max_samples:
            crop = min(crop, self.max_samples)
        slack = torch.tensor([w.size - crop for w in waves], dtype=torch.float64)
        starts = (torch.rand(len(waves), generator=gen, dtype=torch.float64) * (slack + 1)).long()
        wave = torch.from_numpy(
            np.stack([w[s : s + crop] for w, s in zip(waves, starts.tolist(), strict=True)])
        )
        cfg = self.model
        length = (int(num_frames(crop)) // cfg.kernel_time) * cfg.tokens_per_step
        kept, masked = sample_mask(
            cfg.mask_type, len(waves), length, cfg.mask_prob, tokens_per_step=cfg.tokens_per_step,
            generator=gen,
        )
        return Batch(wave, kept, masked, skipped, index)
