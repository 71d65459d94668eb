"""Learning check (slow, CPU, a few minutes): pretraining a tiny model on generated audio lowers
its masked-reconstruction loss and makes its frozen embeddings better for a linear probe.

Run: pytest -m slow -s tests/test_pretrain_learning.py  (prints the figures as JSON)
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import write_audio
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from maeast_embed.checkpoint import load_model
from maeast_embed.frontend import kaldi_fbank
from maeast_embed.losses import pretrain_loss
from maeast_embed.masking import sample_mask
from maeast_embed.model import MAEAST
from maeast_embed.pretrain import build_config, train

SR = 16000
CLASSES = ("harmonic", "chirp_up", "chirp_down", "am_tone", "band_noise", "clicks")


def make_clip(kind: str, rng: np.random.Generator, seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    f = rng.uniform(200, 2000)
    if kind == "harmonic":
        x = sum(np.sin(2 * np.pi * f * k * t) / k for k in range(1, 5))
    elif kind in ("chirp_up", "chirp_down"):
        f0, f1 = (f, f * 3) if kind == "chirp_up" else (f * 3, f)
        x = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds)))
    elif kind == "am_tone":
        x = np.sin(2 * np.pi * f * t) * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 12) * t))
    elif kind == "band_noise":
        spec = np.fft.rfft(rng.standard_normal(t.size))
        freqs = np.fft.rfftfreq(t.size, 1 / SR)
        spec[(freqs < f) | (freqs > f * 1.5)] = 0
        x = np.fft.irfft(spec, n=t.size)
    else:
        x = np.zeros(t.size)
        x[rng.integers(0, t.size, size=int(rng.uniform(10, 40)))] = 1.0
        x = np.convolve(x, np.exp(-np.arange(200) / 30.0), mode="same")
    x = x / (np.abs(x).max() + 1e-9) * rng.uniform(0.1, 0.5)
    return (x + 0.005 * rng.standard_normal(t.size)).astype(np.float32)


def _embed(model: MAEAST, waves: torch.Tensor) -> np.ndarray:
    """Clip embedding: every layer's hidden states averaged over layers and tokens ([B, D])."""
    with torch.no_grad():
        tokens, _ = model.eval().tokenize(kaldi_fbank(waves)[0])
        return torch.stack(model(tokens)).mean(dim=(0, 2)).numpy()  # layers and tokens averaged


def _masked_recon(model: MAEAST, waves: torch.Tensor) -> float:
    with torch.no_grad():
        tokens, _ = model.eval().tokenize(kaldi_fbank(waves)[0])
        gen = torch.Generator().manual_seed(123)
        losses = []
        for _ in range(4):
            kept, masked = sample_mask("chunk_mask", tokens.shape[0], tokens.shape[1], generator=gen)
            out = model.forward_pretrain(tokens, kept, masked)
            loss = pretrain_loss(out.reconstruction, out.classification, out.target)
            losses.append(float(loss.reconstruction))
    return float(np.mean(losses))


def _probe(train_x, train_y, test_x, test_y) -> float:
    scaler = StandardScaler().fit(train_x)
    clf = LogisticRegression(max_iter=2000, C=1.0).fit(scaler.transform(train_x), train_y)
    return float(clf.score(scaler.transform(test_x), test_y))


@pytest.mark.slow
def test_pretraining_learns(tmp_path):
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    for i in range(240):
        kind = CLASSES[i % len(CLASSES)]
        write_audio(tmp_path / "pretrain" / f"{kind}_{i}.wav", make_clip(kind, rng, rng.uniform(2.0, 3.0)))
    probe_rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(len(CLASSES)), 50)
    probe_waves = torch.from_numpy(np.stack([make_clip(CLASSES[y], probe_rng) for y in labels]))
    split = np.random.default_rng(2).permutation(labels.size)
    train_idx, test_idx = split[:200], split[200:]

    cfg = build_config({
        "data": [str(tmp_path / "pretrain")], "preset": "tiny-patch", "batch_size": 8, "max_steps": 600,
        "warmup_steps": 60, "lr": 5e-4, "num_workers": 1, "device": "cpu", "progress": False,
        "save_every": 600, "log_every": 50, "seed": 0,
    })
    final = train(cfg, tmp_path / "run")
    trained = load_model(final)
    torch.manual_seed(cfg.seed)
    init = MAEAST(cfg.model)
    init.batch_norm.load_state_dict(trained.batch_norm.state_dict())  # same input normalisation

    report = {"steps": cfg.max_steps}
    for name, model in (("init", init), ("trained", trained)):
        emb = _embed(model, probe_waves)
        report[f"probe_acc_{name}"] = _probe(
            emb[train_idx], labels[train_idx], emb[test_idx], labels[test_idx]
        )
        report[f"masked_recon_mse_{name}"] = _masked_recon(model, probe_waves[test_idx])
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    report["train_loss_first_last"] = [records[0]["loss"], records[-1]["loss"]]
    print(json.dumps(report))
    assert report["masked_recon_mse_trained"] < 0.7 * report["masked_recon_mse_init"]
    assert report["probe_acc_trained"] > report["probe_acc_init"] + 0.05
