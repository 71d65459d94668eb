"""Benchmark `maeast-embed extract` on CPU: files/s, real-time factor, stage shares, dtypes.

Makes a folder of N clips x S seconds (16 kHz 16-bit wav), then for each --dtype:
  * end to end: `run_extract` on the folder (decode workers, batching across files, .npz
    writes, manifest), counting forward passes to report files per forward;
  * stage breakdown on the same clips and batches: decoding (load_audio), Kaldi fbank
    (kaldi_fbank) and encoder (tokenize + transformer, weights held in the dtype);
  * for non-float32 dtypes, cosine similarity of every frame embedding to float32's.
Prints one JSON object. Random base-size weights unless --model names a checkpoint.

    python benchmarks/bench_extract.py --threads 2 --files 200 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from maeast_embed.audio import load_audio
from maeast_embed.checkpoint import load_model, save_official
from maeast_embed.config import preset
from maeast_embed.extract import ExtractOptions, run_extract
from maeast_embed.features import Embedder
from maeast_embed.frontend import kaldi_fbank
from maeast_embed.model import MAEAST
from maeast_embed.precision import compute_dtype


def make_clips(folder: Path, count: int, seconds: float) -> list[Path]:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * 16000)) / 16000
    paths = []
    for i in range(count):
        wave = 0.2 * np.sin(2 * np.pi * rng.uniform(100, 4000) * t) + 0.05 * rng.standard_normal(t.size)
        path = folder / f"clip{i:04d}.wav"
        sf.write(str(path), wave.astype(np.float32), 16000, subtype="PCM_16")
        paths.append(path)
    return paths


def stage_times(embedder: Embedder, paths: list[Path]) -> dict[str, float]:
    """Seconds spent decoding, in fbank and in the encoder, each measured alone."""
    start = time.perf_counter()
    waves = [load_audio(p) for p in paths]
    decode = time.perf_counter() - start
    fbank_s = encoder_s = 0.0
    tokens_dtype = compute_dtype(embedder.dtype)  # the embedder's model is held in its dtype
    with torch.inference_mode():
        for first in range(0, len(waves), embedder.batch_size):
            batch = torch.stack(waves[first : first + embedder.batch_size])
            start = time.perf_counter()
            fbank, lengths = kaldi_fbank(batch)
            fbank_s += time.perf_counter() - start
            start = time.perf_counter()
            tokens, mask = embedder.model.tokenize(fbank, lengths)
            embedder.model(tokens.to(tokens_dtype), mask)
            encoder_s += time.perf_counter() - start
    return {"decode_s": decode, "fbank_s": fbank_s, "encoder_s": encoder_s}


def frame_cosines(a_dir: Path, b_dir: Path) -> dict[str, float]:
    cos = []
    for path in sorted(a_dir.glob("*.npz")):
        a, b = np.load(path)["embedding"], np.load(b_dir / path.name)["embedding"]
        cos.append((a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1))
    cos = np.concatenate(cos)
    return {"min": float(cos.min()), "mean": float(cos.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="checkpoint or registered name (default: random base patch model)")
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.model:
            model = load_model(args.model)
        else:
            torch.manual_seed(0)
            save_official(MAEAST(preset("patch")), tmp / "random_patch.pt")  # provenance: a real sha256
            model = load_model(tmp / "random_patch.pt")
        (tmp / "audio").mkdir()
        paths = make_clips(tmp / "audio", args.files, args.seconds)
        audio_seconds = args.files * args.seconds
        report = {
            "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "threads": args.threads,
            "model": {
                "variant": model.cfg.variant,
                "layers": model.cfg.encoder_layers,
                "dim": model.cfg.embed_dim,
            },
            "files": args.files,
            "seconds_per_file": args.seconds,
            "batch_size": args.batch_size,
            "num_workers": args.num_workers,
            "dtypes": {},
        }
        for dtype in args.dtypes.split(","):
            embedder = Embedder(model, device="cpu", dtype=dtype, batch_size=args.batch_size)
            stage_times(embedder, paths[: args.batch_size])  # warm-up (oneDNN kernels, allocator)
            forwards: list[int] = []
            hook = embedder.model.register_forward_pre_hook(
                lambda module, inputs, seen=forwards: seen.append(1)
            )
            summary = run_extract(
                [tmp / "audio"],
                tmp / f"out_{dtype}",
                embedder,
                ExtractOptions(num_workers=args.num_workers),
                progress=False,
            )
            hook.remove()
            assert summary.ok and summary.done == args.files, summary.failed
            stages = stage_times(embedder, paths)
            staged = sum(stages.values())
            entry = {
                "total_s": round(summary.seconds, 3),
                "files_per_s": round(args.files / summary.seconds, 3),
                "real_time_factor": round(summary.seconds / audio_seconds, 5),
                "x_real_time": round(audio_seconds / summary.seconds, 2),
                "forward_passes": len(forwards),
                "files_per_forward": round(args.files / max(len(forwards), 1), 2),
                "stages_s": {k: round(v, 3) for k, v in stages.items()},
                "stage_share": {k.removesuffix("_s"): round(v / staged, 4) for k, v in stages.items()},
                "decode_plus_fbank_share": round((stages["decode_s"] + stages["fbank_s"]) / staged, 4),
            }
            if dtype != "float32" and "float32" in report["dtypes"]:
                entry["cosine_vs_float32"] = frame_cosines(tmp / "out_float32", tmp / f"out_{dtype}")
                entry["speedup_vs_float32"] = round(
                    entry["files_per_s"] / report["dtypes"]["float32"]["files_per_s"], 3
                )
            report["dtypes"][dtype] = entry
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
