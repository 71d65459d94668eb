"""Model config <-> official cfg: what loading tolerates (kept and written back), what it refuses
(settings that change the embeddings), and what pretraining refuses, naming the setting."""

import copy

import pytest
import torch
import yaml
from click.testing import CliRunner
from helpers import make_model, tone, write_audio

from maeast_embed.checkpoint import load_model, read_checkpoint, save_encoder_only, to_official_state
from maeast_embed.cli import main
from maeast_embed.config import INFERENCE_SETTINGS, MASK_TYPES, ModelConfig, preset
from maeast_embed.errors import ConfigError
from maeast_embed.pretrain.config import TrainConfig, build_config


def official_cfg(name: str = "tiny-frame", **task) -> dict:
    """A cfg as the official fairseq trainer writes it: the recipe's settings, training-only
    entries this port does not model, and the trainer's other sections."""
    cfg = preset(name).to_official()
    cfg["model"].update(feature_grad_mult=0.1, checkpoint_activations=True, mask_length=10,
                        required_seq_len_multiple=2)
    cfg["task"].update(data="/data/manifests", max_sample_size=250000, normalize=True, **task)
    cfg["criterion"] = {"_name": "mae_ast", "reconstruction_weight": 10.0, "classification_weight": 1.0}
    cfg["optimization"] = {"max_update": 400000, "lr": [0.0001], "clip_norm": 10.0}
    cfg["common"] = {"fp16": True, "seed": 1337}
    return cfg


def test_presets_roundtrip_and_carry_nothing_extra():
    for name in ("patch", "frame", "tiny-patch", "tiny-frame"):
        cfg = preset(name)
        again = ModelConfig.from_official(cfg.to_official())
        assert again == cfg and again.official == {} and again.to_official() == cfg.to_official()


def test_training_only_settings_load_and_are_written_back_unchanged():
    original = official_cfg(mask_type="retain_spans")
    original["model"]["random_mask_prob"] = 1.45  # the official README's value for retain_spans
    original["model"]["dropout"] = 0.3
    cfg = ModelConfig.from_official(copy.deepcopy(original))
    assert (cfg.mask_type, cfg.mask_prob, cfg.dropout) == ("retain_spans", 1.45, 0.3)
    assert cfg.official["criterion"]["reconstruction_weight"] == 10.0
    written = cfg.to_official()
    for section, entries in original.items():
        for key, value in entries.items():
            assert written[section][key] == value, (section, key)
    assert cfg.pretraining_issues() == []  # retain_spans with the official span settings trains


def test_unknown_mask_type_warns_and_is_kept():
    with pytest.warns(UserWarning, match="'spans_v2'"):
        cfg = ModelConfig.from_official(official_cfg(mask_type="spans_v2"), source="x.pt")
    assert cfg.mask_type == "spans_v2" and cfg.to_official()["task"]["mask_type"] == "spans_v2"
    (issue,) = cfg.pretraining_issues()
    assert "model.mask_type='spans_v2'" in issue and all(name in issue for name in MASK_TYPES)


@pytest.mark.parametrize(("section", "key"), sorted(INFERENCE_SETTINGS))
def test_settings_that_change_the_embeddings_are_refused(section, key):
    _, required, _ = INFERENCE_SETTINGS[(section, key)]
    wrong = {"fbank": "mfcc", 16000: 8000, 128: 80, "gelu": "relu", True: False, False: True}[required]
    cfg = official_cfg()
    cfg[section][key] = wrong
    with pytest.raises(ConfigError, match=rf"unsupported MAE-AST variant: {key}={wrong!r}"):
        ModelConfig.from_official(cfg)


def test_absent_positions_and_bad_patches_are_refused():
    cfg = official_cfg()
    del cfg["model"]["enc_sine_pos"]  # fairseq's default: no encoder positions at all
    with pytest.raises(ConfigError, match="enc_sine_pos=False"):
        ModelConfig.from_official(cfg)
    cfg = official_cfg("tiny-patch")
    cfg["model"].update(ast_kernel_size_chan=24, ast_kernel_stride_chan=24)  # 24 does not tile 128
    with pytest.raises(ConfigError, match="kernel_chan=24 must divide num_mel_bins=128"):
        ModelConfig.from_official(cfg)
    cfg = official_cfg("tiny-patch")
    cfg["model"]["ast_kernel_stride_time"] = 8
    with pytest.raises(ConfigError, match="overlapping patches"):
        ModelConfig.from_official(cfg)


def test_pretraining_issues_name_the_setting():
    issues = preset("patch", mask_prob=1.45).pretraining_issues()
    assert issues == ["model.mask_prob must be in (0, 1), got 1.45"]
    assert preset("frame", mask_type="retain_spans", mask_prob=1.45).pretraining_issues() == []
    assert preset("patch", mask_type="chunk_mask_batched").pretraining_issues() == []
    cfg = official_cfg(mask_type="retain_spans")
    cfg["model"].update(mask_length=5, mask_selection="poisson")
    issues = ModelConfig.from_official(cfg).pretraining_issues()
    assert len(issues) == 2 and "mask_length=5" in issues[0] and "mask_selection='poisson'" in issues[1]
    cfg = official_cfg()
    cfg["model"]["dec_conv_pos"] = True
    assert ModelConfig.from_official(cfg).decoder_issue() == "dec_conv_pos=True (decoder built differently)"
    cfg = official_cfg()
    del cfg["model"]["dec_sine_pos"]
    assert "dec_sine_pos=False" in ModelConfig.from_official(cfg).decoder_issue()


