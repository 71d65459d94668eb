"""Turn a finished maeast-small pretraining run into the packaged model file and its loss curve.

Writes the encoder-only float16 file (`save_encoder_only`), checks its embeddings against the
run's float32 model on generated sounds, plots metrics.jsonl, and prints the facts the model
card and `checkpoint.PACKAGED` need (size, sha256, steps, parity).

    python recipes/maeast_small/export.py runs/maeast-small \\
        --out maeast_embed/models/maeast-small.pt --curve recipes/maeast_small/loss_curve.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from maeast_embed.checkpoint import load_model, save_encoder_only, sha256_file
from maeast_embed.features import Embedder
from probes.synthetic import SOUND_CLASSES, synth_clip

ATTRIBUTION = (
    "Pretrained in part on a subset of the Arabic Speech Commands dataset (Ghandoura, Hjabo, "
    "Al Dakkak, 2021; github.com/abdulkaderghandoura/arabic-speech-commands-dataset), "
    "CC BY 4.0; changes: subset, WAV to FLAC, renamed, labels dropped."
)


def plot_curve(metrics: Path, out: Path) -> dict[str, float]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    axes[0].plot(steps, [r["loss_recon"] for r in rows], label="reconstruction MSE")
    axes[0].set_ylabel("MSE on masked patches")
    axes[1].plot(steps, [r["loss_info_nce"] for r in rows], color="tab:orange", label="InfoNCE")
    axes[1].set_ylabel("InfoNCE on masked patches")
    for ax in axes:
        ax.set_xlabel("update")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("maeast-small pretraining (training batches, mean of each 50 updates)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    first, last = rows[0], rows[-1]
    return {"first_step": first["step"], "last_step": last["step"],
            "recon_first": first["loss_recon"], "recon_last": last["loss_recon"],
            "info_nce_first": first["loss_info_nce"], "info_nce_last": last["loss_info_nce"]}


def parity(full: torch.nn.Module, packaged: torch.nn.Module) -> dict[str, float]:
    """Frame embeddings of both models on one generated clip of every sound class."""
    rng = np.random.default_rng(0)
    waves = [torch.from_numpy(synth_clip(kind, 4.0, rng)) for kind in SOUND_CLASSES]
    a = torch.cat([f[0] for f in Embedder(full).frame_features(waves)])
    b = torch.cat([f[0] for f in Embedder(packaged).frame_features(waves)])
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    return {"min_cosine": float(cosine.min()), "max_abs_diff": float((a - b).abs().max()),
            "max_abs_value": float(a.abs().max())}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path("maeast_embed/models/maeast-small.pt"))
    parser.add_argument("--curve", type=Path, default=Path("recipes/maeast_small/loss_curve.png"))
    args = parser.parse_args()
    full = load_model(args.run_dir / "final.pt")
    rows = (args.run_dir / "metrics.jsonl").read_text().splitlines()
    steps = json.loads(rows[-1])["step"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_encoder_only(full, args.out, extra={
        "name": "maeast-small", "steps": steps, "recipe": "configs/pretrain/maeast-small.yaml",
        "attribution": ATTRIBUTION, "licence": "weights: CC BY 4.0 (training data attribution above)",
    })
    packaged = load_model(args.out)
    facts = {
        "file": str(args.out), "bytes": args.out.stat().st_size, "sha256": sha256_file(args.out),
        "encoder_parameters": packaged.num_parameters, "steps": steps,
        "parity_fp16_vs_fp32": parity(full, packaged),
        "loss": plot_curve(args.run_dir / "metrics.jsonl", args.curve),
    }
    print(json.dumps(facts, indent=2))


if __name__ == "__main__":
    main()
