"""Pretraining step speed and peak memory: MAE mode vs SSAST mode vs s3prl's reference MAE_AST.

All contenders use the same encoder, batch, clip length, precision and device. Speed: their
steps interleaved in one process (median step time). Memory: each alone in a fresh process,
peak above its weights + optimizer state (GPU: allocated bytes; CPU: peak RSS). A step is: Kaldi
fbank of the waveforms, masks, forward, 10 x MSE + InfoNCE, backward, grad clip, AdamW step.
The reference step is s3prl's `MAE_AST.forward(fbank, padding_mask, mask=True)` with the same
losses and AdamW settings; ours use the fused AdamW as the pretraining loop does (for-loop
AdamW for all with --plain-adamw, to compare the models alone). Prints one JSON object.

    python benchmarks/bench_pretrain.py                    # base size (12 x 768), 10 s clips
    python benchmarks/bench_pretrain.py --layers 4 --dim 256 --ffn 1024 --heads 4 --batch 4
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import time
from types import SimpleNamespace

import torch

from maeast_embed.config import preset
from maeast_embed.frontend import kaldi_fbank, num_frames
from maeast_embed.losses import pretrain_loss
from maeast_embed.masking import sample_mask
from maeast_embed.model import MAEAST

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


class Contender:
    """One model + optimizer and its training step on a fixed batch."""

    def __init__(self, kind: str, args: argparse.Namespace) -> None:
        torch.manual_seed(0)
        self.kind, self.device, self.amp = kind, torch.device(args.device), DTYPES[args.precision]
        self.cfg = cfg = preset(args.variant, encoder_layers=args.layers, embed_dim=args.dim,
                                ffn_dim=args.ffn, num_heads=args.heads)
        if kind == "reference":
            from s3prl.upstream.mae_ast.mae_ast import MAE_AST

            official = cfg.to_official()
            model = MAE_AST(SimpleNamespace(**official["model"]), SimpleNamespace(**official["task"]))
        else:
            model = MAEAST(cfg)
        self.model = model.to(self.device).train()
        fused = kind != "reference" and not args.plain_adamw  # as `maeast-embed pretrain` builds it
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01, fused=fused
        )
        samples = int(args.seconds * 16000)
        self.wave = (0.1 * torch.randn(args.batch, samples)).to(self.device)
        self.length = (int(num_frames(samples)) // cfg.kernel_time) * cfg.tokens_per_step
        self.generator = torch.Generator().manual_seed(0)

    def step(self) -> float:
        cfg, device, amp = self.cfg, self.device, self.amp
        fbank, _ = kaldi_fbank(self.wave)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            if self.kind == "reference":
                padding = torch.zeros(fbank.shape[:2], dtype=torch.bool, device=device)
                out = self.model(fbank, padding_mask=padding, mask=True)
                recon, cls = out["logit_m_list_recon"], out["logit_m_list_class"]
                target = out["target_m_list"]
            else:
                tokens, _ = self.model.tokenize(fbank)
                kept, masked = sample_mask(
                    cfg.mask_type, tokens.shape[0], self.length, cfg.mask_prob,
                    tokens_per_step=cfg.tokens_per_step, generator=self.generator, device=device,
                )
                out = self.model.forward_pretrain(tokens, kept, masked, mode=self.kind)
                recon, cls, target = out.reconstruction, out.classification, out.target
        loss = pretrain_loss(recon, cls, target).total
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 10.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.item()  # synchronises the device


def _setup(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as `maeast-embed pretrain` does on CPU (no effect on GPU)


def _timing(kinds: list[str], args: argparse.Namespace, queue) -> None:
    """All contenders in one process, steps interleaved round-robin (robust to load drift)."""
    _setup(args)
    contenders = [Contender(kind, args) for kind in kinds]
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    for i in range(args.warmup + args.steps):
        for contender in contenders:
            start = time.perf_counter()
            contender.step()
            if i >= args.warmup:
                times[contender.kind].append(time.perf_counter() - start)
    queue.put({
        kind: {"steps_per_s": 1.0 / statistics.median(t), "median_step_s": statistics.median(t),
               "min_step_s": min(t), "tokens": contenders[0].length}
        for kind, t in times.items()
    })


def _memory(kind: str, args: argparse.Namespace, queue) -> None:
    """Peak memory of one contender alone in a fresh process (GPU: allocated; CPU: RSS)."""
    _setup(args)
    contender = Contender(kind, args)
    for param in contender.model.parameters():  # allocate the optimizer state up front
        param.grad = torch.zeros_like(param)
    contender.optimizer.step()
    contender.optimizer.zero_grad(set_to_none=True)
    before = _rss_mib()
    if contender.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(contender.device)
        static = torch.cuda.memory_allocated(contender.device) / 2**20
    for _ in range(2):
        contender.step()
    if contender.device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(contender.device) / 2**20
        queue.put({"peak_memory_mib": peak, "peak_above_model_mib": peak - static})
    else:
        peak = _peak_rss_mib()
        queue.put({"peak_rss_mib": peak, "peak_above_model_mib": peak - before})


def _child(target, *args):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def measure(contenders: list[str], args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Speed of every contender (steps interleaved in one process) and the peak memory of each
    (alone in a fresh process), keyed by contender."""
    results = _child(_timing, contenders, args)
    for kind in contenders:
        results[kind].update(_child(_memory, kind, args))
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variant", choices=["patch", "frame"], default="patch")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--ffn", type=int, default=3072)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=sorted(DTYPES), default=None,
                        help="default: bf16 on GPU, fp32 on CPU")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-reference", action="store_true", help="skip s3prl's MAE_AST")
    parser.add_argument("--plain-adamw", action="store_true",
                        help="for-loop AdamW for every contender, not the fused one for ours")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.precision is None:
        args.precision = "bf16" if args.device.startswith("cuda") else "fp32"
    contenders = ["mae", "ssast"] + ([] if args.no_reference else ["reference"])
    results = measure(contenders, args)
    memory_key = "peak_above_model_mib"
    report = {
        "config": vars(args),
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "results": results,
        "mae_vs_ssast_speedup": results["mae"]["steps_per_s"] / results["ssast"]["steps_per_s"],
        "mae_vs_ssast_memory_ratio": results["mae"][memory_key] / results["ssast"][memory_key],
    }
    if "reference" in results:
        mae, ref = results["mae"], results["reference"]
        report["mae_vs_reference_speedup"] = mae["steps_per_s"] / ref["steps_per_s"]
        report["mae_vs_reference_memory_ratio"] = mae[memory_key] / ref[memory_key]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
