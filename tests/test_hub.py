"""Hugging Face Hub folders (export, bit-identical reload, refusals) and `org/name` model names
resolved through a Hub cache built here, offline (no network)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from helpers import make_checkpoint, tone

from maeast_embed.checkpoint import load_model, read_checkpoint, save_official, to_official_state
from maeast_embed.cli import main
from maeast_embed.errors import CheckpointError
from maeast_embed.features import Embedder
from maeast_embed.hub import parse_hub_name

pytest.importorskip("safetensors")
hf_constants = pytest.importorskip("huggingface_hub.constants")
from safetensors.torch import load_file, save_file  # noqa: E402

from maeast_embed.digest import sha256_file  # noqa: E402
from maeast_embed.export.hub import export_hub  # noqa: E402

REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory) -> Path:
    return export_hub("maeast-small", tmp_path_factory.mktemp("hub") / "maeast-small")


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny")
    checkpoint = make_checkpoint(root / "tiny.pt", "tiny-patch", seed=3)
    return checkpoint, export_hub(checkpoint, root / "folder")


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key


def test_packaged_model_folder_loads_back_bit_identically(small_folder):
    names = sorted(p.name for p in small_folder.iterdir())
    assert names == ["README.md", "config.json", "loss_curve.png", "model.safetensors"]  # + the card image
    original, loaded = load_model("maeast-small"), load_model(small_folder)
    assert_same_state(original, loaded)
    assert loaded.cfg == original.cfg and not loaded.has_decoder
    clips = [tone(1.3, 330.0), tone(2.1, 880.0, seed=2)]
    a = Embedder(original, device="cpu", dtype="float32").frame_features(clips, layer="all")
    b = Embedder(loaded, device="cpu", dtype="float32").frame_features(clips, layer="all")
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    config = json.loads((small_folder / "config.json").read_text())
    state = read_checkpoint(original.checkpoint.path)
    assert config["official_cfg"] == state["cfg"]  # verbatim
    assert config["source"] == {"name": "maeast-small", "file": "maeast-small.pt",
                                "sha256": original.checkpoint.sha256}
    assert config["weights"]["sha256"] == sha256_file(small_folder / "model.safetensors")
    assert loaded.checkpoint.sha256 == config["weights"]["sha256"]
    assert config["normalisation"]["mean"] == float(original.batch_norm.running_mean)
    assert config["frontend"]["num_mel_bins"] == 128 and config["frontend"]["preemphasis"] == 0.97
    assert config["config"]["encoder_layers"] == 6 and config["info"]["steps"] == 16000
    # float16 matrices stay float16: the folder is as small as the packaged file
    weights = load_file(small_folder / "model.safetensors")
    assert weights["encoder.layers.0.fc1.weight"].dtype == torch.float16
    assert "enc_sine_pos_embed.pe" not in weights
    card = (small_folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: maeast-embed\nlicense: cc-by-4.0\n")
    assert "## Training data" in card and "Ghandoura" in card and "## Licence" in card
    assert "load_model(\"ORG/NAME\")" in card and config["weights"]["sha256"] in card


def test_full_checkpoint_folder_keeps_the_decoder_and_saves_the_official_layout(tiny_folder, tmp_path):
    checkpoint, folder = tiny_folder
    original, loaded = load_model(checkpoint), load_model(folder)
    assert loaded.has_decoder
    assert_same_state(original, loaded)
    save_official(loaded, tmp_path / "again.pt")
    expected, again = read_checkpoint(checkpoint), read_checkpoint(tmp_path / "again.pt")
    assert again["cfg"] == expected["cfg"] == to_official_state(original)["cfg"]
    assert again["model"].keys() == expected["model"].keys()
    for key, value in expected["model"].items():
        assert torch.equal(again["model"][key], value), key
    card = (folder / "README.md").read_text()
    assert "license: other" in card and "tiny.pt" in card and "2-layer encoder, width 64" in card
    # a folder exported from a folder is the same folder
    copy = export_hub(folder, tmp_path / "copy")
    assert sha256_file(copy / "model.safetensors") == sha256_file(folder / "model.safetensors")


def test_cli_export_then_info_and_extract_from_the_folder(tiny_folder, tmp_path):
    checkpoint, _ = tiny_folder
    runner = CliRunner()
    result = runner.invoke(main, ["export", str(checkpoint), "--to", "hub", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["info", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["weights"] == "full"
    assert record["sha256"] == sha256_file(tmp_path / "out" / "model.safetensors")
    result = runner.invoke(main, ["info", str(tmp_path)])  # a folder without config.json
    assert result.exit_code != 0 and "without config.json" in result.output


def rewrite(folder: Path, dest: Path, weights: dict | None = None, **changes) -> Path:
    """A copy of `folder` with other weights and/or config.json entries (the weights' sha256
    kept consistent, so the check under test is the one that fires)."""
    shutil.copytree(folder, dest)
    if weights is not None:
        save_file(weights, dest / "model.safetensors")
    config = json.loads((dest / "config.json").read_text())
    config["weights"]["sha256"] = sha256_file(dest / "model.safetensors")
    for key, value in changes.items():
        section, _, entry = key.partition("__")
        if entry:
            config[section][entry] = value
        else:
            config[section] = value
    (dest / "config.json").write_text(json.dumps(config))
    return dest


def test_folders_whose_parts_disagree_are_refused_naming_what(tiny_folder, tmp_path):
    _, folder = tiny_folder
    weights = load_file(folder / "model.safetensors")

    def refused(dest: Path, *needles: str) -> None:
        with pytest.raises(CheckpointError) as err:
            load_model(dest)
        for needle in needles:
            assert needle in str(err.value), str(err.value)

    without = {k: v for k, v in weights.items() if k != "encoder.layers.1.fc2.bias"}
    refused(rewrite(folder, tmp_path / "missing", without), "missing ['encoder.layers.1.fc2.bias']")
    reshaped = {**weights, "encoder.layers.0.fc1.weight": torch.zeros(64, 64)}
    refused(rewrite(folder, tmp_path / "shape", reshaped), "encoder.layers.0.fc1.weight", "shape")
    refused(rewrite(folder, tmp_path / "pre", frontend__preemphasis=0.0), "['preemphasis']", "0.97")
    refused(rewrite(folder, tmp_path / "extra", frontend__htk_compat=True), "['htk_compat']")
    refused(rewrite(folder, tmp_path / "layers", config__encoder_layers=4), "['encoder_layers']", "4 vs 2")
    refused(rewrite(folder, tmp_path / "norm", normalisation__mean=0.0), "normalisation")
    refused(rewrite(folder, tmp_path / "format", format="something/else"), "not a maeast-embed Hub folder")
    cfg = json.loads((folder / "config.json").read_text())["official_cfg"]
    cfg["model"]["layer_norm_first"] = True
    refused(rewrite(folder, tmp_path / "preln", official_cfg=cfg), "layer_norm_first")
    damaged = rewrite(folder, tmp_path / "damaged")
    save_file({**weights, "encoder_mask_emb": torch.ones(64)}, damaged / "model.safetensors")
    refused(damaged, "has sha256", "damaged or replaced")
    (damaged / "model.safetensors").unlink()
    refused(damaged, "has no model.safetensors")


def populate_cache(cache: Path, repo_id: str, folder: Path, revision: str = REVISION) -> Path:
    """The huggingface_hub cache layout: blobs, a snapshot of links to them, refs/main."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for file in folder.iterdir():
        blob = repo / "blobs" / sha256_file(file)
        shutil.copyfile(file, blob)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot


