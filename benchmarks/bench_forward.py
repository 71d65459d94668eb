"""Frontend + encoder forward: this project vs s3prl's MAE-AST UpstreamExpert, side by side.

Prints one JSON line. Each contender runs in its own process (so peak RSS is its own) on the
same random-weight checkpoint and the same clips:

    python benchmarks/bench_forward.py [--preset patch] [--clips 8] [--seconds 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_contender(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    wavs = [torch.randn(int(args.seconds * 16000), generator=gen) * 0.1 for _ in range(args.clips)]
    if args.contender == "s3prl":
        from s3prl.upstream.mae_ast.expert import UpstreamExpert

        model = UpstreamExpert(args.checkpoint).eval()

        def forward():
            return model(wavs)["hidden_states"][-1]
    else:
        from maeast_embed.checkpoint import load_model
        from maeast_embed.frontend import kaldi_fbank

        model = load_model(args.checkpoint, progress=False)
        dtype = {"ours-fp32": None, "ours-bf16": torch.bfloat16}[args.contender]
        batch = torch.stack(wavs)

        def forward():
            fbank, frames = kaldi_fbank(batch)
            with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                hidden = model(*model.tokenize(fbank, frames))[-1]
            return hidden.float().reshape(hidden.shape[0], -1, model.cfg.tokens_per_step * hidden.shape[-1])

    times = []
    with torch.inference_mode():
        out = forward()  # warm-up
        for _ in range(args.repeats):
            start = time.perf_counter()
            out = forward()
            times.append(time.perf_counter() - start)
    torch.save(out[:, :, :64].clone(), args.output)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"median_s": statistics.median(times), "min_s": min(times), "peak_rss_mb": peak_mb}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="patch")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--contender", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.contender:
        run_contender(args)
        return

    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers import make_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = make_checkpoint(Path(tmp) / "bench.pt", args.preset)
        results, outputs = {}, {}
        for contender in ("s3prl", "ours-fp32", "ours-bf16"):
            outputs[contender] = Path(tmp) / f"{contender}.pt"
            command = [sys.executable, __file__, "--contender", contender, "--checkpoint", str(checkpoint),
                       "--output", str(outputs[contender]), "--preset", args.preset,
                       "--clips", str(args.clips), "--seconds", str(args.seconds),
                       "--threads", str(args.threads), "--repeats", str(args.repeats)]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            results[contender] = json.loads(done.stdout.strip().splitlines()[-1])
        ref, fp32, bf16 = (torch.load(outputs[c]) for c in ("s3prl", "ours-fp32", "ours-bf16"))
    steps = min(ref.shape[1], fp32.shape[1])
    record = {
        "benchmark": "forward",
        "preset": args.preset,
        "clips": args.clips,
        "seconds": args.seconds,
        "threads": args.threads,
        "torch": torch.__version__,
        **{f"{name}_{key}": value for name, r in results.items() for key, value in r.items()},
        "speedup_fp32_vs_s3prl": results["s3prl"]["median_s"] / results["ours-fp32"]["median_s"],
        "speedup_bf16_vs_s3prl": results["s3prl"]["median_s"] / results["ours-bf16"]["median_s"],
        "peak_ratio_fp32_vs_s3prl": results["ours-fp32"]["peak_rss_mb"] / results["s3prl"]["peak_rss_mb"],
        "max_abs_diff_fp32_vs_s3prl": (ref[:, :steps] - fp32[:, :steps]).abs().max().item(),
        "cosine_bf16_vs_fp32": F.cosine_similarity(bf16.flatten(1), fp32.flatten(1), dim=1).min().item(),
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()
