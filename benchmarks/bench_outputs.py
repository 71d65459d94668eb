"""Output formats side by side: many short clips at clip level and some 10 s clips at frame level
through npz, parquet and webdataset (one Embedder for all, so the encoder costs the same):
files written, bytes, extraction files/s, time to load everything back; float16 storage's size
and its cosine to float32. Prints one JSON object.

    python benchmarks/bench_outputs.py --clips 2000 --long 8
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from maeast_embed import load_embeddings
from maeast_embed.extract import ExtractOptions, run_extract
from maeast_embed.extract.convert import convert
from maeast_embed.features import Embedder

FORMATS = ("npz", "parquet", "webdataset")


def make_clips(folder: Path, count: int, seconds: float, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    for i in range(count):
        sub = folder / f"{i // 1000:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        wave = 0.2 * np.sin(2 * np.pi * rng.uniform(100, 4000) * t) + 0.05 * rng.standard_normal(t.size)
        sf.write(sub / f"clip{i:06d}.wav", wave.astype(np.float32), 16000, subtype="PCM_16")
    return folder


def folder_size(folder: Path) -> tuple[int, int]:
    """(output files, bytes), the manifest and lock left out."""
    files = [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith((".", "manifest"))]
    return len(files), sum(p.stat().st_size for p in files)


def glob_npz(folder: Path) -> np.ndarray:
    """What a user does without the reader: glob the .npz files and stack them."""
    arrays = []
    for path in sorted(folder.rglob("*.npz")):
        with np.load(path) as data:
            arrays.append(data["embedding"])
    return np.stack(arrays)


def extract(embedder: Embedder, audio: Path, out: Path, fmt: str, granularity: str) -> dict:
    options = ExtractOptions(granularity=granularity, format=fmt, num_workers=1)
    start = time.perf_counter()
    summary = run_extract([audio], out, embedder, options, progress=False)
    seconds = time.perf_counter() - start
    assert summary.ok, summary.lines()
    files, size = folder_size(out)
    return {"files": files, "bytes": size, "extract_s": round(seconds, 2),
            "files_per_s": round(summary.done / seconds, 1)}


def load_all(out: Path, granularity: str) -> list[int]:
    """Everything back: one stacked array (clip level), or every record (frame level)."""
    if granularity == "clip":
        return list(load_embeddings(out).to_numpy()[1].shape)
    return [sum(r.embedding.shape[0] for r in load_embeddings(out))]


def time_loads(loads: dict, repeats: int) -> dict:
    """Seconds of each load, interleaved `repeats` times: best and first of each."""
    times: dict = {name: [] for name in loads}
    for _ in range(repeats):
        for name, load in loads.items():
            start = time.perf_counter()
            load()
            times[name].append(time.perf_counter() - start)
    return {name: {"best_s": round(min(t), 4), "first_s": round(t[0], 4)} for name, t in times.items()}


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=2000, help="short clips (clip level)")
    parser.add_argument("--clip-seconds", type=float, default=1.0)
    parser.add_argument("--long", type=int, default=8, help="10 s clips (frame level)")
    parser.add_argument("--model", default="maeast-small")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats of each load")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0: torch's default); 1 where other jobs share the cores")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="bench_outputs_"))
    try:
        embedder = Embedder(args.model, device="cpu", dtype=args.dtype, batch_size=8)
        short = make_clips(root / "short", args.clips, args.clip_seconds, 0)
        long = make_clips(root / "long", args.long, 10.0, 1)
        result: dict = {"clips": args.clips, "clip_seconds": args.clip_seconds, "long_clips": args.long,
                        "model": args.model, "dtype": embedder.dtype, "cores": os.cpu_count(),
                        "torch_threads": torch.get_num_threads(),
                        "clip_level": {}, "frame_level": {}}
        warm = make_clips(root / "warm", 16, args.clip_seconds, 2)
        for fmt in FORMATS:  # first calls, imports and caches paid before anything is timed
            extract(embedder, warm, root / f"warm-{fmt}", fmt, "clip")
        for fmt in FORMATS:
            result["clip_level"][fmt] = extract(embedder, short, root / f"clip-{fmt}", fmt, "clip")
        for fmt in FORMATS:
            result["frame_level"][fmt] = extract(embedder, long, root / f"frame-{fmt}", fmt, "frame")
        for level, prefix in (("clip_level", "clip"), ("frame_level", "frame")):
            loads = {f"{fmt}_reader": (lambda f=fmt, p=prefix: load_all(root / f"{p}-{f}", p))
                     for fmt in FORMATS}
            if level == "clip_level":
                loads = {"npz_glob_np_load": lambda: glob_npz(root / "clip-npz"), **loads}
            result[level]["load"] = time_loads(loads, args.repeats)
        loads = result["clip_level"]["load"]
        result["clip_load_speedup_vs_glob"] = {
            fmt: round(loads["npz_glob_np_load"]["best_s"] / loads[f"{fmt}_reader"]["best_s"], 1)
            for fmt in FORMATS[1:]}
        clip = result["clip_level"]
        result["clips_per_file"] = {fmt: round(args.clips / clip[fmt]["files"], 1) for fmt in FORMATS}
        result["clip_extract_speed_vs_npz"] = {
            fmt: round(clip[fmt]["files_per_s"] / clip["npz"]["files_per_s"], 2) for fmt in FORMATS[1:]}
        globbed = glob_npz(root / "clip-npz")

        convert(root / "clip-parquet", root / "clip-parquet16", "parquet", storage_dtype="float16")
        keys32, full = load_embeddings(root / "clip-parquet").to_numpy()
        keys16, half = load_embeddings(root / "clip-parquet16").to_numpy()
        assert keys32 == keys16 and np.array_equal(full, globbed)  # both in key order
        cos = cosine(half, full)
        result["float16"] = {
            "parquet_bytes_float32": folder_size(root / "clip-parquet")[1],
            "parquet_bytes_float16": folder_size(root / "clip-parquet16")[1],
            "cosine_to_float32_min": float(cos.min()), "cosine_to_float32_mean": float(cos.mean()),
            "max_abs_diff": float(np.abs(half.astype(np.float32) - full).max()),
        }
        print(json.dumps(result))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