@pytest.fixture
def offline_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)  # read at import by huggingface_hub
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_hub_names_resolve_through_the_offline_cache(offline_cache, tiny_folder):
    checkpoint, folder = tiny_folder
    snapshot = populate_cache(offline_cache, "some-org/tiny-mae", folder)
    original = load_model(checkpoint)
    for name in ("some-org/tiny-mae", "hf://some-org/tiny-mae", "some-org/tiny-mae@main",
                 f"some-org/tiny-mae@{REVISION}"):
        model = load_model(name)
        assert_same_state(original, model)
        assert Path(model.checkpoint.path).resolve() == snapshot.resolve() and model.checkpoint.name == name
    with pytest.raises(CheckpointError) as err:
        load_model("some-org/not-cached")
    message = str(err.value)
    assert "some-org/not-cached is not in the Hugging Face cache" in message and "HF_HUB_OFFLINE" in message
    assert "hf download some-org/not-cached" in message
    with pytest.raises(CheckpointError, match="--revision v2"):
        load_model("some-org/tiny-mae@v2")


def test_hub_name_through_the_command_line_with_the_usual_environment(tmp_path, tiny_folder):
    """A fresh process: HF_HUB_OFFLINE and HF_HUB_CACHE are read as users set them."""
    _, folder = tiny_folder
    populate_cache(tmp_path / "cache", "org/model", folder)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "maeast_embed.cli", "info", "org/model", "--json"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["sha256"] == sha256_file(folder / "model.safetensors")


def test_what_counts_as_a_hub_name():
    assert parse_hub_name("org/name") == ("org/name", None)
    assert parse_hub_name("hf://org/name@v1.0") == ("org/name", "v1.0")
    assert parse_hub_name("org/name@refs/pr/3") == ("org/name", "refs/pr/3")
    assert parse_hub_name("hf://org/model.pt") == ("org/model.pt", None)
    for local in ("models/model.pt", "a/b/c", "/abs/path", "name", "./x/y"):
        assert parse_hub_name(local) is None, local
    with pytest.raises(CheckpointError, match="no checkpoint file 'runs/final.pt'"):
        load_model("runs/final.pt")


def test_without_the_hub_extra_the_error_says_what_to_install(tiny_folder, monkeypatch, tmp_path):
    _, folder = tiny_folder
    for module in ("safetensors", "safetensors.torch", "huggingface_hub"):
        monkeypatch.setitem(sys.modules, module, None)  # import fails, as in a core-only install
    for call in (lambda: load_model(folder), lambda: load_model("org/name"),
                 lambda: export_hub("maeast-small", tmp_path / "out")):
        with pytest.raises(CheckpointError, match=r"pip install 'maeast-embed\[hub\]'"):
            call()
