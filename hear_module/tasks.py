"""Small synthetic tasks in the HEAR 2021 task layout, for smoke tests of the whole pipeline.

    python -m hear_module.tasks TASKS_DIR     # writes TASKS_DIR/toy_scene and TASKS_DIR/toy_event

Layout (what hear-eval-kit reads): `task_metadata.json`, `labelvocabulary.csv` (idx,label),
`<split>.json` labels and audio at `16000/<split>/<file>.wav`.
- toy_scene: scene, multiclass, `new_split_kfold` with `nfolds` folds; classes `low` (a
  250-400 Hz tone), `high` (a 2-4 kHz tone) and `noise` (band-limited noise bursts).
- toy_event: event, multilabel, `trainvaltest`; 4 s of faint noise holding one `beep`
  (1 kHz tone) and one `buzz` (a 150 Hz harmonic buzz) at random, non-overlapping times;
  labels in ms.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from maeast_embed.atomic import atomic_open

SR = 16000
SCENE_CLASSES = ("high", "low", "noise")
EVENT_CLASSES = ("beep", "buzz")


def _write_json(path: Path, data) -> None:
    with atomic_open(path, "w") as handle:
        json.dump(data, handle, indent=2)


def _write_task(root: Path, metadata: dict, labels: list[str], splits: dict[str, dict]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    _write_json(root / "task_metadata.json", metadata)
    (root / "labelvocabulary.csv").write_text(
        "idx,label\n" + "".join(f"{i},{label}\n" for i, label in enumerate(labels))
    )
    for split, items in splits.items():
        _write_json(root / f"{split}.json", {name: label for name, (_, label) in items.items()})
        for name, (audio, _) in items.items():
            path = root / str(SR) / split / name
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), audio, SR, subtype="PCM_16")
    return root


def _scene_clip(label: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    if label == "noise":
        white = rng.standard_normal(t.size)
        shaped = np.convolve(white, np.ones(4) / 4, mode="same")
        gate = (np.sin(2 * np.pi * rng.uniform(2, 5) * t) > -0.3).astype(float)
        audio = 0.3 * shaped * gate
    else:
        freq = rng.uniform(250, 400) if label == "low" else rng.uniform(2000, 4000)
        audio = rng.uniform(0.1, 0.4) * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
    return (audio + 0.005 * rng.standard_normal(t.size)).astype(np.float32)


def make_scene_task(
    root: str | Path, *, nfolds: int = 3, per_class: int = 4, seconds: float = 1.0, seed: int = 0
) -> Path:
    """A k-fold multiclass scene task (`per_class` clips of each class in every fold)."""
    rng = np.random.default_rng(seed)
    splits = {}
    for fold in range(nfolds):
        items = {}
        for label in SCENE_CLASSES:
            for k in range(per_class):
                items[f"{label}_{fold}_{k}.wav"] = (_scene_clip(label, seconds, rng), [label])
        splits[f"fold{fold:02d}"] = items
    metadata = {
        "task_name": "toy_scene",
        "version": "toy_scene-1",
        "embedding_type": "scene",
        "prediction_type": "multiclass",
        "split_mode": "new_split_kfold",
        "nfolds": nfolds,
        "sample_duration": seconds,
        "evaluation": ["top1_acc"],
        "splits": list(splits),
        "sample_rate": SR,
    }
    return _write_task(Path(root), metadata, list(SCENE_CLASSES), splits)


def _event_clip(seconds: float, rng: np.random.Generator) -> tuple[np.ndarray, list[dict]]:
    n = int(seconds * SR)
    audio = 0.005 * rng.standard_normal(n)
    events = []
    slots = rng.permutation(2)  # beep in one half of the clip, buzz in the other
    for label, slot in zip(EVENT_CLASSES, slots, strict=True):
        length = rng.uniform(0.4, 1.0)
        start = slot * seconds / 2 + rng.uniform(0.1, seconds / 2 - length - 0.1)
        t = np.arange(int(length * SR)) / SR
        if label == "beep":
            sound = 0.3 * np.sin(2 * np.pi * 1000 * t)
        else:
            sound = 0.1 * sum(np.sin(2 * np.pi * 150 * h * t) / h for h in range(1, 8))
        first = int(start * SR)
        audio[first : first + t.size] += sound
        events.append(
            {"label": label, "start": round(start * 1000, 3), "end": round((start + length) * 1000, 3)}
        )
    return audio.astype(np.float32), sorted(events, key=lambda e: e["start"])


def make_event_task(
    root: str | Path, *, counts: tuple[int, int, int] = (12, 4, 4), seconds: float = 4.0, seed: int = 1
) -> Path:
    """A train/valid/test multilabel event task with `counts` clips per split."""
    rng = np.random.default_rng(seed)
    splits = {
        split: {f"{split}_{k}.wav": _event_clip(seconds, rng) for k in range(count)}
        for split, count in zip(("train", "valid", "test"), counts, strict=True)
    }
    metadata = {
        "task_name": "toy_event",
        "version": "toy_event-1",
        "embedding_type": "event",
        "prediction_type": "multilabel",
        "split_mode": "trainvaltest",
        "sample_duration": seconds,
        "evaluation": ["event_onset_200ms_fms", "segment_1s_er"],
        "splits": list(splits),
        "sample_rate": SR,
    }
    return _write_task(Path(root), metadata, list(EVENT_CLASSES), splits)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        raise SystemExit("usage: python -m hear_module.tasks TASKS_DIR")
    out = Path(args[0])
    print(make_scene_task(out / "toy_scene"))
    print(make_event_task(out / "toy_event"))


if __name__ == "__main__":
    main()
