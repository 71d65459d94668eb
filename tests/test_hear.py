"""The HEAR 2021 module: API contract, timestamps, options, batch independence, bad input."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from helpers import chirp, noise, tone

import hear_module
from maeast_embed.errors import AudioError, CheckpointError, ConfigError
from maeast_embed.features import Embedder

SR = 16000


def expected_grid(num_samples: int, kernel_time: int, hop_ms: float) -> np.ndarray:
    """Timestamps (ms) from first principles: Kaldi frames, whole token steps, centred grid."""
    frames = 1 + (num_samples - 400) // 160
    steps = frames // kernel_time
    native_hop = kernel_time * 10.0
    first = (kernel_time - 1) * 5.0 + 12.5  # centre of frames 0..kt-1 (25 ms each, 10 ms apart)
    last = first + native_hop * (steps - 1)
    count = math.floor((last - first) / hop_ms + 1e-9) + 1
    return first + hop_ms * np.arange(count)


@pytest.fixture
def shims():
    """compat.apply() for one test, then undo what leaks into other tests (env, sys.modules)."""
    from hear_module import compat

    saved_env = os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    had_tf = "tensorflow" in sys.modules
    compat.apply()
    yield
    if saved_env is None:
        os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    else:
        os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = saved_env
    if not had_tf:
        sys.modules.pop("tensorflow", None)


@pytest.fixture(scope="module")
def patch_model(tiny_patch_ckpt):
    return hear_module.load_model(str(tiny_patch_ckpt))


@pytest.fixture(scope="module")
def frame_model(tiny_frame_ckpt):
    return hear_module.load_model(str(tiny_frame_ckpt))


def test_load_model_attributes_and_eval_mode(patch_model, frame_model):
    for model, native, size in ((patch_model, 160.0, 8 * 64), (frame_model, 20.0, 64)):
        assert isinstance(model, torch.nn.Module)
        assert model.sample_rate == 16000
        assert isinstance(model.timestamp_embedding_size, int) and model.timestamp_embedding_size == size
        assert model.scene_embedding_size == size
        assert model.native_hop_ms == native
        assert model.hop_ms <= 50
        assert not any(m.training for m in model.modules())


@pytest.mark.parametrize("which", ["patch", "frame"])
@pytest.mark.parametrize("seconds", [1.07, 1.98, 4.0])
def test_timestamp_contract(which, seconds, patch_model, frame_model):
    model = patch_model if which == "patch" else frame_model
    kernel_time = 16 if which == "patch" else 2
    audio = torch.from_numpy(np.stack([tone(seconds, 330.0), chirp(seconds), noise(seconds, seed=3)]))
    emb, ts = hear_module.get_timestamp_embeddings(audio, model)
    assert emb.dtype == torch.float32 and emb.ndim == 3
    assert ts.ndim == 2 and ts.shape == emb.shape[:2]
    assert emb.shape[0] == 3 and emb.shape[2] == model.timestamp_embedding_size
    assert bool(torch.isfinite(emb).all())
    expected = expected_grid(audio.shape[1], kernel_time, model.hop_ms)
    np.testing.assert_allclose(ts[0].numpy(), expected, atol=1e-3)
    assert torch.equal(ts[0], ts[2])
    gaps = torch.diff(ts.double(), dim=1)
    assert float((gaps - model.hop_ms).abs().max()) < 1.0
    assert float(ts[:, 0].min()) > 0 and float(ts.max()) <= seconds * 1000
    # the grid reaches the last token step: less than one hop before its centre
    assert (
        float(ts[0, -1]) > expected_grid(audio.shape[1], kernel_time, kernel_time * 10.0)[-1] - model.hop_ms
    )
    scene = hear_module.get_scene_embeddings(audio, model)
    assert scene.dtype == torch.float32 and scene.shape == (3, model.scene_embedding_size)


def test_patch_interpolation_between_token_steps(tiny_patch_ckpt, patch_model):
    native = hear_module.load_model(str(tiny_patch_ckpt), hop_ms="native")
    audio = torch.from_numpy(chirp(2.5))[None]
    fine, fine_ts = hear_module.get_timestamp_embeddings(audio, patch_model)
    coarse, coarse_ts = hear_module.get_timestamp_embeddings(audio, native)
    assert patch_model.hop_ms == 40.0 and native.hop_ms == 160.0
    assert torch.equal(fine_ts[0, ::4], coarse_ts[0])
    torch.testing.assert_close(fine[0, ::4], coarse[0], rtol=0, atol=1e-6)
    midpoints = (coarse[0, :-1] + coarse[0, 1:]) / 2
    torch.testing.assert_close(fine[0, 2::4], midpoints, rtol=0, atol=1e-6)
    quarter = 0.75 * coarse[0, :-1] + 0.25 * coarse[0, 1:]
    torch.testing.assert_close(fine[0, 1::4], quarter, rtol=0, atol=1e-6)
    # the scene embedding is the mean of the native token-step features
    scene = hear_module.get_scene_embeddings(audio, patch_model)
    torch.testing.assert_close(scene[0], coarse[0].mean(0), rtol=0, atol=1e-6)


def test_matches_the_extraction_engine(tiny_frame_ckpt, frame_model):
    audio = torch.from_numpy(tone(1.5, 880.0))
    reference = Embedder(str(tiny_frame_ckpt), device="cpu", dtype="float32").frame_features([audio])[0][0]
    emb, _ = hear_module.get_timestamp_embeddings(audio[None], frame_model)
    torch.testing.assert_close(emb[0], reference, rtol=0, atol=1e-6)


@pytest.mark.parametrize("which", ["patch", "frame"])
def test_batch_independence(which, patch_model, frame_model):
    model = patch_model if which == "patch" else frame_model
    seconds = 1.3
    clips = [tone(seconds, 200.0 + 150 * k, seed=k) for k in range(15)]
    target = chirp(seconds)
    alone = torch.from_numpy(target)[None]
    batch = torch.from_numpy(np.stack(clips[:7] + [target] + clips[7:]))
    assert batch.shape[0] == 16
    emb_alone, ts_alone = hear_module.get_timestamp_embeddings(alone, model)
    emb_batch, ts_batch = hear_module.get_timestamp_embeddings(batch, model)
    assert torch.equal(ts_alone[0], ts_batch[7])
    assert float((emb_alone[0] - emb_batch[7]).abs().max()) < 1e-5
    scene_alone = hear_module.get_scene_embeddings(alone, model)
    scene_batch = hear_module.get_scene_embeddings(batch, model)
    assert float((scene_alone[0] - scene_batch[7]).abs().max()) < 1e-5
    # the others are really different clips (the check above is not vacuous)
    assert float((scene_batch[0] - scene_batch[7]).abs().max()) > 1e-3


def test_layer_and_frequency_options(tiny_patch_ckpt):
    audio = torch.from_numpy(np.stack([tone(1.2), noise(1.2)]))
    get = lambda **opts: hear_module.get_scene_embeddings(  # noqa: E731
        audio, hear_module.load_model(str(tiny_patch_ckpt), **opts)
    )
    last, first, both = get(layer="last"), get(layer=1), get(layer=[1, 2])
    assert both.shape[1] == 2 * last.shape[1] == 2 * 512
    torch.testing.assert_close(both[:, :512], first, rtol=0, atol=1e-6)
    torch.testing.assert_close(both[:, 512:], last, rtol=0, atol=1e-6)
    torch.testing.assert_close(get(layer="1,2"), both, rtol=0, atol=1e-6)
    torch.testing.assert_close(get(layer="concat"), both, rtol=0, atol=1e-6)
    torch.testing.assert_close(get(layer="mean"), (first + last) / 2, rtol=0, atol=1e-6)
    torch.testing.assert_close(get(layer=-1), last, rtol=0, atol=0)
    pooled = get(freq_pool="mean")
    assert pooled.shape == (2, 64)
    torch.testing.assert_close(pooled, last.reshape(2, 8, 64).mean(1), rtol=0, atol=1e-5)


def test_short_audio_gives_one_centred_embedding(patch_model, frame_model):
    for model in (patch_model, frame_model):
        for samples in (1, 100, 399, 700):
            audio = torch.from_numpy(tone(samples / SR, 500.0))[None].repeat(2, 1)
            emb, ts = hear_module.get_timestamp_embeddings(audio, model)
            if samples < model.min_samples:
                assert emb.shape == (2, 1, model.timestamp_embedding_size)
                assert float(ts[0, 0]) == pytest.approx(samples / SR * 500)
            assert bool(torch.isfinite(emb).all()) and float(ts.max()) <= samples / SR * 1000
            assert hear_module.get_scene_embeddings(audio, model).shape == (2, model.scene_embedding_size)


def test_bad_input_is_named(patch_model, tiny_patch_ckpt):
    good = torch.from_numpy(tone(1.0))
    with pytest.raises(AudioError, match=r"\[n_sounds, n_samples\].*audio\[None\]"):
        hear_module.get_timestamp_embeddings(good, patch_model)
    with pytest.raises(AudioError, match=r"shape \(1, 1, 16000\)"):
        hear_module.get_scene_embeddings(good[None, None], patch_model)
    with pytest.raises(AudioError, match="float64"):
        hear_module.get_scene_embeddings(good[None].double(), patch_model)
    with pytest.raises(AudioError, match="int16"):
        hear_module.get_scene_embeddings((good[None] * 3000).short(), patch_model)
    with pytest.raises(AudioError, match="empty"):
        hear_module.get_scene_embeddings(torch.zeros(1, 0), patch_model)
    with pytest.raises(AudioError, match="NaN"):
        hear_module.get_scene_embeddings(torch.full((1, 16000), math.nan), patch_model)
    with pytest.raises(AudioError, match="torch.Tensor"):
        hear_module.get_scene_embeddings(good[None].numpy(), patch_model)
    with pytest.raises(ConfigError, match="load_model"):
        hear_module.get_scene_embeddings(good[None], patch_model.model)
    with pytest.raises(ConfigError, match="16000 Hz"):
        hear_module.load_model(str(tiny_patch_ckpt), sample_rate=44100)
    with pytest.raises(ConfigError, match="unknown model options"):
        hear_module.load_model(str(tiny_patch_ckpt), layers=3)
    with pytest.raises(ConfigError, match="layer"):
        hear_module.load_model(str(tiny_patch_ckpt), layer=5)
    with pytest.raises(ConfigError, match="hop_ms"):
        hear_module.load_model(str(tiny_patch_ckpt), hop_ms=0)
    with pytest.raises(ConfigError, match="freq_pool"):
        hear_module.load_model(str(tiny_patch_ckpt), freq_pool="max")
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        hear_module.load_model("/nonexistent/model.pt")


def test_hear_validator_passes(tiny_patch_ckpt, tiny_frame_ckpt, shims):
    pytest.importorskip("hearvalidator")
    from hearvalidator.validate import ValidateModel

    for ckpt in (tiny_patch_ckpt, tiny_frame_ckpt):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ValidateModel("hear_module", str(ckpt), device="cpu")()
        assert not [w for w in caught if "50ms" in str(w.message)], "hop above 50 ms"


def test_compat_shims(shims):
    import importlib.util

    import tensorflow as tf  # the real one or the stub

    assert importlib.util.find_spec("tensorflow") is not None
    assert not isinstance(torch.nn.Linear(1, 1), tf.Module)
    assert os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1"
    pl = pytest.importorskip("pytorch_lightning")
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit_loop.current_epoch = 3
    assert trainer.current_epoch == 3 and trainer.fit_loop.current_epoch == 3


def test_launcher_usage_and_cli_command(tmp_path, tiny_frame_ckpt):
    pytest.importorskip("hearvalidator")
    result = subprocess.run(
        [sys.executable, "-m", "hear_module.run"], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert result.returncode == 2 and "embeddings" in result.stderr
    cli = [sys.executable, "-m", "maeast_embed.cli", "hear", "validate", "hear_module", "--model"]
    result = subprocess.run(
        [*cli, str(tiny_frame_ckpt)], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert result.returncode == 0 and "Looks good!" in result.stdout, result.stderr[-2000:]
    assert "Interval between timestamps is 20.0ms" in result.stdout
    result = subprocess.run(
        [*cli, str(tmp_path / "missing.pt")], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert result.returncode != 0 and "no checkpoint file" in result.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_outputs_follow_the_input_device(patch_model):
    model = patch_model.to("cuda")
    try:
        audio = torch.from_numpy(tone(2.0))[None].cuda()
        emb, ts = hear_module.get_timestamp_embeddings(audio, model)
        assert emb.device.type == ts.device.type == "cuda" and emb.dtype == torch.float32
    finally:
        model.to("cpu")


@pytest.mark.slow
def test_twenty_minutes_in_chunks(patch_model):
    """20 minutes of audio in one call: chunked, exact grid to the end, finite (tiny model)."""
    seconds = 20 * 60
    audio = torch.from_numpy(noise(seconds, seed=5))[None]
    emb, ts = hear_module.get_timestamp_embeddings(audio, patch_model)
    expected = expected_grid(audio.shape[1], 16, 40.0)
    assert emb.shape == (1, expected.size, patch_model.timestamp_embedding_size)
    np.testing.assert_allclose(ts[0].numpy(), expected, atol=1e-3)
    assert float(ts.max()) <= seconds * 1000 and bool(torch.isfinite(emb).all())
    # windows are encoded alone: the first minute equals that minute embedded by itself
    head, _ = hear_module.get_timestamp_embeddings(audio[:, : 60 * 16000], patch_model)
    # both share five full 10.24 s windows (320 token steps, grid points 0..4 * 319)
    cut = 4 * (5 * 64 - 1) + 1
    torch.testing.assert_close(emb[0, :cut], head[0, :cut], rtol=0, atol=1e-5)
