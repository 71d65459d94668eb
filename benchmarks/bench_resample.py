"""Resampling to 16 kHz: the core's filter against torchaudio's and soxr's, each where importable.

Per source rate: throughput (input samples/s) on one long clip (best of repeats) and on ~10 s
clips of a new length each call (median; as in extraction, where every file has its own
length), the first call's cost (the filter is built once per rate), the largest difference to
torchaudio's samples, and the filter's quality: gain of a 1 kHz and a 7 kHz tone, and what is
left of a 10.5 kHz tone (above the new Nyquist; it would alias to 5.5 kHz), in dB. Prints JSON.

    python benchmarks/bench_resample.py [--seconds 60] [--threads 2] [--repeats 5] [--calls 40]
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import math
import statistics
import time

import torch

from maeast_embed.audio import resample
from maeast_embed.audio.resample import _filter

SR = 16000
RATES = (44100, 48000, 22050, 8000)


def optional(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def methods(rate: int) -> dict:
    """Name -> function of a float32 tensor [N] at `rate` giving float32 samples at 16 kHz."""
    found = {"maeast": lambda x: resample(x, rate)}
    if (ta := optional("torchaudio.transforms")) is not None:  # its filter built once, as ours
        kernel = functools.cache(lambda: ta.Resample(rate, SR, dtype=torch.float32))
        found["torchaudio"] = lambda x: kernel()(x)
    if (soxr := optional("soxr")) is not None:
        found["soxr_hq"] = lambda x: torch.from_numpy(soxr.resample(x.numpy(), rate, SR, quality="HQ"))
    return found


def interleaved(fns: dict, inputs: list, repeats: int) -> dict:
    """Seconds per method for all `inputs`, best of `repeats`; the methods take turns, so load
    from other processes falls on all of them alike."""
    best = dict.fromkeys(fns, math.inf)
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for x in inputs:
                fn(x)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def new_lengths(fns: dict, rate: int, calls: int) -> dict:
    """Median seconds per call on ~10 s clips, every call a length no call had before (oneDNN
    builds a convolution per shape, and torchaudio's and ours share shapes at some rates)."""
    times = {name: [] for name in fns}
    for i in range(calls):
        for j, (name, fn) in enumerate(fns.items()):
            x = 0.3 * torch.randn(10 * rate + len(fns) * i + j)
            start = time.perf_counter()
            fn(x)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def tone_db(fn, rate: int, freq: float) -> float:
    """Output RMS over input RMS of a one-second tone, in dB, away from the edges."""
    t = torch.arange(rate, dtype=torch.float64) / rate
    out = fn(torch.sin(2 * math.pi * freq * t).float()).double()[SR // 10 : -SR // 10]
    return round(20 * math.log10(float(out.pow(2).mean().sqrt()) / math.sqrt(0.5)), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the long clip")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=40, help="calls on new lengths per method")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    report = {"torch": torch.__version__, "threads": args.threads, "seconds": args.seconds, "rates": {}}
    for rate in RATES:
        long = 0.3 * torch.randn(int(args.seconds * rate), generator=gen)
        _filter.cache_clear()
        fns = methods(rate)
        first = {}
        for name, fn in fns.items():
            start = time.perf_counter()
            fn(long[:rate])
            first[name] = time.perf_counter() - start
        long_s = interleaved(fns, [long], args.repeats)
        varied_s = new_lengths(fns, rate, args.calls)
        row = {}
        for name, fn in fns.items():
            row[name] = {
                "samples_per_s": round(long.numel() / long_s[name]),
                "new_length_samples_per_s": round(10 * rate / varied_s[name]),
                "first_call_ms": round(1e3 * first[name], 2),
                "gain_1k_db": tone_db(fn, rate, 1000.0),
                "gain_7k_db": tone_db(fn, rate, 7000.0),
                "alias_10k5_db": tone_db(fn, rate, 10500.0) if rate > SR else None,
            }
        if "torchaudio" in fns:
            reference = fns["torchaudio"](long)
            for name, fn in fns.items():
                out = fn(long)
                n = min(out.numel(), reference.numel())
                row[name]["max_abs_diff_to_torchaudio"] = float((out[:n] - reference[:n]).abs().max())
                row[name]["length_equals_torchaudio"] = out.numel() == reference.numel()
        report["rates"][str(rate)] = row
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
