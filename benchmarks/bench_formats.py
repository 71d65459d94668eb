"""Benchmark `maeast-embed extract` on the same clips stored as FLAC and as M4A (AAC): files/s
with the default (packaged) model, measured side by side in one process, alternating the two
folders over --rounds so that load on the machine falls on both alike. Also WebM (Opus) with
--webm. Prints one JSON object.

    python benchmarks/bench_formats.py --files 100 --seconds 10 --threads 2
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from maeast_embed.extract import ExtractOptions, run_extract
from maeast_embed.features import Embedder

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from media import encode  # noqa: E402 - the test helper that writes AAC/Opus with PyAV

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "arabic-speech-commands-train" / "audio"


def speech_like(seconds: float, seed: int) -> np.ndarray:
    """`seconds` of real speech (one-second clips of ../shared/data end to end) when present,
    else a tone-plus-noise signal, at 44.1 kHz like most AAC files."""
    rng = np.random.default_rng(seed)
    if SHARED.is_dir():
        names = sorted(SHARED.iterdir())
        parts = [sf.read(names[i], dtype="float32")[0] for i in rng.choice(len(names), int(np.ceil(seconds)))]
        wave = np.concatenate(parts)[: int(seconds * 16000)]
        t = np.arange(int(seconds * 44100)) / 44100
        return np.interp(t, np.arange(wave.size) / 16000, wave).astype(np.float32)
    t = np.arange(int(seconds * 44100)) / 44100
    return (0.2 * np.sin(2 * np.pi * rng.uniform(100, 2000) * t) + 0.05 * rng.standard_normal(t.size)).astype(
        np.float32
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="maeast-small")
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dtype", help="encoder dtype (default: the Embedder's default)")
    parser.add_argument("--webm", action="store_true", help="also WebM (Opus)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    embedder = Embedder(args.model, device="cpu", **({"dtype": args.dtype} if args.dtype else {}))
    formats = {"flac": ("flac", None), "m4a": ("aac", None)}
    if args.webm:
        formats["webm"] = ("libopus", "webm")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in formats:
            (tmp / name).mkdir()
        for i in range(args.files):
            wave = speech_like(args.seconds, i)
            sf.write(tmp / "flac" / f"clip{i:04d}.flac", wave, 44100)
            for name, (codec, container) in formats.items():
                if name != "flac":
                    rate = 48000 if codec == "libopus" else 44100
                    data = wave if rate == 44100 else np.interp(
                        np.arange(int(args.seconds * rate)) / rate, np.arange(wave.size) / 44100, wave
                    ).astype(np.float32)
                    encode(tmp / name / f"clip{i:04d}.{name}", data, rate, codec, container=container)
        run_extract([tmp / "flac"], tmp / "warm", embedder, ExtractOptions(), progress=False)  # warm-up
        rates: dict[str, list[float]] = {name: [] for name in formats}
        for round_ in range(args.rounds):
            for name in formats:
                summary = run_extract([tmp / name], tmp / f"out_{name}_{round_}", embedder,
                                      ExtractOptions(num_workers=args.num_workers), progress=False)
                assert summary.ok and summary.done == args.files, summary.failed
                rates[name].append(args.files / summary.seconds)
    best = {name: max(values) for name, values in rates.items()}
    report = {
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": args.threads,
        "model": args.model,
        "dtype": embedder.dtype,
        "files": args.files,
        "seconds_per_file": args.seconds,
        "num_workers": args.num_workers,
        "files_per_s": {name: [round(v, 3) for v in values] for name, values in rates.items()},
        "best_files_per_s": {name: round(v, 3) for name, v in best.items()},
        "ratio_to_flac": {name: round(v / best["flac"], 3) for name, v in best.items() if name != "flac"},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