def test_train_config_refuses_what_it_cannot_train_with():
    with pytest.raises(ConfigError, match="cannot pretrain with this config: model.mask_type='spans'"):
        build_config(overrides={"preset": "tiny-patch", "model.mask_type": "spans"})
    with pytest.raises(ConfigError, match=r"model.mask_prob must be in \(0, 10\) for retain_spans"):
        build_config(overrides={"model.mask_type": "retain_spans", "model.mask_prob": "12"})
    cfg = build_config(overrides={"preset": "tiny-frame", "model.mask_type": "retain_spans",
                                  "model.mask_prob": "1.45"})
    assert (cfg.model.mask_type, cfg.model.mask_prob) == ("retain_spans", 1.45)
    with pytest.raises(ConfigError, match="unknown config key 'model.official'"):
        build_config(overrides={"model.official": "{}"})


def test_saved_train_config_rebuilds_identically():
    cfg = build_config(overrides={"preset": "tiny-patch", "model.mask_type": "chunk_mask_batched"})
    saved = cfg.to_dict()
    assert "official" not in saved["model"] and saved["init"] is None
    assert build_config(base=saved).to_dict() == saved
    assert isinstance(TrainConfig(model={"mask_type": "retain_spans", "mask_prob": 0.5}).model, ModelConfig)


# ---- pretraining from a checkpoint, and resuming: refused before any training, naming the setting


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    for i in range(4):
        write_audio(root / f"tone{i}.wav", tone(1.2, 200.0 * (i + 1), seed=i))
    return root


def official_checkpoint(path, name="tiny-patch", **task):
    """A random model saved with `official_cfg(name, **task)` as its cfg."""
    state = to_official_state(make_model(name, seed=3))
    state["cfg"] = official_cfg(name, **task)
    torch.save(state, path)
    return path


def pretrain(*args):
    fast = ["max_steps=1", "warmup_steps=1", "batch_size=2", "num_workers=0", "progress=false",
            "min_seconds=1.0", "device=cpu"]
    return CliRunner().invoke(main, ["pretrain", *map(str, args), *fast])


def test_pretraining_from_a_checkpoint_with_an_unknown_mask_fails_before_training(tmp_path, clips):
    ckpt = official_checkpoint(tmp_path / "odd.pt", mask_type="spans_v2")
    with pytest.warns(UserWarning, match="spans_v2"):
        assert load_model(ckpt).cfg.mask_type == "spans_v2"  # inference: fine
    result = pretrain("--data", clips, "-o", tmp_path / "run", "--init", ckpt)
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert f"cannot pretrain from {ckpt}: model.mask_type='spans_v2'" in result.output
    assert not (tmp_path / "run").exists()


def test_pretraining_starts_from_the_checkpoint_and_keeps_its_settings(tmp_path, clips):
    ckpt = official_checkpoint(tmp_path / "odd.pt", mask_type="spans_v2")
    result = pretrain("--data", clips, "-o", tmp_path / "run", "--init", ckpt,
                      "model.mask_type=chunk_mask_batched", "lr=1e-12")
    assert result.exit_code == 0, result.output
    start, final = read_checkpoint(ckpt), read_checkpoint(tmp_path / "run" / "final.pt")
    for key, value in start["model"].items():  # one update at lr 1e-12: the checkpoint's weights
        if not key.startswith("batch_norm."):  # (running fbank statistics move with the data)
            torch.testing.assert_close(final["model"][key], value, atol=1e-6, rtol=0)
    assert final["cfg"]["task"]["mask_type"] == "chunk_mask_batched"
    assert final["cfg"]["model"]["feature_grad_mult"] == 0.1 and final["cfg"]["common"]["seed"] == 1337
    with pytest.raises(ConfigError, match="keeps its architecture"):
        build_config(overrides={"init": str(ckpt), "model.encoder_layers": "3"})


def test_inference_only_checkpoints_cannot_start_pretraining(tmp_path):
    save_encoder_only(make_model("tiny-patch"), tmp_path / "encoder.pt")
    with pytest.raises(ConfigError, match="cannot pretrain from .*encoder.pt: it holds no decoder"):
        build_config(overrides={"init": str(tmp_path / "encoder.pt")})


def test_resume_with_an_unknown_mask_fails_before_training(tmp_path, clips):
    run = tmp_path / "run"
    run.mkdir()
    saved = build_config(overrides={"preset": "tiny-patch", "data": [str(clips)]}).to_dict()
    saved["model"]["mask_type"] = "spans_v2"
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    result = pretrain("-o", run, "--resume")
    assert result.exit_code != 0
    assert "cannot pretrain with this config: model.mask_type='spans_v2'" in result.output
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]
