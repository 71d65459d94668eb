"""Pretraining input pipeline: today's loader against the one before windowed reads, side by side.

The baseline is the pretraining data module (and the audio module it used) as they were before
windowed reads came in, taken from git (`--baseline-rev`, default: the parent of the commit that
added `plan_windows`) into a temporary folder and imported next to the current code. Measured:
  * clips/s per worker: one process, one torch thread (as a DataLoader worker), every batch of an
    epoch read and collated (a clip is one crop of a batch); also the baseline loader on today's
    audio module (whole files decoded and resampled, then cropped), which reads M4A;
      (a) 10 s FLAC clips, whole clips (no max_seconds);
      (b) 60 s 44.1 kHz stereo WAV and M4A (AAC) files, max_seconds=6;
  * the share of time a tiny-model pretraining run on (b) waits on data (`data_wait` of
    metrics.jsonl, weighted by interval length, first interval with the worker start-up apart),
    the baseline loader plugged into the same loop;
  * files/s of decoding (load_audio) 10 s clips as M4A against the same clips as FLAC.
Prints one JSON object. The machine may be shared: compare the ratios, measured in one run.

    python benchmarks/bench_loader.py --files 16 --steps 120
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import soundfile as sf
import torch

from maeast_embed.audio import load_audio
from maeast_embed.errors import MAEASTError
from maeast_embed.pretrain import build_config, train
from maeast_embed.pretrain import data as current

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from media import encode  # noqa: E402 - the test helper that writes AAC with PyAV

SR = 16000


def baseline_modules(rev: str | None, folder: Path) -> tuple[ModuleType, ModuleType]:
    """The data module at `rev` importing the audio module at `rev` (both from git), and the
    same data module importing today's audio module (whole-file reads, today's decoders)."""
    if rev is None:
        added = subprocess.run(["git", "log", "--format=%H", "-S", "def plan_windows", "--",
                                "maeast_embed/pretrain/data.py"], cwd=REPO, capture_output=True,
                               text=True, check=True).stdout.split()
        rev = f"{added[-1]}^"

    def load(path: str, name: str, replace: tuple[str, str] | None = None) -> ModuleType:
        text = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout
        if replace:
            text = text.replace(*replace)
        file = folder / f"{name.rsplit('.', 1)[1]}.py"
        file.write_text(text)
        spec = importlib.util.spec_from_file_location(name, file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    load("maeast_embed/audio.py", "maeast_embed._baseline_audio")
    old = load("maeast_embed/pretrain/data.py", "maeast_embed.pretrain._baseline_data",
               ("from ..audio import", "from .._baseline_audio import"))
    return old, load("maeast_embed/pretrain/data.py", "maeast_embed.pretrain._whole_file_data")


def signal(seconds: float, rate: int, channels: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    base = 0.2 * np.sin(2 * np.pi * rng.uniform(100, 2000) * t) + 0.05 * rng.standard_normal(t.size)
    return np.stack([base * (1 - 0.3 * c) for c in range(channels)], 1).astype(np.float32)


def make_folder(folder: Path, count: int, seconds: float, rate: int, channels: int, kind: str) -> Path:
    folder.mkdir(parents=True)
    for i in range(count):
        data = signal(seconds, rate, channels, i)
        if kind == "m4a":
            encode(folder / f"c{i:03d}.m4a", data, rate, "aac", bit_rate=128000)
        else:
            sf.write(str(folder / f"c{i:03d}.{kind}"), data, rate, subtype="PCM_16")
    return folder


def clips_per_second(module: ModuleType, folder: Path, max_seconds: float | None, batch: int) -> dict:
    """Every batch of one epoch, read and collated in this process (one thread)."""
    model = build_config({"preset": "tiny-patch"}).model
    max_samples = int(max_seconds * SR) if max_seconds else None
    windowed = hasattr(module, "plan_windows")
    try:
        if windowed:
            clips = module.load_dataset_index([str(folder)], 2 * SR, max_samples)
        else:
            clips = module.load_dataset_index([str(folder)], 2 * SR)
    except MAEASTError as err:
        return {"clips_per_s": 0.0, "error": str(err)}
    plan = module.plan_epoch(np.array([c.num_samples for c in clips]), batch, seed=1, epoch=0)
    keys = [module.plan_windows(b, clips, 1, 0, max_samples) for b in plan] if windowed else plan
    dataset, collate = module.ClipDataset(clips, 2 * SR), module.Collator(model, clips, 1, 0, max_samples)
    start, delivered = time.perf_counter(), 0
    for batch_keys in keys:
        out = collate([dataset[k] for k in batch_keys])
        delivered += 0 if out.wave is None else out.wave.shape[0]
    seconds = time.perf_counter() - start
    return {"clips_per_s": round(delivered / seconds, 2), "clips": delivered, "index_entries": len(clips),
            "seconds": round(seconds, 2)}


def data_wait(folder: Path, run_dir: Path, steps: int, batch: int, workers: int,
              baseline: ModuleType | None) -> dict:
    """A tiny-model run on `folder`; with `baseline`, its loader in the same loop."""
    from maeast_embed.pretrain import loop

    saved = loop.load_dataset_index, loop.epoch_loader
    if baseline is not None:
        def old_loader(clips, plan, model, *, seed, epoch, min_samples, max_samples, num_workers, pin_memory):
            return torch.utils.data.DataLoader(
                baseline.ClipDataset(clips, min_samples), batch_sampler=plan,
                collate_fn=baseline.Collator(model, clips, seed, epoch, max_samples),
                num_workers=num_workers, pin_memory=pin_memory,
                generator=torch.Generator().manual_seed(seed + epoch),
            )

        loop.load_dataset_index = lambda sources, low, high: baseline.load_dataset_index(sources, low)
        loop.epoch_loader = old_loader
    cfg = build_config({
        "preset": "tiny-patch", "data": [str(folder)], "batch_size": batch, "max_seconds": 6.0,
        "max_steps": steps, "warmup_steps": 2, "num_workers": workers, "device": "cpu",
        "log_every": max(1, steps // 8), "save_every": 10 * steps, "progress": False,
    })
    try:
        start = time.perf_counter()
        train(cfg, run_dir)
        total = time.perf_counter() - start
    finally:
        loop.load_dataset_index, loop.epoch_loader = saved
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    spans = [cfg.log_every / r["steps_per_s"] for r in records]
    waits = [r["data_wait"] * s for r, s in zip(records, spans, strict=True)]
    return {
        "data_wait": round(sum(waits) / sum(spans), 3),
        "data_wait_after_first_interval": round(sum(waits[1:]) / sum(spans[1:]), 3),
        "steps_per_s": round(steps / sum(spans), 2),
        "run_seconds": round(total, 1),
    }


def decode_rate(folder: Path) -> float:
    paths = sorted(folder.iterdir())
    start = time.perf_counter()
    for path in paths:
        load_audio(path)
    return round(len(paths) / (time.perf_counter() - start), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=16, help="60 s files per format in (b)")
    parser.add_argument("--clips", type=int, default=48, help="10 s clips in (a) and the decode test")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=120, help="updates of each data-wait run")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the data-wait runs")
    parser.add_argument("--baseline-rev", default=None, help="git revision of the baseline loader")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        old, whole_file = baseline_modules(args.baseline_rev, tmp)
        flac = make_folder(tmp / "flac10", args.clips, 10.0, SR, 1, "flac")
        wav = make_folder(tmp / "wav60", args.files, 60.0, 44100, 2, "wav")
        m4a = make_folder(tmp / "m4a60", args.files, 60.0, 44100, 2, "m4a")
        decode = {kind: make_folder(tmp / f"dec_{kind}", args.clips, 10.0, 44100, 2, kind)
                  for kind in ("flac", "m4a")}
        torch.set_num_threads(1)  # as in a DataLoader worker
        result: dict = {"machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread",
                        "note": "a shared machine: compare ratios, measured side by side in this run"}
        for name, folder, max_seconds in (("a_flac_10s", flac, None), ("b_wav_60s_44k", wav, 6.0),
                                          ("b_m4a_60s_44k", m4a, 6.0)):
            before = clips_per_second(old, folder, max_seconds, args.batch)
            whole = clips_per_second(whole_file, folder, max_seconds, args.batch)
            after = clips_per_second(current, folder, max_seconds, args.batch)
            ratio = after["clips_per_s"] / before["clips_per_s"] if before["clips_per_s"] else None
            result[name] = {
                "baseline": before, "baseline_loader_todays_decoders": whole, "new": after,
                "speedup": ratio and round(ratio, 2),
                "speedup_vs_whole_file_reads": round(after["clips_per_s"] / whole["clips_per_s"], 2),
            }
        rates = {kind: decode_rate(folder) for kind, folder in decode.items()}
        result["decode_10s_44k_stereo_files_per_s"] = rates
        rates["m4a_vs_flac"] = round(rates["m4a"] / rates["flac"], 2)
        torch.set_num_threads(2)
        result["train_data_wait_b"] = {
            "wav_baseline": data_wait(wav, tmp / "run_old", args.steps, args.batch, args.workers, old),
            "wav_new": data_wait(wav, tmp / "run_wav", args.steps, args.batch, args.workers, None),
            "m4a_new": data_wait(m4a, tmp / "run_m4a", args.steps, args.batch, args.workers, None),
        }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
