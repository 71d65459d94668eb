"""Checkpoint loading/saving in the official layout, safety, named models and the cache."""

import argparse
import http.server
import os
import threading
from functools import partial

import pytest
import torch
from click.testing import CliRunner
from helpers import make_checkpoint, make_model, tone, write_audio
from test_config import official_cfg

from maeast_embed import checkpoint as ckpt
from maeast_embed.checkpoint import load_model, read_checkpoint, save_official, to_official_state
from maeast_embed.cli import main
from maeast_embed.errors import CheckpointError


def test_roundtrip_gives_identical_outputs(tmp_path):
    model = make_model("tiny-frame", seed=4)
    path = tmp_path / "m.pt"
    save_official(model, path)
    loaded = load_model(path)
    tokens = torch.randn(2, 30, 256)
    with torch.no_grad():
        for a, b in zip(model(tokens), loaded(tokens)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert loaded.cfg == model.cfg and not loaded.training
    assert loaded.checkpoint.sha256 == ckpt.sha256_file(path)
    assert torch.equal(loaded.batch_norm.running_mean, model.batch_norm.running_mean)


def test_official_layout_has_every_entry(tmp_path):
    state = to_official_state(make_model("patch"))
    weights = state["model"]
    assert len(weights) == 243  # the 12-layer official state dict
    assert weights["enc_sine_pos_embed.pe"].shape == (1, 48000, 768)
    assert {"encoder_mask_emb", "layer_norm.weight", "batch_norm.num_batches_tracked",
            "decoder.layers.1.final_layer_norm.bias", "final_proj_classification.weight"} <= set(weights)
    assert state["cfg"]["model"]["ast_kernel_size_time"] == 16
    assert state["cfg"]["task"]["mask_type"] == "chunk_mask"


def test_pickled_objects_are_refused_unless_trusted(tmp_path):
    path = tmp_path / "legacy.pt"
    state = to_official_state(make_model("tiny-patch"))
    state["extra_state"] = {"unsafe": partial(print, "hi")}  # needs arbitrary unpickling
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="--trust-checkpoint"):
        load_model(path)
    assert load_model(path, trust_checkpoint=True).cfg.embed_dim == 64


def test_fairseq_namespace_args_load_safely(tmp_path):
    path = tmp_path / "fairseq.pt"
    state = to_official_state(make_model("tiny-patch"))
    state["args"] = argparse.Namespace(arch="mae_ast", lr=[1e-4])
    torch.save(state, path)
    assert load_model(path).cfg.encoder_layers == 2


def test_bad_files_get_clear_errors(tmp_path):
    good = make_checkpoint(tmp_path / "good.pt", "tiny-patch")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_model(truncated)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_model(empty)
    with pytest.raises(CheckpointError, match="not found|no checkpoint"):
        load_model(tmp_path / "missing.pt")
    other = tmp_path / "resnet.pt"
    torch.save({"state_dict": {"conv.weight": torch.zeros(1)}}, other)
    with pytest.raises(CheckpointError, match="not an MAE-AST checkpoint"):
        load_model(other)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError):
        load_model(text)


def test_unsupported_variant_and_mismatched_weights(tmp_path):
    state = to_official_state(make_model("tiny-patch"))
    state["cfg"]["model"]["enc_conv_pos"] = True
    torch.save(state, tmp_path / "conv.pt")
    with pytest.raises(CheckpointError, match="unsupported MAE-AST variant"):
        load_model(tmp_path / "conv.pt")
    state = to_official_state(make_model("tiny-patch"))
    state["cfg"]["model"]["encoder_layers"] = 3  # cfg says 3 layers, weights have 2
    torch.save(state, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="missing"):
        load_model(tmp_path / "mismatch.pt")
    state = to_official_state(make_model("tiny-patch"))
    state["model"]["enc_sine_pos_embed.pe"] = torch.zeros_like(state["model"]["enc_sine_pos_embed.pe"])
    torch.save(state, tmp_path / "pe.pt")
    with pytest.raises(CheckpointError, match="sinusoidal"):
        load_model(tmp_path / "pe.pt")


def test_read_checkpoint_rejects_non_dict(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="top level"):
        read_checkpoint(tmp_path / "list.pt")


@pytest.fixture
def local_server(tmp_path):
    served = tmp_path / "www"
    served.mkdir()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}", requests
    server.shutdown()


def test_registered_name_downloads_once_into_cache(tmp_path, local_server, monkeypatch):
    served, base, requests = local_server
    make_checkpoint(served / "tiny.pt", "tiny-frame")
    monkeypatch.setitem(ckpt.REGISTRY, "tiny-test", f"{base}/tiny.pt")
    monkeypatch.setenv("MAEAST_CACHE", str(tmp_path / "cache"))
    first = load_model("tiny-test", progress=False)
    second = load_model("tiny-test", progress=False)
    assert requests == ["/tiny.pt"]
    assert first.checkpoint.name == "tiny-test" and first.checkpoint.sha256 == second.checkpoint.sha256
    cached = list((tmp_path / "cache").iterdir())
    assert [p.name for p in cached] == ["tiny.pt"]  # no partial files left behind


def test_offline_download_error_says_how_to_pass_a_file(tmp_path, monkeypatch):
    monkeypatch.setitem(ckpt.REGISTRY, "unreachable", "http://127.0.0.1:9/missing.pt")
    monkeypatch.setenv("MAEAST_CACHE", str(tmp_path / "cache"))
    with pytest.raises(CheckpointError, match="local path"):
        load_model("unreachable", progress=False)
    assert not any((tmp_path / "cache").iterdir())


