"""Speed and accuracy of each `--dtype` (float32, bfloat16, int8, auto), side by side in one process.

For `maeast-small` (the packaged default) and a base-size model (12 x 768 patch, random weights):
  * forward: the engine's per-batch work (fbank, tokens, encoder, float32 features) on one batch of
    8 x 10 s clips of real speech (10 one-second recordings each), best and median of 5 interleaved
    repeats; speed-up against float32 (of the best times); `encoder_s`: the encoder alone on that
    batch's tokens (no fbank, no output copies);
  * extract: `run_extract` (decode threads, batching across files, .npz writes, manifest) on 100
    files of 5 s of real speech (FLAC) in 4 groups, the dtypes taking turns group by group;
    files/s and speed-up against float32;
  * cosine to float32 of every frame embedding (forward: last layer per token step; extract: the
    written embeddings), worst and mean.
  * batch independence: the forward clips embedded each alone, against the same clips in one
    batch (and in batches of 3, in reverse order): worst absolute difference and frame cosine.
`auto` is resolved as the Embedder resolves it (building that Embedder is timed as
`auto_setup_s`; its reason is printed) and reuses the figures of the dtype it picked. A dtype this
CPU cannot run is reported with the reason, not timed. Prints one JSON object.

Rehearse another CPU class by capping the kernels before torch starts, e.g. AVX2 only:

    python benchmarks/bench_dtypes.py
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 FBGEMM_ENABLE_INSTRUCTIONS=AVX2 \
        MAEAST_CPU_FLAGS="avx avx2 fma f16c" python benchmarks/bench_dtypes.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from maeast_embed import precision
from maeast_embed.checkpoint import load_model
from maeast_embed.config import preset
from maeast_embed.errors import ConfigError
from maeast_embed.extract import ExtractOptions, run_extract
from maeast_embed.features import Embedder
from maeast_embed.frontend import kaldi_fbank
from maeast_embed.model import MAEAST
from maeast_embed.precision import compute_dtype

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "arabic-speech-commands-train" / "audio"
DTYPES = ("float32", "bfloat16", "int8")


def real_speech(folder: Path, count: int, seconds: int, offset: int) -> list[np.ndarray]:
    """`count` clips, each `seconds` consecutive one-second recordings joined end to end."""
    files = sorted(folder.glob("*.flac"))[offset : offset + count * seconds]
    if len(files) < count * seconds:
        sys.exit(f"need {count * seconds} one-second FLAC files in {folder} (see --data)")
    waves = [sf.read(f, dtype="float32")[0] for f in files]
    return [np.concatenate(waves[i * seconds : (i + 1) * seconds]) for i in range(count)]


def base_model() -> MAEAST:
    torch.manual_seed(0)
    model = MAEAST(preset("patch"), with_decoder=False)
    model.batch_norm.running_mean.fill_(-6.5)  # the scale of real log-mel fbanks
    model.batch_norm.running_var.fill_(10.0)
    return model.eval()


def cosines(a: list[np.ndarray], b: list[np.ndarray]) -> dict[str, float]:
    x, y = np.concatenate(a), np.concatenate(b)
    cos = (x * y).sum(-1) / np.linalg.norm(x, axis=-1) / np.linalg.norm(y, axis=-1)
    return {"min": round(float(cos.min()), 6), "mean": round(float(cos.mean()), 6)}


def forward_times(embedders: dict[str, Embedder], clips: list[torch.Tensor], repeats: int):
    """Interleaved timings of `encode_windows` on one batch (the engine's whole per-batch work)
    and of the encoder alone on that batch's tokens; last-layer features per dtype."""
    fbank, frames = kaldi_fbank(torch.stack(clips))
    times: dict[str, list[float]] = {name: [] for name in embedders}
    encoder: dict[str, list[float]] = {name: [] for name in embedders}
    features = {name: emb.encode_windows(clips) for name, emb in embedders.items()}  # warm-up
    with torch.inference_mode():
        inputs = {}
        for name, emb in embedders.items():
            tokens, mask = emb.model.tokenize(fbank, frames)
            inputs[name] = tokens.to(compute_dtype(emb.dtype)), mask
        for _ in range(repeats):
            for name, emb in embedders.items():
                start = time.perf_counter()
                emb.encode_windows(clips)
                times[name].append(time.perf_counter() - start)
                start = time.perf_counter()
                emb.model(*inputs[name])
                encoder[name].append(time.perf_counter() - start)
    return times, encoder, {name: [f[0].numpy() for f in out] for name, out in features.items()}


def extract_runs(embedders: dict[str, Embedder], groups: list[Path], out: Path):
    """`run_extract` on each group of files with each dtype in turn (interleaved, so a change in
    the machine's load hits every dtype alike): files/s and the written embeddings per dtype."""
    seconds = dict.fromkeys(embedders, 0.0)
    for group in groups:
        for name, embedder in embedders.items():
            start = time.perf_counter()
            summary = run_extract([group], out / name / group.name, embedder, ExtractOptions(),
                                  progress=False)
            seconds[name] += time.perf_counter() - start
            if not summary.ok:
                sys.exit(f"extract failed: {summary.failed[:3]}")
    files = sum(len(list(group.iterdir())) for group in groups)
    embeddings = {name: [np.load(f)["embedding"] for f in sorted((out / name).rglob("*.npz"))]
                  for name in embedders}
    return {name: files / s for name, s in seconds.items()}, embeddings


def batch_independence(embedder: Embedder, clips: list[torch.Tensor]) -> dict[str, float]:
    """Each clip alone against the same clips batched (all at once; 3 at a time, reversed)."""
    alone = [embedder.frame_features([clip])[0] for clip in clips]
    together = embedder.frame_features(clips)
    size = embedder.batch_size
    embedder.batch_size = 3
    reversed_threes = embedder.frame_features(clips[::-1])[::-1]
    embedder.batch_size = size
    pairs = [(a, b) for other in (together, reversed_threes) for a, b in zip(alone, other, strict=True)]
    worst = max(float((a - b).abs().max()) for a, b in pairs)
    cosine = min(float(torch.nn.functional.cosine_similarity(a, b, dim=-1).min()) for a, b in pairs)
    return {"max_abs_diff": worst, "min_cosine": round(cosine, 7)}


def bench_model(label: str, model: MAEAST, args, forward_clips, varied_clips, groups: list[Path],
                tmp: Path) -> dict:
    record: dict[str, dict] = {}
    embedders = {}
    for dtype in DTYPES:
        try:
            precision.check_dtype(dtype, torch.device("cpu"), quiet=True)
        except ConfigError as err:
            record[dtype] = {"unavailable": str(err)}
            continue
        embedders[dtype] = Embedder(model, device="cpu", dtype=dtype, batch_size=8)
    times, encoder, feats = forward_times(embedders, forward_clips, args.repeats)
    for dtype in embedders:
        best = min(times[dtype])
        record[dtype] = {
            "support": precision.dtype_support(torch.device("cpu"))[dtype].status,
            "forward_s": round(best, 3),
            "forward_median_s": round(statistics.median(times[dtype]), 3),
            "forward_speedup": round(min(times["float32"]) / best, 2),
            "encoder_s": round(min(encoder[dtype]), 3),
            "encoder_speedup": round(min(encoder["float32"]) / min(encoder[dtype]), 2),
            "cosine_forward": cosines(feats["float32"], feats[dtype]),
            "batch_independence": batch_independence(embedders[dtype], varied_clips),
        }
    rates, extracted = extract_runs(embedders, groups, tmp / label)
    for dtype in embedders:
        record[dtype]["extract_files_per_s"] = round(rates[dtype], 2)
        record[dtype]["extract_speedup"] = round(rates[dtype] / rates["float32"], 2)
        record[dtype]["cosine_extract"] = cosines(extracted["float32"], extracted[dtype])
    start = time.perf_counter()
    auto = Embedder(model, device="cpu", dtype="auto")
    setup = round(time.perf_counter() - start, 3)
    record["auto"] = {"picks": auto.dtype, "reason": auto.dtype_reason, "auto_setup_s": setup,
                      **record[auto.dtype]}
    return record


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATA, help="one-second 16 kHz FLAC recordings")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--file-seconds", type=int, default=5)
    parser.add_argument("--groups", type=int, default=4, help="extract runs per dtype, interleaved")
    parser.add_argument("--models", default="maeast-small,base")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    forward_clips = [torch.from_numpy(w) for w in real_speech(args.data, 8, 10, 0)]
    speech = np.concatenate(real_speech(args.data, 1, 14, 400))
    seconds = (0.7, 1.9, 3.3, 5.0, 7.1, 12.6)
    varied_clips = [torch.from_numpy(speech[: int(s * 16000)].copy()) for s in seconds]
    record = {
        "benchmark": "dtypes",
        "torch": torch.__version__,
        "threads": args.threads,
        "cpu": precision.cpu_report().summary(),
        "varied_clips": "6 clips of 0.7-12.6 s real speech (batch independence)",
        "forward_batch": "8 x 10 s real speech, one batch (fbank + encoder + float32 features)",
        "extract_files": f"{args.files} x {args.file_seconds} s real speech FLAC in {args.groups} "
        "interleaved runs per dtype, 2 decode threads, batch 8",
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        groups = [Path(tmp) / "files" / f"group{g}" for g in range(args.groups)]
        for i, wave in enumerate(real_speech(args.data, args.files, args.file_seconds, 80)):
            path = groups[i % args.groups] / f"speech{i:03d}.flac"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), wave, 16000, subtype="PCM_16")
        for name in args.models.split(","):
            model = base_model() if name == "base" else load_model(name)
            label = "base-12x768-random" if name == "base" else name
            record["models"][label] = bench_model(name, model, args, forward_clips, varied_clips, groups,
                                                  Path(tmp))
    print(json.dumps(record))


if __name__ == "__main__":
    main()
