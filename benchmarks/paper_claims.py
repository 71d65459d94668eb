"""The MAE-AST paper's claims as one table, on whatever device this runs (bf16 on CUDA).

1. Speed and memory: one pretraining step in MAE mode vs SSAST mode at base size (12 x 768,
   75% masking, 10 s clips), measured by `bench_pretrain.measure` (steps interleaved in one
   process; peak memory of each mode alone in a fresh process). Paper: 3x faster, 2x less memory.
2. The downstream claim in miniature: one small patch model shaped like the paper's (a deep,
   narrow 12 x 192 encoder with a 2-layer decoder), pretrained in MAE mode and in SSAST mode for
   the same wall-clock budget on the same audio (`--data` plus the maeast-small recipe's
   generated audio, which strings `--data`'s clips into phrases), then linear-probed frozen,
   beside its random initialisation, on the project's two generated probe sets
   (recipes/maeast_small/evaluate.sh, both frequency poolings): mean and std of the test accuracy
   over 5 folds (layer chosen on the validation folds), the updates each mode reached, and which
   mode won.

Both modes get the same settings (batch, learning rate, warm-up, then a constant rate: neither
knows how many updates it will reach) and the official recipe's clip rules (clips under 2 s
skipped, each batch cropped to its shortest clip; here also to 4 s, so that a 2-core CPU reaches
a few hundred updates per mode); the budget counts from the start of `train` (setup included).
Writes everything under --work-dir (generated audio and probe sets are reused when present):
the table to stdout and to WORK_DIR/paper_claims.md, all figures to WORK_DIR/paper_claims.json.
The default run takes under an hour on 2 CPU cores.

    python benchmarks/paper_claims.py                                  # the default run
    python benchmarks/paper_claims.py --budget-minutes 1 --generated-hours 0.1 --speed-batch 2 \
        --speed-steps 1 --speed-warmup 1 --probe-layer last --work-dir /tmp/claims   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import bench_pretrain
import torch

from maeast_embed.audio import find_audio
from maeast_embed.checkpoint import save_official
from maeast_embed.errors import MAEASTError
from maeast_embed.pretrain import build_config, train
from probes.run import RunConfig, run_probe
from probes.synthetic import write_dataset

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
MODES = ("mae", "ssast")
MINI = {  # the miniature: the paper's shape (deep, narrow encoder; 2-layer decoder), no dropout
    "preset": "patch", "model.encoder_layers": 12, "model.embed_dim": 192, "model.ffn_dim": 768,
    "model.num_heads": 3, "model.decoder_layers": 2, "model.dropout": 0.0, "model.attention_dropout": 0.0,
    "model.activation_dropout": 0.0, "model.dropout_input": 0.0, "model.encoder_layerdrop": 0.0,
    "batch_size": 8, "lr": 3e-4, "warmup_steps": 50, "max_steps": 10**9, "max_seconds": 4.0,
    "num_workers": 1, "save_every": 10**9, "log_every": 50, "progress": False,
}
PROBE_SETS = {  # evaluate.sh's two datasets
    "sounds": dict(num_classes=8, per_class=40, seconds=2.0, seed=11, snr_db=(0.0, 20.0)),
    "words": dict(num_classes=10, per_class=40, seconds=1.5, seed=12, snr_db=(5.0, 30.0), sounds=False,
                  words=("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")),
}
FREQ_POOLS = ("concat", "mean")


class ClaimsError(MAEASTError):
    """Input that cannot give the table (no audio, a budget too small for one update)."""


class _BudgetSpent(Exception):
    def __init__(self, steps: int) -> None:
        self.steps = steps


def speed_and_memory(args: argparse.Namespace) -> dict:
    """bench_pretrain at base size: MAE vs SSAST step time and peak memory above the weights."""
    bench = bench_pretrain.build_parser().parse_args([
        "--batch", str(args.speed_batch), "--steps", str(args.speed_steps),
        "--warmup", str(args.speed_warmup), "--device", args.device, "--precision", args.precision,
        "--threads", str(args.threads), "--no-reference",
    ])
    results = bench_pretrain.measure(list(MODES), bench)
    return {"config": vars(bench), "results": results}


def pretraining_audio(args: argparse.Namespace) -> list[str]:
    """The real folders plus the recipe's generated audio (made once); no audio is an error."""
    sources = [str(p) for p in args.data if Path(p).is_dir() and find_audio(p)]
    generated = args.work_dir / "generated"
    if args.generated_hours > 0:
        command = [sys.executable, str(REPO / "recipes" / "maeast_small" / "make_audio.py"), str(generated),
                   "--hours", str(args.generated_hours), "--seed", str(args.seed)]
        command += ["--real", sources[0]] if sources else []
        done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode:
            raise ClaimsError(f"generating audio failed: {done.stderr.strip()[-500:]}")
        sources.append(str(generated))
    if not sources:
        raise ClaimsError(
            f"no audio to pretrain on: nothing readable in {', '.join(map(str, args.data)) or '(no --data)'} "
            "and --generated-hours 0"
        )
    return sources


