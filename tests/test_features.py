"""The shared extraction engine: batch independence, chunk stitching, layers, pooling."""

import numpy as np
import pytest
import torch
from helpers import make_model, noise, tone

from maeast_embed.errors import AudioError, ConfigError
from maeast_embed.features import Embedder, parse_layer, plan_windows, pool_time, select_layers
from maeast_embed.frontend import FRAME_LENGTH, kaldi_fbank


@pytest.fixture(scope="module", params=["tiny-patch", "tiny-frame"])
def embedder(request):
    return Embedder(make_model(request.param), device="cpu", batch_size=16, chunk_seconds=1.0)


def test_same_clip_alone_or_in_a_batch_of_16(embedder):
    """In the dtype auto picks here, within that dtype's documented tolerance."""
    clips = [noise(1.0 + 0.37 * i, seed=i) for i in range(16)]
    together = embedder.frame_features(clips, layer="all")
    for i in (0, 5, 15):
        alone = embedder.frame_features([clips[i]], layer="all")[0]
        assert alone.shape == together[i].shape
        if embedder.dtype == "bfloat16":
            assert torch.nn.functional.cosine_similarity(alone, together[i], dim=-1).min() >= 0.9999
        else:
            assert (alone - together[i]).abs().max().item() <= {"float32": 1e-5, "int8": 1e-4}[embedder.dtype]


def test_windows_are_token_aligned_and_stitch_to_the_whole_file():
    windows = plan_windows(160_000, 16, 10)
    assert [w.num_steps for w in windows] == [10] * 6 + [2]
    assert windows[1].start == 10 * 16 * 160 and windows[0].length == (160 - 1) * 160 + FRAME_LENGTH
    model = make_model("tiny-patch")
    wave = torch.from_numpy(tone(3.0))
    fbank, frames = kaldi_fbank(wave.unsqueeze(0))
    whole_tokens, _ = model.tokenize(fbank, frames)
    pieces = []
    for w in plan_windows(wave.numel(), 16, 4):
        fb, fl = kaldi_fbank(wave[w.start : w.start + w.length].unsqueeze(0))
        pieces.append(model.tokenize(fb, fl)[0])
    torch.testing.assert_close(torch.cat(pieces, 1), whole_tokens, rtol=0, atol=1e-6)


def test_chunked_features_equal_per_window_encoding():
    model = make_model("tiny-frame")
    wave = noise(2.5, seed=3)
    chunked = Embedder(model, device="cpu", chunk_seconds=1.0).frame_features([wave])[0]
    whole = Embedder(model, device="cpu", chunk_seconds=60.0).frame_features([wave])[0]
    assert chunked.shape == whole.shape  # same number of frames, stitched in order
    first = Embedder(model, device="cpu", chunk_seconds=60.0).frame_features([wave[: 100 * 160 + 240]])[0]
    torch.testing.assert_close(chunked[:, :50], first[:, :50], rtol=0, atol=1e-5)


def test_layers_and_frequency_pooling():
    model = make_model("tiny-patch", encoder_layers=3)
    emb = Embedder(model, device="cpu")
    wave = tone(1.0)
    all_layers = emb.frame_features([wave], layer="all")[0]
    assert all_layers.shape == (3, 6, 8 * 64)
    torch.testing.assert_close(emb.frame_features([wave])[0][0], all_layers[-1])
    torch.testing.assert_close(emb.frame_features([wave], layer=2)[0][0], all_layers[1])
    torch.testing.assert_close(emb.frame_features([wave], layer=-3)[0][0], all_layers[0])
    torch.testing.assert_close(emb.frame_features([wave], layer="mean")[0][0], all_layers.mean(0))
    torch.testing.assert_close(emb.frame_features([wave], layer=(1, 3))[0], all_layers[[0, 2]])
    mean = emb.frame_features([wave], freq_pool="mean")[0]
    torch.testing.assert_close(mean[0], all_layers[-1].reshape(6, 8, 64).mean(1))
    assert emb.feature_dim("concat") == 512 and emb.feature_dim("mean") == 64
    clip = emb.clip_embeddings([wave], pool="meanmax")[0]
    assert clip.shape == (1, 1024)
    with pytest.raises(ConfigError, match="layer"):
        emb.frame_features([wave], layer=4)
    with pytest.raises(ConfigError, match="freq_pool"):
        emb.frame_features([wave], freq_pool="max")


def test_timestamps_centre_each_token_step(embedder):
    steps = 5
    stamps = embedder.timestamps(steps)
    hop = embedder.step_seconds
    assert stamps.dtype == np.float64
    np.testing.assert_allclose(np.diff(stamps), hop)
    kt = embedder.model.cfg.kernel_time
    assert stamps[0] == pytest.approx(((kt - 1) * 160 + 400) / 2 / 16000)


def test_short_clip_gives_one_frame_and_bad_input_errors(embedder):
    out = embedder.frame_features([np.zeros(100, dtype=np.float32)])[0]
    assert out.shape[1] == 1 and torch.isfinite(out).all()
    with pytest.raises(AudioError, match="NaN"):
        embedder.frame_features([np.full(4000, np.nan, dtype=np.float32)])
    with pytest.raises(AudioError, match="1-D"):
        embedder.frame_features([np.zeros((2, 4000), dtype=np.float32)])
    with pytest.raises(AudioError, match="empty"):
        embedder.frame_features([np.zeros(0, dtype=np.float32)])
    with pytest.raises(AudioError, match="float"):
        embedder.frame_features([np.zeros(4000, dtype=np.int16)])


def test_bfloat16_close_to_float32():
    model = make_model("tiny-patch")
    clips = [noise(2.0, seed=1), tone(1.5)]
    ref = Embedder(model, device="cpu").frame_features(clips)
    low = Embedder(model, device="cpu", dtype="bfloat16").frame_features(clips)
    for a, b in zip(ref, low):
        assert b.dtype == torch.float32
        assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.99


def test_helpers():
    assert parse_layer("all") == "all" and parse_layer("7") == 7 and parse_layer("4,8") == (4, 8)
    with pytest.raises(ConfigError):
        parse_layer("first")
    hs = [torch.full((1, 2, 3), float(i)) for i in range(4)]
    assert select_layers(hs, "last").shape == (1, 1, 2, 3)
    x = torch.tensor([[1.0, 5.0], [3.0, -1.0]])
    torch.testing.assert_close(pool_time(x, "meanmax"), torch.tensor([2.0, 2.0, 3.0, 5.0]))
    with pytest.raises(ConfigError, match="auto, float32, bfloat16, float16, int8; got 'int4'"):
        Embedder(make_model("tiny-patch"), dtype="int4")