def test_missing_name_lists_registered_models():
    with pytest.raises(CheckpointError, match="mae-ast-patch"):
        load_model("not-a-model-or-file")


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "out.pt"
    save_official(make_model("tiny-patch"), path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        save_official(make_model("tiny-patch", seed=9), path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["out.pt"]


def test_atomic_writes_get_the_usual_file_permissions(tmp_path):
    """Not mkstemp's 0600: other users (a shared cache, a group's run folder) can read outputs."""
    old = os.umask(0o022)
    try:
        save_official(make_model("tiny-patch"), tmp_path / "a.pt")
        os.umask(0o002)
        save_official(make_model("tiny-patch"), tmp_path / "b.pt")
    finally:
        os.umask(old)
    assert (tmp_path / "a.pt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.pt").stat().st_mode & 0o777 == 0o664


def test_legacy_non_zip_serialisation_loads(tmp_path):
    path = tmp_path / "legacy_format.pt"
    torch.save(to_official_state(make_model("tiny-frame")), path, _use_new_zipfile_serialization=False)
    assert load_model(path).cfg.variant == "frame"


def test_numpy_scalars_in_trainer_state_load_safely(tmp_path):
    import numpy as np

    path = tmp_path / "metrics.pt"
    state = to_official_state(make_model("tiny-patch"))
    metrics = {"loss": np.float64(1.5), "n": np.int64(3)}
    state["extra_state"] = {"metrics": metrics, "dtype": np.dtype("float32")}
    torch.save(state, path)
    assert load_model(path).cfg.embed_dim == 64


def test_training_only_settings_load_and_saving_writes_them_back(tmp_path):
    model = make_model("tiny-frame", seed=2)
    state = to_official_state(model)
    state["cfg"] = official_cfg("tiny-frame", mask_type="retain_spans")
    state["cfg"]["model"].update(random_mask_prob=1.45, encoder_layerdrop=0.05)
    torch.save(state, tmp_path / "official.pt")
    loaded = load_model(tmp_path / "official.pt")
    tokens = torch.randn(2, 30, 256)
    with torch.no_grad():
        for a, b in zip(model(tokens), loaded(tokens)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    save_official(loaded, tmp_path / "again.pt")
    written = read_checkpoint(tmp_path / "again.pt")["cfg"]
    for section, entries in state["cfg"].items():
        for key, value in entries.items():
            assert written[section][key] == value, (section, key)


def test_unknown_mask_type_loads_in_every_consumer_with_a_warning(tmp_path):
    import hear_module
    from maeast_upstream.mae_ast.hubconf import mae_ast_local

    state = to_official_state(make_model("tiny-patch"))
    state["cfg"]["task"]["mask_type"] = "spans_v2"
    path = tmp_path / "odd.pt"
    torch.save(state, path)
    write_audio(tmp_path / "audio" / "a.wav", tone(1.5))
    with pytest.warns(UserWarning, match="mask_type 'spans_v2' is unknown"):
        assert load_model(path).cfg.mask_type == "spans_v2"
    with pytest.warns(UserWarning, match="spans_v2"):
        result = CliRunner().invoke(main, ["info", str(path)])
        assert result.exit_code == 0 and "spans_v2" in result.output, result.output
        result = CliRunner().invoke(main, ["extract", str(tmp_path / "audio"), "-o", str(tmp_path / "out"),
                                           "--model", str(path), "--device", "cpu"])
        assert result.exit_code == 0 and (tmp_path / "out" / "a.wav.npz").is_file(), result.output
        scene = hear_module.get_scene_embeddings(torch.zeros(1, 16000), hear_module.load_model(str(path)))
        assert scene.shape[0] == 1 and torch.isfinite(scene).all()
        hidden = mae_ast_local(str(path))([torch.zeros(16000)])["hidden_states"]
        assert len(hidden) == 2


def test_a_decoder_this_port_cannot_build_loads_the_encoder_only(tmp_path):
    model = make_model("tiny-patch", seed=5)
    state = to_official_state(model)
    state["cfg"]["model"].update(dec_sine_pos=False, dec_conv_pos=True)
    del state["model"]["dec_sine_pos_embed.pe"]
    state["model"]["dec_conv_pos_embed.pos_conv.0.weight"] = torch.zeros(64, 4, 128)
    torch.save(state, tmp_path / "conv_decoder.pt")
    with pytest.warns(UserWarning, match="dec_sine_pos=False .*loading the encoder only"):
        loaded = load_model(tmp_path / "conv_decoder.pt")
    assert not loaded.has_decoder
    tokens = torch.randn(2, 24, 256)
    with torch.no_grad():
        for a, b in zip(model(tokens), loaded(tokens)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="encoder-only"):
        save_official(loaded, tmp_path / "again.pt")
    state = to_official_state(make_model("tiny-patch", seed=5))
    state["cfg"]["model"].update(use_post_enc_proj=True, decoder_embed_dim=32)
    state["model"]["post_enc_proj.weight"] = torch.zeros(32, 64)
    torch.save(state, tmp_path / "narrow_decoder.pt")
    with pytest.warns(UserWarning, match="use_post_enc_proj=True"):
        assert not load_model(tmp_path / "narrow_decoder.pt").has_decoder


def test_settings_that_change_the_embeddings_are_refused_with_their_name(tmp_path):
    for section, key, value in [("task", "feature_type", "mfcc"), ("task", "deltas", True),
                                ("model", "layer_norm_first", True)]:
        state = to_official_state(make_model("tiny-patch"))
        state["cfg"][section][key] = value
        torch.save(state, tmp_path / "x.pt")
        with pytest.raises(CheckpointError, match=f"unsupported MAE-AST variant: {key}={value!r}"):
            load_model(tmp_path / "x.pt")
