"""Dataset readers (class folders, CSV, ESC-50, Speech Commands, HEAR), fingerprints and splits.

Every reader returns a `ProbeDataset`: clips with one or more labels and, where the layout has
one, a fold or split name. `make_splits` turns that into train/valid/test index sets.
"""

from __future__ import annotations

import csv
import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from maeast_embed.audio import AudioError, FileRange, audio_extensions, load_audio
from maeast_embed.errors import MAEASTError
from maeast_embed.frontend import SAMPLE_RATE
from maeast_embed.shards import ShardError, expand_shards, index_shard, is_shard_spec

from .choices import LAYOUTS

LABEL_SEPARATOR = ";"


class ProbeWarning(UserWarning):
    """Something about the data that makes scores less meaningful but does not stop the run."""


def warn(message: str, sink: list[str] | None = None) -> None:
    if sink is not None:
        sink.append(message)
    warnings.warn(message, ProbeWarning, stacklevel=2)


def read_audio(path: str | Path) -> np.ndarray:
    """Decode a file to 16 kHz mono float32 (maeast_embed.audio; raises AudioError)."""
    return load_audio(path).numpy()


@dataclass(frozen=True)
class Clip:
    path: Path  # the audio file, or SHARD/KEY for a WebDataset sample
    labels: tuple[str, ...]
    group: str | None = None  # fold or split name
    member: FileRange | None = None  # a WebDataset sample's audio member, decoded in place
    error: str | None = None  # why a WebDataset sample cannot be read

    def stat(self) -> tuple[int, int] | None:
        """(size, mtime in ns) of what is read (the member, in its shard), None if missing."""
        target = Path(self.member.path) if self.member else self.path
        if not target.exists():
            return None
        info = target.stat()
        return (self.member.size if self.member else info.st_size), info.st_mtime_ns


def read_clip(clip: Clip) -> np.ndarray:
    """A clip's audio at 16 kHz mono float32 (raises AudioError, also for a broken sample)."""
    if clip.error:
        raise AudioError(clip.error)
    return load_audio(clip.member or clip.path).numpy()


