"""The s3prl upstream (`upstream.mae_ast`): parity with s3prl's own port, fine-tuning behaviour,
the s3prl Featurizer contract, hub entries, bad input, and the s3prl 0.4.18 shims."""

from __future__ import annotations

import argparse
import http.server
import os
import shutil
import threading
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import make_checkpoint, write_audio

from maeast_embed.checkpoint import REGISTRY
from maeast_embed.errors import AudioError, CheckpointError, ConfigError
from maeast_upstream import compat as s3prl_compat
from maeast_upstream.mae_ast import hubconf
from maeast_upstream.mae_ast.expert import UpstreamExpert


@pytest.fixture
def ref_expert():
    """s3prl's own MAE-AST expert (the tests comparing against it need the s3prl extra)."""
    return pytest.importorskip("s3prl.upstream.mae_ast.expert", reason="needs the s3prl extra")


@pytest.fixture
def interfaces():
    return pytest.importorskip("s3prl.upstream.interfaces", reason="needs the s3prl extra")

TOL = 1e-4
# long, padded, shorter than one patch (2000 < 2800 samples) inside a longer batch, odd lengths
LENGTHS = [16000, 9001, 2000, 16000 - 77, 12345]
NO_DROPOUT = dict(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, dropout_input=0.0)


def waves(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [0.1 * torch.randn(n, generator=g) for n in lengths]


@pytest.fixture(scope="module")
def no_dropout_ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("updrop")
    return {
        name: make_checkpoint(root / f"{name}.pt", name, seed=3, **NO_DROPOUT)
        for name in ("tiny-patch", "tiny-frame")
    }


def _max_diff(xs, ys):
    assert len(xs) == len(ys)
    for x, y in zip(xs, ys, strict=True):
        assert x.shape == y.shape
    return max(float((x - y).abs().max()) for x, y in zip(xs, ys, strict=True))


@pytest.mark.parametrize("name", ["tiny-patch", "tiny-frame"])
@pytest.mark.parametrize("lengths", [LENGTHS, [16000, 16000]])
def test_frozen_matches_s3prl_port(name, lengths, tiny_patch_ckpt, tiny_frame_ckpt, ref_expert):
    ckpt = str(tiny_patch_ckpt if name == "tiny-patch" else tiny_frame_ckpt)
    ours, ref = UpstreamExpert(ckpt).eval(), ref_expert.UpstreamExpert(ckpt).eval()
    wavs = waves(lengths)
    with torch.no_grad():
        out, expected = ours(wavs), ref(wavs)["hidden_states"]
    rate = 2560 if name == "tiny-patch" else 320
    assert ours.get_downsample_rates("hidden_states") == ref.get_downsample_rates() == rate
    assert len(out["hidden_states"]) == ours.model.cfg.encoder_layers
    assert out["last_hidden_state"] is out["hidden_states"][-1]
    per_step = 8 if name == "tiny-patch" else 1
    steps = len(range(0, max(lengths), rate))
    frames = 1 + (max(lengths) - 400) // 160
    assert out["hidden_states"][0].shape == (len(lengths), min(steps, frames // (rate // 160)), per_step * 64)
    assert _max_diff(out["hidden_states"], expected) <= TOL


@pytest.mark.parametrize("name", ["tiny-patch", "tiny-frame"])
def test_fine_tuning_matches_s3prl_port_in_train_mode(name, no_dropout_ckpts, ref_expert):
    """-f: trainable, BatchNorm on batch statistics (running stats updated), layerdrop off,
    gradients equal to the reference's (dropout zeroed in the checkpoint for a fair compare)."""
    ckpt = str(no_dropout_ckpts[name])
    ours, ref = UpstreamExpert(ckpt).train(), ref_expert.UpstreamExpert(ckpt).train()
    assert ours.model.cfg.encoder_layerdrop > 0 and ours.model.encoder.layerdrop == 0
    assert all(p.requires_grad for p in ours.parameters())
    wavs = waves(LENGTHS, seed=1)
    out, expected = ours(wavs)["hidden_states"], ref(wavs)["hidden_states"]
    assert _max_diff(out, expected) <= TOL
    for stat in ("running_mean", "running_var"):
        ours_stat, ref_stat = getattr(ours.model.batch_norm, stat), getattr(ref.model.batch_norm, stat)
        assert torch.allclose(ours_stat, ref_stat, atol=1e-5)
    assert not torch.allclose(ours.model.batch_norm.running_mean, torch.tensor([-6.5]))  # it moved
    weights = torch.randn(out[-1].shape, generator=torch.Generator().manual_seed(5))
    (out[-1] * weights).sum().backward()
    (expected[-1] * weights).sum().backward()
    ref_params = dict(ref.model.named_parameters())
    for key in ("post_extract_proj.weight", "encoder.layers.0.fc1.weight", "encoder.layer_norm.weight"):
        ours_grad = dict(ours.model.named_parameters())[key].grad
        assert ours_grad is not None and ours_grad.abs().sum() > 0
        assert torch.allclose(ours_grad, ref_params[key].grad, rtol=1e-3, atol=1e-5), key


def test_train_mode_dropout_is_active(tiny_patch_ckpt):
    expert = UpstreamExpert(str(tiny_patch_ckpt)).train()
    wavs = waves([16000, 12000])
    torch.manual_seed(0)
    first = expert(wavs)["last_hidden_state"]
    second = expert(wavs)["last_hidden_state"]
    assert float((first - second).abs().max()) > 1e-3  # dropout 0.1 in the checkpoint
    expert.eval()
    with torch.no_grad():
        assert torch.equal(expert(wavs)["last_hidden_state"], expert(wavs)["last_hidden_state"])


@pytest.mark.parametrize("selection", ["hidden_states", "last_hidden_state"])
def test_s3prl_featurizer_contract(selection, tiny_patch_ckpt, interfaces):
    """s3prl's own Featurizer accepts the expert (shapes, rate, per-clip lengths)."""
    expert = UpstreamExpert(str(tiny_patch_ckpt))
    featurizer = interfaces.Featurizer(expert, feature_selection=selection, upstream_device="cpu")
    assert featurizer.downsample_rate == 2560 and featurizer.output_dim == 8 * 64
    assert featurizer.feature_selection == selection
    wavs = waves([32000, 20000, 9000])
    with torch.no_grad():
        features = featurizer(wavs, expert(wavs))
    assert [f.shape[0] for f in features] == [round(n / 2560) for n in (32000, 20000, 9000)]


def test_hub_entries_resolve_files_names_and_urls(tiny_frame_ckpt, tmp_path, monkeypatch):
    monkeypatch.setenv("MAEAST_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    for name in ("mae-ast-patch", "mae-ast-frame"):  # pre-seeded cache: no network
        shutil.copy(tiny_frame_ckpt, tmp_path / "cache" / REGISTRY[name].rsplit("/", 1)[-1])
    wav = waves([8000])
    reference = hubconf.mae_ast(ckpt=str(tiny_frame_ckpt)).eval()(wav)["last_hidden_state"]
    entries = (
        hubconf.mae_ast_local(ckpt=str(tiny_frame_ckpt)),
        hubconf.mae_ast(ckpt="mae-ast-frame"),
        hubconf.mae_ast_patch(ckpt=None, model_config=None, refresh=False),
        hubconf.mae_ast_frame(),
    )
    for entry in entries:
        assert torch.equal(entry.eval()(wav)["last_hidden_state"], reference)

    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(tiny_frame_ckpt, served / "remote.pt")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/remote.pt"
        for entry in (hubconf.mae_ast_url, hubconf.mae_ast):
            assert torch.equal(entry(ckpt=url).eval()(wav)["last_hidden_state"], reference)
    finally:
        server.shutdown()
    assert (tmp_path / "cache" / "remote.pt").is_file()


def test_hub_entries_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="needs -k"):
        hubconf.mae_ast(ckpt=None, model_config=None, refresh=False)
    with pytest.raises(ConfigError, match="needs -k PATH"):
        hubconf.mae_ast_local(ckpt=None)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        hubconf.mae_ast(ckpt=str(tmp_path / "missing.pt"))
    with pytest.raises(ConfigError, match="use -u mae_ast"):
        hubconf.mae_ast_patch(ckpt="/some/file.pt")
    with pytest.raises(ConfigError, match="URL"):
        hubconf.mae_ast_url(ckpt="/some/file.pt")
    not_mae = tmp_path / "resnet.pt"
    torch.save({"state_dict": {"conv.weight": torch.zeros(3)}}, not_mae)
    with pytest.raises(CheckpointError, match="not an MAE-AST checkpoint"):
        hubconf.mae_ast(ckpt=str(not_mae))


def test_untrusted_pickle_points_to_the_env_switch(tiny_patch_ckpt, tmp_path, monkeypatch):
    state = torch.load(tiny_patch_ckpt, weights_only=True)
    state["extra"] = threading.Lock  # a global the safe loader refuses
    risky = tmp_path / "risky.pt"
    torch.save(state, risky)
    monkeypatch.delenv("MAEAST_TRUST_CHECKPOINT", raising=False)
    with pytest.raises(CheckpointError, match="MAEAST_TRUST_CHECKPOINT=1"):
        UpstreamExpert(str(risky))
    monkeypatch.setenv("MAEAST_TRUST_CHECKPOINT", "1")
    assert UpstreamExpert(str(risky)).get_downsample_rates() == 2560


@pytest.mark.parametrize(
    "lengths, message",
    [
        ([16000, 0], "clip 1 of the batch has 0 samples"),
        ([300, 16000], "clip 0 of the batch has 300 samples"),
        ([2000, 1500], "shorter than one patch token step \\(2800 samples"),
        ([2799], "shorter than one patch token step"),
    ],
)
def test_short_waveforms_raise_clear_errors(lengths, message, tiny_patch_ckpt):
    expert = UpstreamExpert(str(tiny_patch_ckpt))
    with pytest.raises(AudioError, match=message):
        expert(waves(lengths))


def test_one_token_step_is_enough(tiny_patch_ckpt, tiny_frame_ckpt):
    patch, frame = UpstreamExpert(str(tiny_patch_ckpt)), UpstreamExpert(str(tiny_frame_ckpt))
    with torch.no_grad():
        assert patch(waves([2800, 1000]))["last_hidden_state"].shape == (2, 1, 512)
        assert frame(waves([2000]))["last_hidden_state"].shape == (1, 5, 64)


def test_malformed_batches(tiny_patch_ckpt):
    expert = UpstreamExpert(str(tiny_patch_ckpt))
    with pytest.raises(AudioError, match="1-D"):
        expert([torch.zeros(2, 16000)])
    with pytest.raises(AudioError, match="non-empty list"):
        expert([])
    bad = waves([16000])[0]
    bad[100] = float("nan")
    with pytest.raises(AudioError, match="NaN"):
        expert([bad])


# ------------------------------------------------------------------------------------ shims


@pytest.fixture(scope="module")
def shims():
    s3prl_compat.apply()
    s3prl_compat.apply()  # idempotent
    return s3prl_compat


SHIMS_NEED_TORCHAUDIO = "the shims patch torchaudio (the s3prl extra brings it)"


def test_torchaudio_shims(shims, tmp_path):
    torchaudio = pytest.importorskip("torchaudio", reason=SHIMS_NEED_TORCHAUDIO)

    torchaudio.set_audio_backend("sox_io")
    stereo = np.stack([np.linspace(-0.5, 0.5, 22050), np.full(22050, 0.25)], axis=1).astype(np.float32)
    path = write_audio(tmp_path / "stereo.wav", stereo, sr=22050, subtype="FLOAT")
    wave, rate = torchaudio.load(str(path))
    assert rate == 22050 and wave.shape == (2, 22050) and wave.dtype == torch.float32
    assert np.allclose(wave.numpy().T, sf.read(str(path), dtype="float32")[0])

    from torchaudio.sox_effects import apply_effects_file

    effects = [["channels", "1"], ["rate", "16000"], ["gain", "-3.0"]]
    out, out_rate = apply_effects_file(str(path), effects)
    assert out_rate == 16000 and out.shape == (1, 16000)
    expected = torchaudio.functional.resample(wave.mean(0, keepdim=True), 22050, 16000) * 10 ** (-3 / 20)
    assert torch.allclose(out, expected, atol=1e-6)
    with pytest.raises(shims.S3PRLCompatError, match="not provided"):
        apply_effects_file(str(path), [["reverb", "50"]])


def test_non_16k_audio_is_reported(shims, tmp_path):
    torchaudio = pytest.importorskip("torchaudio", reason=SHIMS_NEED_TORCHAUDIO)

    path = write_audio(tmp_path / "hi.wav", np.zeros(8000, dtype=np.float32), sr=8000)
    shims._warned_rates.discard(8000)
    with pytest.warns(UserWarning, match="8000 Hz.*resample"):
        torchaudio.load(str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per rate
        torchaudio.load(str(path))


def test_checkpoint_shim(shims, tmp_path):
    path = tmp_path / "states.ckpt"
    torch.save({"Args": argparse.Namespace(mode="train", seed=1337), "Step": 3}, path)
    assert torch.load(path, map_location="cpu")["Args"].seed == 1337  # weights_only default


def test_hub_shims(shims):
    huggingface_hub = pytest.importorskip("huggingface_hub", reason="installed with the s3prl extra")
    with pytest.raises(shims.S3PRLCompatError, match="huggingface_hub<1"):
        huggingface_hub.HfFolder.save_token("x")
    with pytest.raises(shims.S3PRLCompatError):
        huggingface_hub.Repository("somewhere")


def test_distributed_sampler_wrapper_shards_the_drawn_indices(shims):
    from catalyst.data.sampler import DistributedSamplerWrapper

    weights = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0])
    sampler = torch.utils.data.WeightedRandomSampler(weights, 12)
    shards = [list(DistributedSamplerWrapper(sampler, num_replicas=2, rank=r)) for r in (0, 1)]
    assert [len(s) for s in shards] == [6, 6]
    assert all(weights[i] > 0 for shard in shards for i in shard)
    drawn = sorted(shards[0] + shards[1])
    again = [list(DistributedSamplerWrapper(sampler, num_replicas=2, rank=r)) for r in (0, 1)]
    assert again == shards  # every rank sees the same draw for an epoch
    assert len(set(drawn)) > 1


def test_sid_file_lists_are_kept_per_dataset_outside_s3prl(tmp_path, monkeypatch):
    """s3prl keeps VoxCeleb1's file lists as <package>/.cache/<split>.pkl whatever the dataset."""
    s3prl_compat.apply()
    vox = pytest.importorskip("s3prl.downstream.voxceleb1.dataset", reason="needs the s3prl extra")
    monkeypatch.setattr(vox, "CACHE_PATH", vox.CACHE_PATH)
    monkeypatch.setattr(vox.SpeakerClassifiDataset, "__init__", vox.SpeakerClassifiDataset.__init__)
    in_package = sorted(Path(vox.__file__).parent.glob(".cache/*"))

    def voxceleb(name: str, speakers: list[int]) -> tuple[Path, Path]:
        root, lines = tmp_path / name / "VoxCeleb1", []
        for s in speakers:
            rel = f"id{10001 + s}/video0/00001.wav"
            (root / "dev" / "wav" / rel).parent.mkdir(parents=True)
            (root / "dev" / "wav" / rel).touch()  # only globbed when the lists are made
            lines.append(f"1 {rel}\n")
        (tmp_path / name / "iden_split.txt").write_text("".join(lines))
        return root, tmp_path / name / "iden_split.txt"

    s3prl_compat.key_voxceleb1_cache(vox)
    s3prl_compat.key_voxceleb1_cache(vox)  # idempotent
    first, second = voxceleb("a", [0, 1]), voxceleb("b", [2])
    assert vox.SpeakerClassifiDataset("train", *first).label == [0, 1]
    assert vox.SpeakerClassifiDataset("train", *second).label == [2]  # not the first dataset's list
    cached = Path(s3prl_compat.voxceleb1_cache_dir(*first)) / "train.pkl"
    assert cached.is_file() and cached.is_relative_to(os.environ["MAEAST_CACHE"])
    for path in (first[0] / "dev" / "wav" / "id10002").rglob("*.wav"):
        path.unlink()  # read from the cache from now on: no glob needs the files
    assert vox.SpeakerClassifiDataset("train", *first).label == [0, 1]
    first[1].write_text("1 id10001/video0/00001.wav\n")  # another split file: lists made anew
    assert vox.SpeakerClassifiDataset("train", *first).label == [0]
    assert sorted(Path(vox.__file__).parent.glob(".cache/*")) == in_package  # nothing written there
