"""The packaged default model (maeast-small): encoder-only files, offline loading with a sha256
check, and its use as the default of extract, probe, the HEAR module and the Python API."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import make_model, noise, tone, write_audio

from maeast_embed import checkpoint
from maeast_embed.checkpoint import (
    DEFAULT_MODEL,
    PACKAGED,
    PackagedModel,
    load_model,
    save_encoder_only,
    save_official,
    sha256_file,
)
from maeast_embed.cli import main
from maeast_embed.errors import CheckpointError, MAEASTError
from maeast_embed.extract import read_manifest
from maeast_embed.features import Embedder

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to reach the network fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:1]}")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def _hidden(model, seconds: float = 3.0):
    wave = torch.from_numpy(tone(seconds, 700.0) + noise(seconds, seed=3))
    return Embedder(model, device="cpu").frame_features([wave], layer="all")[0]


@pytest.mark.parametrize("half", [True, False])
def test_encoder_only_file_round_trip(tmp_path, half):
    model = make_model("tiny-patch", seed=4)
    path = tmp_path / "enc.pt"
    save_encoder_only(model, path, half=half, extra={"name": "x"})
    save_official(model, tmp_path / "full.pt")
    loaded = load_model(path)
    assert not loaded.has_decoder and not hasattr(loaded, "decoder")
    assert path.stat().st_size < (tmp_path / "full.pt").stat().st_size / 2
    state = torch.load(path, weights_only=True)
    assert state["maeast_embed"]["name"] == "x"
    assert state["model"]["encoder.layers.0.fc1.weight"].dtype == (torch.float16 if half else torch.float32)
    assert state["model"]["batch_norm.running_var"].dtype == torch.float32  # vectors stay float32
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    expected, got = _hidden(model), _hidden(loaded)
    if half:
        cosine = torch.nn.functional.cosine_similarity(expected, got, dim=-1)
        assert cosine.min() > 0.999 and not torch.equal(expected, got)
    else:
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_encoder_only_model_refuses_pretraining_and_official_export(tmp_path):
    path = tmp_path / "enc.pt"
    save_encoder_only(make_model("tiny-patch"), path)
    model = load_model(path)
    tokens = torch.randn(1, 16, 256)
    with pytest.raises(MAEASTError, match="encoder weights only"):
        model.forward_pretrain(tokens, torch.arange(4)[None], torch.arange(4, 16)[None])
    with pytest.raises(CheckpointError, match="encoder-only"):
        save_official(model, tmp_path / "x.pt")


def test_encoder_only_file_with_a_missing_tensor_is_rejected(tmp_path):
    path = tmp_path / "enc.pt"
    save_encoder_only(make_model("tiny-patch"), path)
    state = torch.load(path, weights_only=True)
    del state["model"]["encoder.layers.1.fc2.weight"]
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="missing.*encoder.layers.1.fc2.weight"):
        load_model(path)


def test_official_file_without_decoder_is_still_rejected(tmp_path):
    path = tmp_path / "full.pt"
    save_official(make_model("tiny-patch"), path)
    state = torch.load(path, weights_only=True)
    state["model"] = {k: v for k, v in state["model"].items() if not k.startswith("decoder.")}
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="missing"):
        load_model(path)


def test_packaged_model_loads_offline_and_matches_its_sha256(offline):
    entry = PACKAGED[DEFAULT_MODEL]
    assert DEFAULT_MODEL == "maeast-small"
    assert entry.path.is_file() and entry.path.stat().st_size <= 25_000_000
    assert sha256_file(entry.path) == entry.sha256
    model = load_model(DEFAULT_MODEL)
    cfg = model.cfg
    assert (cfg.variant, cfg.encoder_layers, cfg.embed_dim, cfg.num_heads) == ("patch", 6, 384, 6)
    assert model.checkpoint.name == "maeast-small" and model.checkpoint.sha256 == entry.sha256
    assert not model.training and not model.has_decoder
    hidden = _hidden(model)
    assert hidden.shape == (6, 18, 8 * 384) and torch.isfinite(hidden).all()
    assert hidden[-1].std(0).mean() > 1e-3  # frames differ: not a constant output


def test_packaged_weights_are_trained():
    """The shipped file holds a finished run, not an early or initial state: the fbank
    statistics saw every update and the weights grew away from their N(0, 0.02) init."""
    model = load_model(DEFAULT_MODEL)
    assert model.batch_norm.num_batches_tracked >= 16_000
    for layer in model.encoder.layers:
        assert layer.fc1.weight.detach().std() > 1.2 * 0.02


def test_packaged_model_beats_its_random_initialisation(tmp_path, offline):
    """The model card's claim on a small scale: frequency-averaged tokens of the packaged model
    classify generated sounds far better than the same architecture untrained."""
    from probes import RunConfig, run_probe
    from probes.linear import ProbeConfig
    from probes.synthetic import write_dataset

    data = write_dataset(tmp_path / "data", "esc50", num_classes=8, per_class=10, seconds=2.0,
                         snr_db=(0, 20), seed=21)
    config = RunConfig(layer="all", freq_pool="mean", device="cpu", cache_dir=tmp_path / "cache",
                       probe=ProbeConfig(), progress=False)
    report = run_probe(data, [DEFAULT_MODEL, "random"], tmp_path / "out", config)
    pretrained, random = (m["summary"]["accuracy"]["mean"] for m in report["models"])
    assert pretrained > random + 0.15, report["models"]


def test_damaged_or_missing_packaged_file_is_a_clear_error(tmp_path, monkeypatch, offline):
    damaged = tmp_path / "maeast-small.pt"
    shutil.copy(PACKAGED[DEFAULT_MODEL].path, damaged)
    with open(damaged, "r+b") as handle:
        handle.seek(5_000_000)
        byte = handle.read(1)
        handle.seek(5_000_000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    monkeypatch.setitem(PACKAGED, DEFAULT_MODEL, PackagedModel(damaged, PACKAGED[DEFAULT_MODEL].sha256))
    with pytest.raises(CheckpointError, match="maeast-small.*damaged.*reinstall"):
        load_model(DEFAULT_MODEL)
    monkeypatch.setitem(PACKAGED, DEFAULT_MODEL, PackagedModel(tmp_path / "gone.pt", "0" * 64))
    with pytest.raises(CheckpointError, match="missing.*reinstall"):
        load_model(DEFAULT_MODEL)


def test_info_on_the_packaged_model(offline):
    result = CliRunner().invoke(main, ["info", "--json", DEFAULT_MODEL])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["sha256"] == PACKAGED[DEFAULT_MODEL].sha256 and record["weights"].startswith("encoder only")
    assert record["config"]["embed_dim"] == 384 and record["parameters"] < 11_000_000


def test_packaged_names_are_listed_in_errors():
    with pytest.raises(CheckpointError, match="maeast-small"):
        checkpoint.resolve("no-such-model")


def test_extract_uses_the_packaged_model_by_default(tmp_path, offline):
    wav = write_audio(tmp_path / "in" / "a.wav", tone(2.0, 300.0))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["extract", str(wav.parent), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    header = read_manifest(out / "manifest.jsonl")[0][-1]
    assert header["model"]["sha256"] == PACKAGED[DEFAULT_MODEL].sha256
    with np.load(out / "a.wav.npz") as data:
        assert data["embedding"].shape == (12, 8 * 384)
    assert Embedder(device="cpu").model.checkpoint.name == DEFAULT_MODEL


def test_hear_module_uses_the_packaged_model_by_default(offline):
    import hear_module

    model = hear_module.load_model()
    assert model.sample_rate == 16000 and model.scene_embedding_size == 8 * 384
    audio = torch.from_numpy(np.stack([tone(1.5, 500.0), noise(1.5)]))
    scene = hear_module.get_scene_embeddings(audio, model)
    assert scene.shape == (2, 8 * 384) and torch.isfinite(scene).all()


def test_probe_uses_the_packaged_model_by_default(tmp_path, offline):
    from probes.synthetic import write_dataset

    data = write_dataset(tmp_path / "data", "folder", num_classes=2, per_class=6, seed=1)
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["probe", str(data), "-o", str(out), "--folds", "2", "-q"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert [m["label"] for m in report["models"]] == [DEFAULT_MODEL]
    assert report["models"][0]["info"]["sha256"] == PACKAGED[DEFAULT_MODEL].sha256


def test_pretraining_audio_generator_is_reproducible(tmp_path):
    """The recipe's generator: same seed, same files, whatever the worker count."""
    script = REPO / "recipes" / "maeast_small" / "make_audio.py"
    real = write_audio(tmp_path / "real" / "r.wav", tone(1.0, 200.0))
    outputs = []
    for workers in (1, 2):
        out = tmp_path / f"gen{workers}"
        subprocess.run(
            [sys.executable, str(script), str(out), "--hours", "0.02", "--seed", "3", "--real",
             str(real.parent), "--workers", str(workers)],
            check=True, capture_output=True,
        )
        files = sorted(out.rglob("*.flac"))
        outputs.append({f.relative_to(out): sha256_file(f) for f in files})
        summary = json.loads((out / "summary.json").read_text())
        assert summary["clips"] == len(files) == 14  # 0.02 h at 5.5 s per clip on average
        assert 3 * 14 <= summary["total_hours"] * 3600 <= 8 * 14  # clips are 3-8 s
    assert outputs[0] == outputs[1]
    assert len({path.parts[0] for path in outputs[0]}) >= 3  # several kinds of clip


def test_s3prl_upstream_takes_the_packaged_name(offline):
    from maeast_upstream.mae_ast import hubconf

    expert = hubconf.mae_ast(ckpt=DEFAULT_MODEL).eval()
    wavs = [torch.from_numpy(tone(1.0, 400.0)), torch.from_numpy(noise(0.6))]
    with torch.no_grad():
        out = expert(wavs)
    assert len(out["hidden_states"]) == 6  # one per encoder layer, as s3prl's MAE-AST upstream
    assert out["last_hidden_state"].shape == (2, 6, 8 * 384)
