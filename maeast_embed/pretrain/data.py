"""Pretraining data: sources (folders, list files, fairseq tsv manifests, WebDataset shards),
an index of segments, length-grouped batch plans, windowed reads, and a collate step that crops
every batch to its shortest clip and draws masks.

Recordings longer than twice `max_seconds` are cut into segments of one to two `max_seconds`
in the index, so a long file gives a crop from each of its parts every epoch. Each batch is
planned as windows (segment, start, length) before any audio is read, and a worker decodes only
its window (`audio.read_window`: a seek plus the resampler's context on each side; the same
samples as cropping the fully decoded file). Everything random about a batch (which segments,
window starts, masks) is derived from (seed, epoch, batch index), so a resumed run sees exactly
the batches it would have seen.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..audio import FileRange, Source, probe, read_path_list, read_window, scan_folder
from ..config import ModelConfig
from ..errors import AudioError, ConfigError
from ..frontend import SAMPLE_RATE, num_frames
from ..masking import sample_mask
from ..shards import expand_shards, ignored_summary, index_shard, is_shard_spec

log = logging.getLogger(__name__)
LIST_SUFFIXES = {".txt", ".lst", ".list", ".csv"}


class DataError(ConfigError):
    """A dataset that cannot be trained on (empty, every clip too short, unreadable manifest)."""


@dataclass(frozen=True)
class Clip:
    """A segment of a recording: 16 kHz samples [offset, offset + num_samples) of `path` (a
    file, or `shard.tar:key` with the bytes at `member`)."""

    path: str
    num_samples: int  # at 16 kHz
    offset: int = 0
    member: FileRange | None = None

    @property
    def source(self) -> Source:
        return self.member or self.path


@dataclass
class ScanReport:
    clips: list[Clip]
    unreadable: list[str]
    too_short: int
    ignored: list[str] = field(default_factory=list)  # per folder: "ignored 3 files: .txt 3"


class _Entry(NamedTuple):
    name: str
    source: Source
    num_samples: int | None  # None: probe the file
    error: str | None = None


def _probe(source: Source) -> int | None:
    """Samples at 16 kHz from the file header, or None when the file cannot be read."""
    try:
        return probe(source).samples_16k
    except AudioError:
        return None


def _read_manifest(path: Path) -> list[_Entry]:
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
            length = int(parts[1]) if len(parts) > 1 else None
        except ValueError as err:
            raise DataError(f"{path}:{number}: expected 'path<TAB>num_samples', got {line!r}") from err
        out.append(_Entry(str(root / parts[0]), str(root / parts[0]), length))
    return out


def _shard_entries(spec: str, ignored: list[str]) -> list[_Entry]:
    try:
        indexes = [index_shard(shard) for shard in expand_shards(spec)]
    except AudioError as err:
        raise DataError(str(err)) from err
    ignored.extend(f"{index.shard}: {ignored_summary(index.ignored)}" for index in indexes if index.ignored)
    samples = [s for index in indexes for s in index.samples]
    return [_Entry(s.name, s.audio() if not s.error else s.name, None, s.error) for s in samples]


def _expand(source: str, ignored: list[str]) -> list[_Entry]:
    if is_shard_spec(source):
        return _shard_entries(source, ignored)
    path = Path(source).expanduser()
    if path.is_dir():
        scan = scan_folder(path)
        if scan.summary():
            ignored.append(f"{source}: {scan.summary()}")
        return [_Entry(str(p), str(p), None) for p in scan.files]
    if not path.exists():
        raise DataError(f"data source not found: {source}")
    if path.suffix.lower() == ".tsv":
        return _read_manifest(path)
    if path.suffix.lower() in LIST_SUFFIXES:
        try:
            root, entries = read_path_list(path)
        except AudioError as err:
            raise DataError(str(err)) from err
        paths = [str(root / Path(entry).expanduser()) for entry in entries]
        return [_Entry(p, p, None) for p in paths]
    return [_Entry(str(path), str(path), None)]


def segments(num_samples: int, max_samples: int | None) -> list[tuple[int, int]]:
    """(offset, length) pieces of a recording: itself when shorter than 2 * max_samples, else
    num_samples // max_samples equal parts (each between max_samples and 2 * max_samples)."""
    if not max_samples or num_samples < 2 * max_samples:
        return [(0, num_samples)]
    count = num_samples // max_samples
    bounds = [i * num_samples // count for i in range(count + 1)]
    return [(a, b - a) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def scan_sources(sources: Iterable[str], min_samples: int, max_samples: int | None = None) -> ScanReport:
    """Every segment of every source with its length; unreadable and too-short files set aside."""
    clips, unreadable, too_short, ignored = [], [], 0, []
    for source in sources:
        for entry in _expand(source, ignored):
            length = entry.num_samples
            if entry.error is None and length is None:
                length = _probe(entry.source)
            if entry.error is not None or length is None:
                unreadable.append(entry.name)
                continue
            if length < min_samples:
                too_short += 1
                continue
            member = entry.source if isinstance(entry.source, FileRange) else None
            clips.extend(Clip(entry.name, n, offset, member) for offset, n in segments(length, max_samples))
    return ScanReport(clips, unreadable, too_short, ignored)


def load_dataset_index(sources: list[str], min_samples: int, max_samples: int | None = None) -> list[Clip]:
    """Scan and report; a dataset with no usable clip is an error before training starts."""
    if not sources:
        raise DataError("no data given: pass --data FOLDER|LIST|MANIFEST.tsv|SHARDS.tar (several allowed)")
    report = scan_sources(sources, min_samples, max_samples)
    for line in report.ignored:
        log.info("%s", line)
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


class Window(NamedTuple):
    """What one worker reads: 16 kHz samples [start, start + length) of a clip's file."""

    batch: int
    clip: int
    start: int
    length: int


def plan_windows(
    batch: list[tuple[int, int]], clips: list[Clip], seed: int, epoch: int, max_samples: int | None
) -> list[Window]:
    """The batch's crop: its shortest clip (at most max_samples), at a random start in each."""
    index = batch[0][0]
    lengths = np.array([clips[c].num_samples for _, c in batch])
    crop = int(lengths.min()) if not max_samples else min(int(lengths.min()), max_samples)
    rng = np.random.default_rng([seed, epoch, index, 1])
    starts = np.floor(rng.random(len(batch)) * (lengths - crop + 1)).astype(np.int64)
    return [
        Window(index, c, clips[c].offset + int(s), crop) for (_, c), s in zip(batch, starts, strict=True)
    ]


class ClipDataset(torch.utils.data.Dataset):
    """Reads one window; a file that fails to decode (or comes back too short) is None."""

    def __init__(self, clips: list[Clip], min_samples: int) -> None:
        self.clips, self.min_samples = clips, min_samples

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, key: Window) -> tuple[int, int, np.ndarray | None]:
        try:
            wave = read_window(self.clips[key.clip].source, key.start, key.length).numpy()
        except AudioError:
            wave = None
        if wave is not None and wave.size < self.min_samples:
            wave = None
        return key.batch, key.clip, wave


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
    """Crop every clip to the batch's shortest (random start), then draw the masks. Windows
    planned by `plan_windows` arrive cropped already; a file that decoded shorter than its
    index said shortens the batch."""

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


def epoch_loader(
    clips: list[Clip],
    plan: list[list[tuple[int, int]]],
    model: ModelConfig,
    *,
    seed: int,
    epoch: int,
    min_samples: int,
    max_samples: int | None,
    num_workers: int,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    """The batches of `plan` (from `plan_epoch`), each read as its planned windows."""
    windows = [plan_windows(batch, clips, seed, epoch, max_samples) for batch in plan]
    return torch.utils.data.DataLoader(
        ClipDataset(clips, min_samples), batch_sampler=windows,
        collate_fn=Collator(model, clips, seed, epoch, max_samples),
        num_workers=num_workers, pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed + epoch),  # keeps the global RNG untouched
    )


def timed(batches: Iterable[Batch], clock: dict[str, Any]) -> Iterator[Batch]:
    """The batches, adding the seconds spent waiting for each one to clock["wait"]."""
    iterator = iter(batches)
    while True:
        begin = time.perf_counter()
        batch = next(iterator, None)
        clock["wait"] += time.perf_counter() - begin
        if batch is None:
            return
        yield batch
