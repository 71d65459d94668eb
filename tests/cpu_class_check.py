"""Run by tests/test_precision.py in a fresh process whose kernels are capped to a CPU class
(ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY, FBGEMM_ENABLE_INSTRUCTIONS set before torch starts;
MAEAST_CPU_FLAGS overriding the detected flags): prints one JSON object with doctor's facts,
auto's pick, and for each dtype its batch independence and its cosine to float32 on the clips
saved as .npy in the folder given."""

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from maeast_embed.checkpoint import load_model
from maeast_embed.cli_doctor import doctor_record
from maeast_embed.features import Embedder
from maeast_embed.precision import PrecisionWarning


def cosine(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return min(float(F.cosine_similarity(x, y, dim=-1).min()) for x, y in zip(a, b, strict=True))


def main() -> None:
    torch.set_num_threads(2)
    clips = [np.load(path) for path in sorted(Path(sys.argv[1]).glob("*.npy"))]
    model = load_model("maeast-small")
    record = {"doctor": doctor_record("cpu", "maeast-small", False), "dtypes": {}, "warnings": []}
    reference = None
    for dtype in ("float32", "int8", "bfloat16", "auto"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            embedder = Embedder(model, device="cpu", dtype=dtype, batch_size=8)
        if any(issubclass(w.category, PrecisionWarning) for w in caught):
            record["warnings"].append("bf16 emulated warning")
        alone = [embedder.frame_features([clip])[0] for clip in clips]
        batched = embedder.frame_features(clips)
        embedder.batch_size = 3
        reversed_threes = embedder.frame_features(clips[::-1])[::-1]
        reference = alone if reference is None else reference
        pairs = [(a, b) for other in (batched, reversed_threes) for a, b in zip(alone, other)]
        figures = {
            "batch_abs": max(float((a - b).abs().max()) for a, b in pairs),
            "batch_cosine": min(cosine([a], [b]) for a, b in pairs),
            "cosine_to_float32": cosine(reference, alone),
        }
        if dtype == "auto":
            record["auto"] = {"dtype": embedder.dtype, "reason": embedder.dtype_reason, **figures}
        else:
            record["dtypes"][dtype] = figures
    print(json.dumps(record))


if __name__ == "__main__":
    main()
