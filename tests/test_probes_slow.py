"""Slow probe checks: a briefly pretrained tiny model against its random initialisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import make_model

from maeast_embed.checkpoint import save_official
from maeast_embed.frontend import kaldi_fbank
from maeast_embed.losses import pretrain_loss
from probes import RunConfig, run_probe
from probes.linear import ProbeConfig
from probes.synthetic import SOUND_CLASSES, synth_clip, write_dataset


def pretrain_tiny(steps: int, seed: int = 3):
    """The official objective (10 x MSE + InfoNCE, 75% random masking) on synthetic sounds."""
    rng = np.random.default_rng(seed)
    model = make_model("tiny-patch", seed=seed, encoder_layerdrop=0.0)  # 2 layers: never drop both
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    for _ in range(steps):
        kinds = rng.integers(len(SOUND_CLASSES), size=8)
        waves = torch.stack([torch.from_numpy(synth_clip(SOUND_CLASSES[k], 1.0, rng, rng.uniform(0, 30)))
                             for k in kinds])
        tokens, _ = model.tokenize(*kaldi_fbank(waves))
        order = torch.rand(tokens.shape[:2]).argsort(1)
        kept = max(1, int(0.25 * tokens.shape[1]))
        out = model.forward_pretrain(tokens, order[:, :kept], order[:, kept:])
        loss = pretrain_loss(out.reconstruction, out.classification, out.target).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.mark.slow
def test_pretrained_tiny_model_is_not_worse_than_random_init(tmp_path):
    """Per-token representations (frequency patches averaged, so the probe cannot lean on the
    spectral layout a random projection keeps) improve with pretraining. Measured here: 0.53
    pretrained vs 0.42 random after 2400 steps (0.48 vs 0.44 after 1200; fbank 0.63)."""
    torch.manual_seed(0)
    save_official(pretrain_tiny(2400), tmp_path / "pretrained.pt")
    data = write_dataset(tmp_path / "data", "folder", num_classes=8, per_class=12, snr_db=(0, 20), seed=5)
    config = RunConfig(layer="all", freq_pool="mean", device="cpu", cache_dir=tmp_path / "cache",
                       probe=ProbeConfig())
    report = run_probe(data, [str(tmp_path / "pretrained.pt"), "random", "fbank"], tmp_path / "out", config)
    pretrained, random, fbank = (m["summary"]["accuracy"]["mean"] for m in report["models"])
    print(report["table"])
    assert min(pretrained, random, fbank) > 1.5 / 8  # all well above chance
    assert pretrained > random