def pretrain_for(mode: str, sources: list[str], args: argparse.Namespace) -> dict:
    """Pretrain the miniature in `mode` until the budget is spent; saves WORK_DIR/<mode>.pt."""
    run_dir = args.work_dir / f"pretrain-{mode}"
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = build_config({**MINI, "data": sources, "mode": mode, "seed": args.seed, "device": args.device,
                        "precision": args.precision, "min_seconds": args.min_seconds})
    budget = args.budget_minutes * 60
    model_box = {}

    def on_step(step: int, model) -> None:
        model_box["model"] = model
        if time.perf_counter() - start >= budget:
            raise _BudgetSpent(step)

    start = time.perf_counter()
    try:
        train(cfg, run_dir, on_step=on_step)
        steps = cfg.max_steps
    except _BudgetSpent as spent:
        steps = spent.steps
    seconds = time.perf_counter() - start
    if steps == 1:  # the budget was spent when the first update ended
        raise ClaimsError(
            f"a budget of {budget:g} s is too small to reach one update in {mode} mode (the first ended "
            f"after {seconds:.1f} s, setup included): raise --budget-minutes"
        )
    path = args.work_dir / f"{mode}.pt"
    save_official(model_box["model"], path, extra={"step": steps, "mode": mode})
    return {"steps": steps, "seconds": seconds, "checkpoint": str(path)}


def probe(checkpoints: dict[str, str], args: argparse.Namespace) -> dict:
    """Linear probes (frozen, every layer, chosen on validation) of MAE, SSAST and the random init."""
    out = {}
    for name, options in PROBE_SETS.items():
        root = args.work_dir / "probes" / name
        if not (root / "meta" / "esc50.csv").is_file():
            write_dataset(root, "esc50", **options)
        for freq_pool in FREQ_POOLS:
            config = RunConfig(layer=args.probe_layer, freq_pool=freq_pool, device=args.device,
                               seed=args.seed, cache_dir=args.work_dir / "probe-cache")
            report = run_probe(root, [checkpoints["mae"], checkpoints["ssast"], "random"],
                               args.work_dir / "reports" / f"{name}-{freq_pool}", config)
            out[f"{name}/{freq_pool}"] = {
                label: {**model["summary"]["accuracy"], "layers": [f["layer"] for f in model["folds"]]}
                for label, model in zip(("mae", "ssast", "random"), report["models"])
            }
    return out


def _verdict(mae_minus_ssast: float) -> str:
    if round(mae_minus_ssast, 3) == 0:
        return "tie"
    return f"{'MAE' if mae_minus_ssast > 0 else 'SSAST'} by {abs(mae_minus_ssast):.3f}"


def _cell(result: dict) -> str:
    return f"{result['mean']:.3f} ± {result['std']:.3f}"


