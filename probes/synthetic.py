"""Seeded synthetic probe datasets in every supported layout (tests, smoke runs, model cards).

Classes are sounds a spectrogram model can tell apart: low/high tones, rising/falling chirps,
white/brown noise, impulse trains, amplitude-modulated tones and, optionally, spoken words
(espeak-ng). Every clip gets random parameters within its class and background noise at a
random SNR, so the task is not trivial at low SNR.

    python -m probes.synthetic OUT_DIR --layout esc50 --classes 8 --per-class 20
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from maeast_embed.errors import MAEASTError
from maeast_embed.frontend import SAMPLE_RATE

SOUND_CLASSES = (
    "tone_low",
    "tone_high",
    "chirp_up",
    "chirp_down",
    "white_noise",
    "brown_noise",
    "impulse_train",
    "am_tone",
)
SYNTH_LAYOUTS = ("folder", "csv", "esc50", "speechcommands", "hear")


def _sweep(t: np.ndarray, f0: float, f1: float) -> np.ndarray:
    seconds = max(t[-1], 1e-3)
    return np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds)))


def espeak_ng(text: str, args: list[str] | tuple[str, ...] = ()) -> np.ndarray:
    """`text` spoken by espeak-ng with extra command-line `args` (voice, speed, ...), 16 kHz mono."""
    if shutil.which("espeak-ng") is None:
        raise MAEASTError("spoken audio needs espeak-ng (apt-get install espeak-ng)")
    from maeast_embed.audio import load_audio

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "speech.wav"
        result = subprocess.run(["espeak-ng", *args, "-w", str(out), text], capture_output=True)
        if result.returncode != 0 or not out.is_file():
            raise MAEASTError(f"espeak-ng {' '.join(args)} failed: {result.stderr.decode(errors='replace')}")
        return load_audio(out).numpy()


def speak(word: str, rng: np.random.Generator) -> np.ndarray:
    """A spoken word from espeak-ng at a random speed and pitch, 16 kHz."""
    speed, pitch = int(rng.integers(120, 200)), int(rng.integers(20, 80))
    return espeak_ng(word, ["-s", str(speed), "-p", str(pitch)])


def synth_clip(kind: str, seconds: float, rng: np.random.Generator, snr_db: float = 20.0) -> np.ndarray:
    """One clip of class `kind` (a SOUND_CLASSES name or 'word:<text>'), float32 16 kHz."""
    n = int(round(seconds * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    if kind == "tone_low":
        x = np.sin(2 * np.pi * rng.uniform(200, 500) * t + rng.uniform(0, 2 * np.pi))
    elif kind == "tone_high":
        x = np.sin(2 * np.pi * rng.uniform(1500, 3500) * t + rng.uniform(0, 2 * np.pi))
    elif kind == "chirp_up":
        x = _sweep(t, rng.uniform(200, 600), rng.uniform(2500, 5000))
    elif kind == "chirp_down":
        x = _sweep(t, rng.uniform(2500, 5000), rng.uniform(200, 600))
    elif kind == "white_noise":
        x = rng.standard_normal(n)
    elif kind == "brown_noise":
        x = np.cumsum(rng.standard_normal(n))
        x = x - np.convolve(x, np.ones(400) / 400, mode="same")  # remove the drift, keep the red slope
    elif kind == "impulse_train":
        x = np.zeros(n)
        period = int(SAMPLE_RATE / rng.uniform(5, 15))
        x[int(rng.integers(0, period)) :: period] = 1.0
        x = np.convolve(x, np.exp(-np.arange(80) / 10.0), mode="same")
    elif kind == "am_tone":
        carrier = np.sin(2 * np.pi * rng.uniform(500, 1500) * t)
        x = carrier * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(4, 12) * t))
    elif kind.startswith("word:"):
        word = speak(kind[5:], rng)
        x = np.zeros(n)
        start = int(rng.integers(0, max(1, n - word.size)))
        piece = word[: n - start]
        x[start : start + piece.size] = piece
    else:
        raise MAEASTError(f"unknown synthetic sound class {kind!r}; choose from {SOUND_CLASSES} or word:TEXT")
    x = x / (np.sqrt(np.mean(x**2)) + 1e-12)
    background = rng.standard_normal(n) * 10 ** (-snr_db / 20)
    x = (x + background) * rng.uniform(0.05, 0.2)
    return np.clip(x, -1, 1).astype(np.float32)


def _classes(num_classes: int, words: tuple[str, ...], sounds: bool = True) -> list[str]:
    names = list(SOUND_CLASSES if sounds else ()) + [f"word:{w}" for w in words]
    if not 2 <= num_classes <= len(names):
        raise MAEASTError(f"num_classes must be in 2..{len(names)} (add words for more), got {num_classes}")
    return names[:num_classes]


def write_dataset(
    root: str | Path,
    layout: str = "folder",
    *,
    num_classes: int = 5,
    per_class: int = 10,
    seconds: float = 1.0,
    seed: int = 0,
    snr_db: tuple[float, float] = (10.0, 30.0),
    num_folds: int = 5,
    multilabel: bool = False,
    csv_group: str | None = "fold",
    corrupt: int = 0,
    words: tuple[str, ...] = (),
    sounds: bool = True,
) -> Path:
    """Write a synthetic dataset in `layout`; returns the path to give `maeast-embed probe`.

    Clip i of a class goes to fold i % num_folds (or, for split layouts, test when i % 5 == 0,
    valid when i % 5 == 1, else train). `multilabel` (csv and hear layouts) mixes a second class
    into every other clip. `corrupt` adds that many unreadable '.wav' files (listed like clips).
    Classes: SOUND_CLASSES (unless `sounds` is False) then `words`, the first `num_classes`.
    """
    if layout not in SYNTH_LAYOUTS:
        raise MAEASTError(f"layout must be one of {SYNTH_LAYOUTS}, got {layout!r}")
    if multilabel and layout not in ("csv", "hear"):
        raise MAEASTError("multilabel synthetic data needs the csv or hear layout")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    kinds = _classes(num_classes, words, sounds)
    names = [k.replace("word:", "word_") for k in kinds]
    split_of = {0: "test", 1: "valid"}
    entries = []  # (class index, labels, index within class, audio)
    for c, kind in enumerate(kinds):
        for i in range(per_class):
            audio = synth_clip(kind, seconds, rng, rng.uniform(*snr_db))
            labels = [names[c]]
            if multilabel and i % 2:
                other = (c + 1 + int(rng.integers(0, num_classes - 1))) % num_classes
                audio = np.clip(audio + synth_clip(kinds[other], seconds, rng, rng.uniform(*snr_db)), -1, 1)
                labels.append(names[other])
            entries.append((c, labels, i, audio))
    for k in range(corrupt):
        entries.append((k % num_classes, [names[k % num_classes]], per_class + k, None))

    def fold(i: int) -> int:
        return i % num_folds

    def save(path: Path, audio: np.ndarray | None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if audio is None:
            path.write_bytes(b"this is not audio\x00" * 4)
        else:
            sf.write(str(path), audio, SAMPLE_RATE, subtype="PCM_16")

    if layout == "folder":
        for c, _, i, audio in entries:
            save(root / names[c] / f"{names[c]}_{i:03d}.wav", audio)
        return root
    if layout == "csv":
        rows = []
        for c, labels, i, audio in entries:
            relative = f"audio/{names[c]}_{i:03d}.wav"
            save(root / relative, audio)
            group = {"fold": str(fold(i) + 1), "split": split_of.get(i % 5, "train")}.get(csv_group)
            rows.append([relative, ";".join(labels)] + ([group] if csv_group else []))
        with open(root / "labels.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "label"] + ([csv_group] if csv_group else []))
            writer.writerows(rows)
        return root / "labels.csv"
    if layout == "esc50":
        rows = []
        for c, _, i, audio in entries:
            filename = f"{fold(i) + 1}-{1000 * c + i}-A-{c}.wav"
            save(root / "audio" / filename, audio)
            rows.append([filename, fold(i) + 1, c, names[c], "False", 1000 * c + i, "A"])
        (root / "meta").mkdir(exist_ok=True)
        with open(root / "meta" / "esc50.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["filename", "fold", "target", "category", "esc10", "src_file", "take"])
            writer.writerows(rows)
        return root
    if layout == "speechcommands":
        lists: dict[str, list[str]] = {"valid": [], "test": []}
        for c, _, i, audio in entries:
            relative = f"{names[c]}/{i:08x}_nohash_0.wav"
            save(root / relative, audio)
            if i % 5 in split_of:
                lists[split_of[i % 5]].append(relative)
        save(root / "_background_noise_" / "white_noise.wav", synth_clip("white_noise", seconds, rng))
        (root / "validation_list.txt").write_text("\n".join(lists["valid"]) + "\n")
        (root / "testing_list.txt").write_text("\n".join(lists["test"]) + "\n")
        return root
    # hear
    groups = [f"fold{k:02d}" for k in range(num_folds)]
    labels_by_group: dict[str, dict[str, list[str]]] = {g: {} for g in groups}
    for c, labels, i, audio in entries:
        group = groups[fold(i)]
        filename = f"{names[c]}_{i:03d}.wav"
        save(root / str(SAMPLE_RATE) / group / filename, audio)
        labels_by_group[group][filename] = labels
    for group, labels in labels_by_group.items():
        (root / f"{group}.json").write_text(json.dumps(labels, indent=1))
    with open(root / "labelvocabulary.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["idx", "label"])
        writer.writerows(enumerate(names))
    meta = {
        "task_name": root.name,
        "version": "synthetic",
        "embedding_type": "scene",
        "prediction_type": "multilabel" if multilabel else "multiclass",
        "split_mode": "presplit_kfold",
        "nfolds": num_folds,
        "sample_duration": seconds,
        "evaluation": ["mAP"] if multilabel else ["top1_acc"],
    }
    (root / "task_metadata.json").write_text(json.dumps(meta, indent=1))
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--layout", choices=SYNTH_LAYOUTS, default="folder")
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--multilabel", action="store_true")
    parser.add_argument(
        "--words", default="", help="comma-separated words spoken by espeak-ng as extra classes"
    )
    parser.add_argument("--no-sounds", action="store_true", help="word classes only")
    parser.add_argument("--snr", default="10,30", help="background-noise SNR range in dB: LOW,HIGH")
    args = parser.parse_args(argv)
    low, high = (float(v) for v in args.snr.split(","))
    words = tuple(w for w in args.words.split(",") if w)
    print(
        write_dataset(
            args.out,
            args.layout,
            num_classes=args.classes,
            per_class=args.per_class,
            seconds=args.seconds,
            seed=args.seed,
            snr_db=(low, high),
            multilabel=args.multilabel,
            words=words,
            sounds=not args.no_sounds,
        )
    )


if __name__ == "__main__":
    main()
