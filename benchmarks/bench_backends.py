"""Extraction backends side by side: torch float32, torch at the dtype `auto` picks, onnxruntime.

For `maeast-small` (packaged) and a base-size model (12 x 768 patch, random weights), on real
one-second FLAC recordings (decoded once; the timing covers `Embedder.frame_features`: fbank,
encoder, features) in batches of `--batch-size` files, the backends taking turns over
`--repeats` rounds:
  * files/s (best round) and the speed-up against torch float32;
  * cosine to torch float32 of every frame embedding (all layers), worst and mean, and the worst
    absolute difference;
  * batch independence: each file embedded alone against the same file in its batch, worst
    absolute difference.
The ONNX export (timed as `export_s`) goes to a temporary cache. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "arabic-speech-commands-train" / "audio"


def compare(features: list[torch.Tensor], reference: list[torch.Tensor]) -> dict[str, float]:
    a = torch.cat([f.flatten(0, -2) for f in features])
    b = torch.cat([f.flatten(0, -2) for f in reference])
    cosine = torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1)
    return {"cosine_min": round(float(cosine.min()), 7), "cosine_mean": round(float(cosine.mean()), 7),
            "max_abs_diff": float((a - b).abs().max())}


def bench_model(model, clips: list[np.ndarray], args) -> dict:
    from maeast_embed.features import Embedder

    kwargs = dict(device="cpu", batch_size=args.batch_size)
    t0 = time.perf_counter()
    engines = {"torch_float32": Embedder(model, dtype="float32", **kwargs)}
    auto = Embedder(model, dtype="auto", **kwargs)
    engines[f"torch_auto_{auto.dtype}"] = auto
    t1 = time.perf_counter()
    engines["onnxruntime_float32"] = Embedder(model, backend="onnxruntime", **kwargs)
    export_s = time.perf_counter() - t1
    times: dict[str, list[float]] = {name: [] for name in engines}
    outputs: dict[str, list[torch.Tensor]] = {}
    for _ in range(args.repeats):
        for name, engine in engines.items():
            start = time.perf_counter()
            outputs[name] = engine.frame_features(clips, layer="all")
            times[name].append(time.perf_counter() - start)
    reference = outputs["torch_float32"]
    base = min(times["torch_float32"])
    record = {"auto_reason": auto.dtype_reason, "export_s": round(export_s, 2),
              "setup_s": round(t1 - t0, 2)}
    for name, engine in engines.items():
        alone = [engine.frame_features([clip], layer="all")[0] for clip in clips[: args.alone]]
        record[name] = {
            "files_per_s": round(len(clips) / min(times[name]), 2),
            "speedup_vs_torch_float32": round(base / min(times[name]), 3),
            **compare(outputs[name], reference),
            "batch_vs_alone_max_abs_diff": float(max((a - b).abs().max()
                                                     for a, b in zip(alone, outputs[name]))),
        }
    return record


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATA, help="folder of FLAC recordings")
    parser.add_argument("--files", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--alone", type=int, default=8, help="files also embedded alone")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-base", action="store_true", help="only the packaged model")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    files = sorted(args.data.glob("*.flac"))[: args.files]
    if len(files) < args.files:
        sys.exit(f"need {args.files} FLAC files in {args.data} (see --data)")
    clips = [sf.read(f, dtype="float32")[0] for f in files]
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MAEAST_CACHE"] = tmp  # the ONNX exports go here, not into the user's cache
        from maeast_embed.checkpoint import load_model, save_official
        from maeast_embed.config import preset
        from maeast_embed.model import MAEAST

        result = {
            "files": len(clips),
            "seconds_per_file": round(float(np.mean([c.size for c in clips])) / 16000, 3),
            "batch_size": args.batch_size, "threads": args.threads, "repeats": args.repeats,
            "torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__,
            "cpu": next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                         if line.startswith("model name")), "unknown"),
            "maeast-small": bench_model(load_model("maeast-small"), clips, args),
        }
        if not args.skip_base:
            torch.manual_seed(0)
            base = MAEAST(preset("patch")).eval()
            with torch.no_grad():
                base.batch_norm.running_mean.fill_(-6.5)
                base.batch_norm.running_var.fill_(10.0)
            save_official(base, Path(tmp) / "base.pt")
            result["base_random_12x768"] = bench_model(load_model(Path(tmp) / "base.pt"), clips, args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