def table(report: dict) -> str:
    rows = ["| claim | MAE | SSAST | random init | result |", "|---|---|---|---|---|"]
    if "speed" in report:
        speed, bench = report["speed"]["results"], report["speed"]["config"]
        shape = (f"{bench['layers']} x {bench['dim']}, 75% masking, "
                 f"{bench['batch']} x {bench['seconds']:g} s clips")
        ratio = speed["mae"]["steps_per_s"] / speed["ssast"]["steps_per_s"]
        fastest = speed["ssast"]["min_step_s"] / speed["mae"]["min_step_s"]
        rows.append(f"| pretraining steps/s, median step ({shape}) | {speed['mae']['steps_per_s']:.3f} | "
                    f"{speed['ssast']['steps_per_s']:.3f} | | MAE {ratio:.2f}x faster (fastest steps: "
                    f"{fastest:.2f}x; paper: 3x) |")
        memory = [speed[m]["peak_above_model_mib"] for m in MODES]
        rows.append(f"| peak memory above weights + optimizer, MiB | {memory[0]:.0f} | {memory[1]:.0f} | | "
                    f"MAE {memory[1] / memory[0]:.2f}x less (paper: 2x) |")
    runs = report["pretrain"]
    rows.append(f"| miniature (12 x 192, 2-layer decoder): updates in {report['budget_minutes']:g} min | "
                f"{runs['mae']['steps']} | {runs['ssast']['steps']} | 0 | "
                f"MAE {runs['mae']['steps'] / runs['ssast']['steps']:.2f}x the updates |")
    wins = []
    layer = "best layer on validation" if report["probe_layer"] == "all" else f"layer {report['probe_layer']}"
    for task, results in report["probes"].items():
        mae, ssast = results["mae"], results["ssast"]
        diff = mae["mean"] - ssast["mean"]
        wins.append(diff)
        rows.append(f"| {task} probe accuracy, 5 folds, {layer} | {_cell(mae)} | {_cell(ssast)} | "
                    f"{_cell(results['random'])} | {_verdict(diff)} |")
    rows.append(f"| downstream winner (mean over the {len(wins)} probes) | | | | "
                f"{_verdict(sum(wins) / len(wins))} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work-dir", type=Path, default=REPO / "runs" / "paper-claims")
    parser.add_argument("--data", type=Path, action="append",
                        help=f"real audio folder, repeatable (default: {DEFAULT_DATA})")
    parser.add_argument("--generated-hours", type=float, default=1.5,
                        help="hours of the recipe's generated audio (0: none)")
    parser.add_argument("--min-seconds", type=float, default=2.0,
                        help="shortest clip pretrained on (the official recipe's 2 s)")
    parser.add_argument("--budget-minutes", type=float, default=10.0, help="pretraining wall clock per mode")
    parser.add_argument("--speed-batch", type=int, default=8)
    parser.add_argument("--speed-steps", type=int, default=5)
    parser.add_argument("--speed-warmup", type=int, default=2)
    parser.add_argument("--skip-speed", action="store_true", help="only the downstream miniature")
    parser.add_argument("--probe-layer", default="all",
                        help="all: every layer, chosen on the validation folds (evaluate.sh); or last, or N")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], help="default: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    args.data = args.data if args.data is not None else [DEFAULT_DATA]
    args.precision = args.precision or ("bf16" if args.device.startswith("cuda") else "fp32")
    if not math.isfinite(args.budget_minutes) or args.budget_minutes <= 0:
        parser.error(f"--budget-minutes must be > 0, got {args.budget_minutes}")
    torch.set_num_threads(args.threads)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    report = {"device": device, "precision": args.precision, "torch": torch.__version__,
              "budget_minutes": args.budget_minutes, "seed": args.seed,
              "probe_layer": args.probe_layer, "miniature": {**MINI, "min_seconds": args.min_seconds}}
    try:
        sources = pretraining_audio(args)
        report["pretrain"] = {mode: pretrain_for(mode, sources, args) for mode in MODES}
        report["audio"] = sources
        if not args.skip_speed:
            report["speed"] = speed_and_memory(args)
        report["probes"] = probe({m: r["checkpoint"] for m, r in report["pretrain"].items()}, args)
    except MAEASTError as err:
        print(f"paper_claims: {err}", file=sys.stderr)
        return 2
    text = f"{device}, {args.precision}, torch {torch.__version__}\n\n{table(report)}\n"
    (args.work_dir / "paper_claims.md").write_text(text)
    (args.work_dir / "paper_claims.json").write_text(json.dumps(report, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