@dataclass
class ProbeDataset:
    """Labelled clips. `partition` is 'folds', 'splits' or 'none' (folds are made by `make_splits`)."""

    name: str
    root: Path
    layout: str
    clips: list[Clip]
    classes: list[str]
    multilabel: bool
    partition: str
    groups: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.clips)

    def targets(self) -> np.ndarray:
        """[N] class indices (single-label datasets)."""
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array([index[c.labels[0]] for c in self.clips], dtype=np.int64)

    def label_matrix(self) -> np.ndarray:
        """[N, C] 0/1 float32 (any dataset)."""
        index = {c: i for i, c in enumerate(self.classes)}
        matrix = np.zeros((len(self.clips), len(self.classes)), dtype=np.float32)
        rows = [i for i, c in enumerate(self.clips) for _ in c.labels]
        cols = [index[label] for c in self.clips for label in c.labels]
        matrix[rows, cols] = 1.0
        return matrix

    def audio_fingerprint(self) -> str:
        """Identity of the audio (relative path, size, mtime): the embedding cache key."""
        digest = hashlib.sha256()
        for clip in self.clips:
            size, mtime = clip.stat() or (-1, -1)
            entry = [_relative(clip.path, self.root), size, mtime]
            digest.update(json.dumps(entry).encode())
        return digest.hexdigest()

    def fingerprint(self) -> str:
        """Identity of the whole task: audio, labels, folds/splits."""
        digest = hashlib.sha256(self.audio_fingerprint().encode())
        digest.update(json.dumps([[list(c.labels), c.group] for c in self.clips]).encode())
        digest.update(json.dumps([self.classes, self.multilabel, self.partition]).encode())
        return digest.hexdigest()


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _is_audio(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in audio_extensions() and not path.name.startswith(".")


def finish_dataset(
    name, root, layout, clips, multilabel, partition, classes=None, groups=None, *, audio=True
) -> ProbeDataset:
    """The dataset of `clips`, checked (clips, 2 classes), with warnings for single-clip classes
    and, when the clips are `audio` files, for those that do not exist."""
    if not clips:
        raise MAEASTError(f"{root}: no labelled audio clips found ({layout} layout)")
    classes = classes or sorted({label for c in clips for label in c.labels})
    if len(classes) < 2:
        raise MAEASTError(f"{root}: a probe needs at least 2 classes, found {classes}")
    if groups is None:
        groups = sorted({c.group for c in clips if c.group is not None})
    ds = ProbeDataset(name, root, layout, clips, classes, multilabel, partition, list(groups))
    counts = ds.label_matrix().sum(0)
    single = [c for c, n in zip(classes, counts, strict=True) if n == 1]
    if single:
        warn(
            f"{len(single)} class(es) have a single clip ({', '.join(single[:5])}): they can be in "
            "only one of train/valid/test, so they are never both learned and tested",
            ds.warnings,
        )
    missing = [c.path for c in clips if c.stat() is None] if audio else []
    if missing:
        warn(
            f"{len(missing)} listed file(s) do not exist (e.g. {missing[0]}): they will be skipped",
            ds.warnings,
        )
    return ds


def read_folder(root: Path) -> ProbeDataset:
    """ROOT/<class>/**/<clip>: one class per sub-folder, no predefined folds."""
    clips = [
        Clip(path, (folder.name,))
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
        for path in sorted(folder.rglob("*"))
        if _is_audio(path)
    ]
    return finish_dataset(root.name, root, "folder", clips, False, "none")


@dataclass(frozen=True)
class LabelRow:
    """One row of a labels CSV: its line, the value of its id column, its labels and group."""

    line: int
    name: str
    labels: tuple[str, ...]
    group: str | None


def read_label_rows(path: Path, ids: tuple[str, ...]) -> tuple[str, str | None, list[LabelRow]]:
    """A labels CSV whose header names one of the id columns `ids`, `label` and optionally `fold`
    or `split`: (the id column, the group column or None, the rows). Several labels in one cell
    are separated by ';'. The first of `ids` in the header is the id column."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in reader.fieldnames or []]
        id_key = next((name for name in ids if name in header), None)
        if id_key is None or "label" not in header:
            raise MAEASTError(
                f"{path}: the header must name the columns {'|'.join(ids)},label[,fold|split], got {header}"
            )
        group_key = "fold" if "fold" in header else "split" if "split" in header else None
        rows = []
        for line, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            labels = tuple(part.strip() for part in row["label"].split(LABEL_SEPARATOR) if part.strip())
            if not row[id_key] or not labels:
                raise MAEASTError(f"{path}:{line}: empty {id_key} or label")
            group = row[group_key] if group_key else None
            if group_key and not group:
                raise MAEASTError(f"{path}:{line}: empty {group_key}")
            rows.append(LabelRow(line, row[id_key], labels, group))
    return id_key, group_key, rows


def partition_of(group_key: str | None) -> str:
    return {"fold": "folds", "split": "splits", None: "none"}[group_key]


def read_csv(path: Path) -> ProbeDataset:
    """CSV with a header `path,label[,fold|split]`; paths relative to the CSV's folder; several
    labels in one cell separated by ';' make the task multilabel."""
    root = path.parent
    _, group_key, rows = read_label_rows(path, ("path",))
    clips = [Clip((root / row.name).resolve(), row.labels, row.group) for row in rows]
    multilabel = any(len(c.labels) > 1 for c in clips)
    return finish_dataset(path.stem, root.resolve(), "csv", clips, multilabel, partition_of(group_key))


def read_esc50(root: Path) -> ProbeDataset:
    """ESC-50: meta/esc50.csv (filename, fold, category, ...) and audio/<filename>; 5 folds."""
    clips = []
    with open(root / "meta" / "esc50.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            try:
                clips.append(
                    Clip(root / "audio" / row["filename"], (row["category"],), str(int(row["fold"])))
                )
            except (KeyError, ValueError) as err:
                raise MAEASTError(f"{root}/meta/esc50.csv: bad row {row} ({err})") from err
    return finish_dataset(root.name, root, "esc50", clips, False, "folds")


def read_speech_commands(root: Path) -> ProbeDataset:
    """Speech Commands: ROOT/<word>/<clip>.wav with validation_list.txt and testing_list.txt
    (paths relative to ROOT); every other clip is training data. `_background_noise_` is skipped."""
    lists = {}
    for split, name in (("valid", "validation_list.txt"), ("test", "testing_list.txt")):
        file = root / name
        entries = file.read_text().split() if file.is_file() else []
        lists.update((entry, split) for entry in entries)
    clips = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        for path in sorted(folder.glob("*")):
            if _is_audio(path):
                relative = path.relative_to(root).as_posix()
                clips.append(Clip(path, (folder.name,), lists.pop(relative, "train")))
    if lists:
        raise MAEASTError(
            f"{root}: {len(lists)} clip(s) named in the validation/testing lists are not in any "
            f"class folder (e.g. {next(iter(lists))})"
        )
    return finish_dataset(root.name, root, "speechcommands", clips, False, "splits")


def read_hear(root: Path) -> ProbeDataset:
    """A HEAR 2021 task directory (scene tasks): task_metadata.json, labelvocabulary.csv,
    <split>.json and audio under <sample_rate>/<split>/."""
    meta = json.loads((root / "task_metadata.json").read_text())
    if meta.get("embedding_type", "scene") != "scene":
        raise MAEASTError(
            f"{root}: HEAR task {meta.get('task_name')!r} is an event (timestamp) task; "
            "the probe handles scene tasks only (use heareval for event tasks)"
        )
    with open(root / "labelvocabulary.csv", newline="") as handle:
        vocabulary = [row["label"] for row in csv.DictReader(handle)]
    mode = meta.get("split_mode", "trainvaltest")
    if mode == "trainvaltest":
        groups, partition = ["train", "valid", "test"], "splits"
    else:
        groups = [f"fold{i:02d}" for i in range(int(meta["nfolds"]))]
        partition = "folds"
    rates = sorted((p for p in root.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    if not rates:
        raise MAEASTError(f"{root}: no audio folder named by its sample rate (e.g. {root}/16000)")
    audio_root = next((p for p in rates if int(p.name) == SAMPLE_RATE), rates[-1])
    known = set(vocabulary)
    clips = []
    for group in groups:
        labels_file = root / f"{group}.json"
        if not labels_file.is_file():
            raise MAEASTError(f"{root}: missing {labels_file.name} for split_mode {mode}")
        for name, labels in json.loads(labels_file.read_text()).items():
            unknown = set(labels) - known
            if unknown:
                raise MAEASTError(
                    f"{labels_file}: clip {name} has label(s) {sorted(unknown)} that are not in "
                    "labelvocabulary.csv"
                )
            clips.append(Clip(audio_root / group / name, tuple(labels), group))
    multilabel = meta.get("prediction_type", "multiclass") == "multilabel"
    return finish_dataset(
        meta.get("task_name", root.name), root, "hear", clips, multilabel, partition, vocabulary, groups
    )


def _sample_labels(sample) -> tuple[tuple[str, ...], dict[str, str]]:
    """(labels, {"fold"/"split": name}) from a sample's .cls member or its .json ("label" or
    "labels", optional "fold" or "split"); no labels when it has none or they are unreadable."""
    try:
        found = sample.labels()
    except ShardError:
        return (), {}
    if "cls" in found:
        return (str(found["cls"]),), {}
    meta = found.get("json")
    if not isinstance(meta, dict):
        return (), {}
    labels = meta.get("labels", meta.get("label"))
    labels = labels if isinstance(labels, list) else [] if labels is None else [labels]
    return tuple(str(label) for label in labels), {k: str(meta[k]) for k in ("fold", "split") if k in meta}


def read_shards(spec: str) -> ProbeDataset:
    """WebDataset shards (.tar files, globs, brace ranges): one clip per sample, labels from its
    .cls member or its .json ("label"/"labels", optional "fold" or "split"). Samples without
    labels are left out with a warning; samples whose audio is broken are kept and reported as
    skipped when read."""
    shards = expand_shards(spec)
    clips, unlabelled, kinds = [], 0, set()
    for shard in shards:
        for sample in index_shard(shard).samples:
            labels, group = _sample_labels(sample)
            if not labels:
                unlabelled += 1
                continue
            kinds.update(group)
            member = None if sample.error else sample.audio()
            clips.append(Clip(Path(shard) / sample.key, labels, next(iter(group.values()), None), member,
                              sample.error))
    if len(kinds) > 1:
        raise MAEASTError(f"{spec}: samples give both folds and splits; use one of them")
    partition = {"fold": "folds", "split": "splits"}.get(next(iter(kinds), ""), "none")
    if partition != "none" and any(c.group is None for c in clips):
        raise MAEASTError(f"{spec}: some samples have a {next(iter(kinds))} and others do not")
    multilabel = any(len(c.labels) > 1 for c in clips)
    root = shards[0].parent
    ds = finish_dataset(root.name, root, "shards", clips, multilabel, partition)
    if unlabelled:
        warn(f"{unlabelled} sample(s) carry no .cls or .json label: left out", ds.warnings)
    return ds


def detect_layout(path: Path) -> str:
    if is_shard_spec(path):
        return "shards"
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return "csv"
        raise MAEASTError(f"{path}: a dataset file must be a .csv (path,label[,fold|split])")
    if not path.is_dir():
        raise MAEASTError(f"dataset not found: {path}")
    if (path / "meta" / "esc50.csv").is_file():
        return "esc50"
    if (path / "task_metadata.json").is_file():
        return "hear"
    if (path / "validation_list.txt").is_file() or (path / "testing_list.txt").is_file():
        return "speechcommands"
    return "folder"


READERS = {
    "folder": read_folder,
    "csv": read_csv,
    "esc50": read_esc50,
    "speechcommands": read_speech_commands,
    "hear": read_hear,
    "shards": read_shards,
}


def load_dataset(path: str | Path, layout: str = "auto") -> ProbeDataset:
    """Read a dataset in any supported layout ('auto' detects it)."""
    if layout not in LAYOUTS:
        raise MAEASTError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if layout in ("auto", "shards") and is_shard_spec(path):
        return read_shards(str(path))
    path = Path(path).expanduser()
    if not path.exists():
        raise MAEASTError(f"dataset not found: {path}")
    layout = detect_layout(path) if layout == "auto" else layout
    try:
        return READERS[layout](path)
    except (OSError, json.JSONDecodeError, KeyError, csv.Error) as err:
        raise MAEASTError(
            f"{path}: cannot read it as a {layout} dataset ({type(err).__name__}: {err})"
        ) from err


@dataclass(frozen=True)
class Split:
    """One evaluation: clip indices to train on, to pick hyper-parameters on, and to test on."""

    name: str
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray


def _stratify_key(ds: ProbeDataset) -> np.ndarray:
    """A class per clip for stratification (the rarest label for multilabel clips)."""
    matrix = ds.label_matrix()
    counts = matrix.sum(0)
    return np.where(matrix > 0, counts[None, :], np.inf).argmin(1)


def stratified_assign(
    indices: np.ndarray, key: np.ndarray, parts: int, rng: np.random.Generator
) -> np.ndarray:
    """Part number (0..parts-1) per index, dealing each class's shuffled clips round-robin."""
    assignment = np.empty(len(indices), dtype=np.int64)
    offset = 0
    for cls in np.unique(key[indices]):
        members = np.flatnonzero(key[indices] == cls)
        members = members[rng.permutation(len(members))]
        assignment[members] = (np.arange(len(members)) + offset) % parts
        offset += len(members)
    return assignment


def make_splits(
    ds: ProbeDataset, *, num_folds: int = 5, valid_fraction: float = 0.2, seed: int = 0
) -> list[Split]:
    """Train/valid/test index sets.

    folds: k-fold cross-validation, fold i is the test set and fold i+1 (cyclic) the validation
    set (as heareval does); with 2 folds the validation set is carved from the training fold.
    splits: train/valid/test as given (a stratified `valid_fraction` of train if no valid split).
    none: `num_folds` stratified folds are made with the seed, then as for folds.
    """
    rng = np.random.default_rng(seed)
    key = _stratify_key(ds)
    all_idx = np.arange(len(ds))
    if ds.partition == "none":
        if num_folds < 2:
            raise MAEASTError("--folds must be at least 2 for a dataset without folds or splits")
        part = stratified_assign(all_idx, key, num_folds, rng)
        names = [str(i + 1) for i in range(num_folds)]
        groups = np.array([names[p] for p in part], dtype=object)
        partition, order = "folds", names
    else:
        groups = np.array([c.group for c in ds.clips], dtype=object)
        partition, order = ds.partition, ds.groups

    def carve(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        parts = max(2, round(1 / valid_fraction))
        part = stratified_assign(train, key, parts, rng)
        return train[part != 0], train[part == 0]

    splits = []
    if partition == "folds":
        for name in order:
            if not (groups == name).any():
                raise MAEASTError(f"fold {name!r} of {ds.name} is empty: every fold needs clips")
        if len(order) < 2:
            raise MAEASTError(f"{ds.name} has a single fold ({order}): cross-validation needs at least 2")
        for i, name in enumerate(order):
            test = all_idx[groups == name]
            if len(order) >= 3:
                valid_name = order[(i + 1) % len(order)]
                valid = all_idx[groups == valid_name]
                train = all_idx[(groups != name) & (groups != valid_name)]
            else:
                train, valid = carve(all_idx[groups != name])
            splits.append(Split(f"fold {name}", train, valid, test))
    else:
        aliases = {
            "train": "train",
            "valid": "valid",
            "validation": "valid",
            "val": "valid",
            "dev": "valid",
            "test": "test",
            "testing": "test",
            "eval": "test",
        }
        unknown = sorted({g for g in groups if g not in aliases})
        if unknown:
            raise MAEASTError(f"{ds.name}: unknown split name(s) {unknown}; use train, valid, test")
        role = np.array([aliases[g] for g in groups], dtype=object)
        train, valid, test = (all_idx[role == r] for r in ("train", "valid", "test"))
        if len(train) == 0 or len(test) == 0:
            raise MAEASTError(
                f"{ds.name}: the train and test splits must both hold clips "
                f"(train {len(train)}, test {len(test)})"
            )
        if len(valid) == 0:
            train, valid = carve(train)
        splits.append(Split("test", train, valid, test))
    check_splits(ds, splits)
    return splits


def check_splits(ds: ProbeDataset, splits: list[Split]) -> None:
    """Warn about labels seen in valid/test but never in the split's training data."""
    matrix = ds.label_matrix() > 0
    for split in splits:
        if len(split.train) == 0 or len(split.valid) == 0:
            raise MAEASTError(f"{ds.name} {split.name}: no clips left to train on or to validate on")
        seen = matrix[split.train].any(0)
        for part, idx in (("valid", split.valid), ("test", split.test)):
            unseen = matrix[idx][:, ~seen].any(1)
            if unseen.any():
                names = [ds.classes[c] for c in np.flatnonzero(~seen & matrix[idx].any(0))]
                warn(
                    f"{ds.name} {split.name}: {int(unseen.sum())} {part} clip(s) have labels never "
                    f"seen in training ({', '.join(names[:5])}); they count as errors",
                    ds.warnings,
                )
