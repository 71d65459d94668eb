"""Pretraining: config, data pipeline, loop, checkpoints, resume after a kill, CLI errors."""

from __future__ import annotations

import importlib.util
import json
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import chirp, noise, tone, write_audio

from maeast_embed.checkpoint import load_model, read_checkpoint
from maeast_embed.cli import main
from maeast_embed.errors import ConfigError
from maeast_embed.frontend import num_frames
from maeast_embed.pretrain import TrainConfig, TrainingError, build_config, train
from maeast_embed.pretrain.data import Collator, DataError, load_dataset_index, plan_epoch, scan_sources

FAST = dict(
    preset="tiny-patch", batch_size=3, max_steps=4, warmup_steps=2, num_workers=0, device="cpu",
    save_every=2, log_every=1, progress=False, min_seconds=1.0,
)


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("audio")
    for i in range(7):
        write_audio(root / "a" / f"tone{i}.wav", tone(1.0 + 0.15 * i, 150.0 * (i + 1), seed=i))
    for i in range(4):
        write_audio(root / "b" / f"noise{i}.flac", noise(1.2 + 0.2 * i, seed=i))
    write_audio(root / "b" / "chirp.wav", chirp(1.5))
    stereo = np.stack([tone(1.3, sr=44100), noise(1.3, sr=44100)], 1)
    write_audio(root / "b" / "stereo44k.wav", stereo, sr=44100)
    (root / "b" / "corrupt.wav").write_bytes(b"RIFF\x00\x00not audio at all")
    write_audio(root / "short.wav", tone(0.3))
    return root


def config(audio_dir: Path, **overrides) -> TrainConfig:
    return build_config({**FAST, "data": [str(audio_dir)]}, overrides=overrides)


def _params(model_or_state) -> dict[str, torch.Tensor]:
    state = model_or_state if isinstance(model_or_state, dict) else model_or_state.state_dict()
    return {k: v.detach().clone() for k, v in state.items()}


# ---------------------------------------------------------------- config
def test_config_layers_and_types(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("preset: tiny-frame\nlr: 3e-4\nmodel:\n  encoder_layers: 3\nbetas: [0.9, 0.95]\n")
    cfg = build_config({"max_steps": 5}, file, {"model.dropout": "0.2", "lr": "2e-4", "compile": "false"})
    assert cfg.model.kernel_time == 2 and cfg.model.encoder_layers == 3 and cfg.model.dropout == 0.2
    assert cfg.lr == 2e-4 and cfg.max_steps == 5 and cfg.betas == (0.9, 0.95) and cfg.compile is False
    json_file = tmp_path / "c.json"
    json_file.write_text(json.dumps(cfg.to_dict()))
    again = build_config(file=json_file)
    assert again == cfg


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"warmup_step": "1"}, "unknown config key 'warmup_step'.*did you mean 'warmup_steps'"),
        ({"model.kernel_chan": "24"}, "kernel_chan=24 must divide num_mel_bins=128"),
        ({"model.layers": "2"}, "unknown config key 'model.layers'"),
        ({"batch_size": "0"}, "batch_size must be >= 1"),
        ({"batch_size": "2.5"}, "batch_size=2.5 is not a valid int"),
        ({"mode": "bert"}, "mode must be one of"),
        ({"precision": "int8"}, "precision must be one of"),
        ({"min_seconds": "0.05"}, "fewer than two token steps"),
        ({"max_seconds": "1", "min_seconds": "2"}, "below min_seconds"),
    ],
)
def test_config_errors(overrides, match):
    with pytest.raises(ConfigError, match=match):
        build_config({"preset": "tiny-patch"}, overrides=overrides)


def test_cli_bad_config_is_a_clean_error(tmp_path, audio_dir):
    runner = CliRunner()
    result = runner.invoke(main, ["pretrain", "--data", str(audio_dir), "-o", str(tmp_path / "r"),
                                  "--preset", "tiny-patch", "model.kernel_chan=24"])
    assert result.exit_code == 1 and "must divide num_mel_bins" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "r").exists()
    result = runner.invoke(main, ["pretrain", "--data", str(tmp_path / "nope"), "-o", str(tmp_path / "r")])
    assert result.exit_code == 1 and "data source not found" in result.output


# ---------------------------------------------------------------- data
def test_sources_folder_list_and_manifest(tmp_path, audio_dir):
    report = scan_sources([str(audio_dir)], 16000)
    names = sorted(Path(c.path).name for c in report.clips)
    assert len(names) == 13 and "short.wav" not in names and report.too_short == 1
    assert [Path(p).name for p in report.unreadable] == ["corrupt.wav"]
    stereo = next(c for c in report.clips if "stereo44k" in c.path)
    assert stereo.num_samples == round(1.3 * 16000)  # length at 16 kHz
    listing = tmp_path / "files.txt"
    listing.write_text(f"{audio_dir}/a/tone0.wav\n# comment\n\n{audio_dir}/b/chirp.wav\n")
    manifest = tmp_path / "train.tsv"
    manifest.write_text(f"{audio_dir}\na/tone1.wav\t17600\nb/missing.wav\t40000\nshort.wav\t4800\n")
    clips = load_dataset_index([str(listing), str(manifest)], 16000)
    assert [Path(c.path).name for c in clips] == ["tone0.wav", "chirp.wav", "tone1.wav", "missing.wav"]
    assert clips[2].num_samples == 17600  # manifest lengths are trusted, files not opened


def test_empty_and_too_short_datasets(tmp_path, audio_dir):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no readable audio"):
        load_dataset_index([str(tmp_path / "empty")], 16000)
    with pytest.raises(DataError, match="shorter than the minimum of 32000 samples"):
        load_dataset_index([str(audio_dir)], 32000)
    bad = tmp_path / "bad.tsv"
    bad.write_text("/root\nfile.wav\tnot-a-number\n")
    with pytest.raises(DataError, match="bad.tsv:2"):
        load_dataset_index([str(bad)], 16000)
    with pytest.raises(DataError, match="no data given"):
        load_dataset_index([], 16000)


def test_plan_groups_by_length_and_splits_ranks():
    lengths = np.random.default_rng(0).integers(32000, 480000, size=203)
    plan = plan_epoch(lengths, 8, seed=1, epoch=0)
    assert sum(len(b) for b in plan) == 203
    spread = np.mean([np.ptp(lengths[[c for _, c in b]]) for b in plan])
    random_spread = np.mean([np.ptp(lengths[i : i + 8]) for i in range(0, 200, 8)])
    assert spread < random_spread / 10  # clips of similar length share a batch
    assert plan == plan_epoch(lengths, 8, seed=1, epoch=0)
    assert plan != plan_epoch(lengths, 8, seed=1, epoch=1)
    ranks = [plan_epoch(lengths, 8, 1, 0, rank, 2) for rank in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 13  # 26 batches (the last holds 3 clips)
    seen = [c for r in ranks for b in r for _, c in b]
    assert len(seen) == len(set(seen))


def test_collator_crops_to_shortest_and_masks(audio_dir):
    cfg = build_config({"preset": "tiny-patch"})
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(n).astype(np.float32) for n in (20000, 26000, 33000)]
    clips = load_dataset_index([str(audio_dir)], 16000)
    collate = Collator(cfg.model, clips, seed=3, epoch=0)
    items = [(5, 0, waves[0]), (5, 1, waves[1]), (5, 2, None), (5, 3, waves[2])]
    batch = collate(items)
    assert batch.wave.shape == (3, 20000) and batch.skipped == [clips[2].path]
    for row, full in zip(batch.wave.numpy(), waves, strict=True):
        start = int(np.flatnonzero(full == row[0])[0])
        assert np.array_equal(full[start : start + 20000], row)
    length = (num_frames(20000) // 16) * 8
    assert batch.kept.shape[1] + batch.masked.shape[1] == length
    assert batch.masked.shape[1] == length - max(1, int(0.25 * length))
    again = collate(items)
    assert torch.equal(again.wave, batch.wave) and torch.equal(again.masked, batch.masked)
    assert collate([(0, 2, None)]).wave is None


# ---------------------------------------------------------------- loop
def test_train_writes_official_checkpoint_metrics_and_prunes(tmp_path, audio_dir):
    cfg = config(audio_dir, max_steps=6, keep_last=2)
    final = train(cfg, tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 7))
    assert all(np.isfinite(r["loss"]) for r in records)  # data_wait, steps_per_s: test_data_wait_*
    assert records[0]["lr"] == pytest.approx(0.5e-4) and records[-1]["lr"] == pytest.approx(0.25e-4)
    states = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert states == ["state_00000004.pt", "state_00000006.pt"]
    model = load_model(final)
    assert model.cfg == cfg.model
    state = read_checkpoint(final)
    assert set(state) >= {"cfg", "model"} and state["cfg"]["task"]["mask_type"] == "chunk_mask"
    from maeast_embed.model import MAEAST

    torch.manual_seed(cfg.seed)  # the run's initial weights
    init = MAEAST(cfg.model)
    assert not torch.equal(init.encoder.layers[0].fc1.weight, model.encoder.layers[0].fc1.weight)
    assert model.batch_norm.num_batches_tracked.item() == 6  # BatchNorm stats were trained too
    # a second fresh run into the same folder refuses to mix checkpoints
    with pytest.raises(TrainingError, match="--resume"):
        train(cfg, tmp_path / "run")


@pytest.mark.parametrize("sleep", [0.0, 0.25])
def test_data_wait_is_the_time_spent_waiting_for_batches(sleep, tmp_path, monkeypatch):
    """A loader that sleeps a known time before each batch: every logged step (log_every=1, one
    batch per step) waits that long, and takes at least that long; a loader whose batches are
    ready waits next to nothing."""
    import time

    from maeast_embed.pretrain import loop

    for i in range(6):
        write_audio(tmp_path / "audio" / f"t{i}.wav", tone(1.2, 150.0 * (i + 1), seed=i))
    real = loop.epoch_loader

    def loader(*args, **kwargs):
        batches = list(real(*args, **kwargs))  # decoded before the steps start waiting on them

        def paced():
            for batch in batches:
                time.sleep(sleep)
                yield batch

        return paced()

    monkeypatch.setattr(loop, "epoch_loader", loader)
    train(build_config({**FAST, "data": [str(tmp_path / "audio")], "max_steps": 3}), tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    for r in records:
        waited = r["data_wait"] / r["steps_per_s"]  # seconds waited per step
        assert sleep <= waited < sleep + 0.05, r
        assert r["steps_per_s"] <= 1 / max(sleep, 1e-3), r
    if not sleep:  # (with a sleep, the share of the step depends on how busy the CPU is)
        assert max(r["data_wait"] for r in records) < 0.1


def test_s3prl_loads_the_final_checkpoint(tmp_path, audio_dir):
    expert = pytest.importorskip("s3prl.upstream.mae_ast.expert")
    final = train(config(audio_dir, max_steps=2, preset="tiny-frame"), tmp_path / "run")
    upstream = expert.UpstreamExpert(str(final)).eval()
    wave = torch.from_numpy(tone(1.0))
    with torch.no_grad():
        theirs = upstream([wave])["hidden_states"][-1]
        model = load_model(final)
        from maeast_embed.frontend import kaldi_fbank

        tokens, _ = model.tokenize(kaldi_fbank(wave[None])[0])
        ours = model(tokens)[-1]
    assert theirs.shape == ours.shape
    assert torch.allclose(theirs, ours, atol=1e-4)


def test_ssast_mode_accumulation_and_bad_batches(tmp_path, audio_dir):
    manifest = tmp_path / "m.tsv"
    lines = [str(audio_dir)] + [f"a/tone{i}.wav\t{16000 + 2400 * i}" for i in range(6)]
    lines += ["gone1.wav\t20000", "gone2.wav\t20000", "gone3.wav\t20000"]
    manifest.write_text("\n".join(lines) + "\n")
    cfg = build_config({**FAST, "data": [str(manifest)]}, overrides={"mode": "ssast", "accum_steps": 2,
                                                                     "max_steps": 3})
    final = train(cfg, tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 3 and records[-1]["skipped"] >= 3  # missing files counted, never a crash
    assert load_model(final).cfg.encoder_layers == 2


def test_out_of_memory_names_the_batch_size(tmp_path, audio_dir, monkeypatch):
    from maeast_embed.pretrain import loop

    def boom(self, wave, kept, masked):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(loop.PretrainStep, "forward", boom)
    with pytest.raises(TrainingError, match="out of memory on cpu with batch_size=3"):
        train(config(audio_dir), tmp_path / "run")


def test_activation_checkpointing_keeps_gradients_and_inference():
    from maeast_embed.losses import pretrain_loss
    from maeast_embed.masking import random_mask
    from maeast_embed.model import MAEAST

    cfg = build_config({"preset": "tiny-patch"}).model
    grads, hiddens = [], []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = MAEAST(cfg).train()
        model.encoder.checkpoint_activations = model.decoder.checkpoint_activations = checkpointing
        tokens = torch.randn(2, 80, 256)
        kept, masked = random_mask(2, 80, generator=torch.Generator().manual_seed(0))
        out = model.forward_pretrain(tokens, kept, masked)
        pretrain_loss(out.reconstruction, out.classification, out.target).total.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
        model.eval()
        with torch.no_grad():
            hidden = model(tokens)[-1]
        hiddens.append(hidden)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
    assert torch.equal(hiddens[0], hiddens[1])


KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, torch
    torch.set_num_threads(2)
    from maeast_embed.pretrain import build_config, train
    cfg = build_config(file=sys.argv[1])
    def die(step, model):
        if step == 5:
            os.kill(os.getpid(), signal.SIGKILL)
    train(cfg, sys.argv[2], on_step=die)
    """
)


def tensorboard_scalars(folder: Path) -> list[tuple[int, str | None]]:
    """(step, tag) of every event in a run's TensorBoard files, in order, file by file (the tag None:
    a session start, whose step is the purge step of a resumed run)."""
    from tensorboardX.proto.event_pb2 import Event

    found = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at < len(data):  # TFRecord: length, its CRC, the record, its CRC
            (length,) = struct.unpack("<Q", data[at:at + 8])
            event = Event.FromString(data[at + 12:at + 12 + length])
            at += 16 + length
            if event.HasField("summary"):
                found += [(event.step, v.tag) for v in event.summary.value if v.tag == "train/loss"]
            elif event.HasField("session_log"):
                found.append((event.step, None))
    return found


def test_resume_after_kill_matches_uninterrupted_run(tmp_path, audio_dir):
    tensorboard = importlib.util.find_spec("tensorboardX") is not None  # the s3prl extra brings it
    cfg = config(audio_dir, max_steps=7, save_every=2, num_workers=2, tensorboard=tensorboard)
    reference = train(cfg, tmp_path / "straight")
    cfg_file = tmp_path / "cfg.yaml"
    cfg.save(cfg_file)
    killed = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(cfg_file), str(tmp_path / "killed")],
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    states = sorted(p.name for p in (tmp_path / "killed" / "checkpoints").iterdir())
    assert states[-1] == "state_00000004.pt" and not (tmp_path / "killed" / "final.pt").exists()
    lines = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["step"] == 5  # logged past the checkpoint before dying
    result = CliRunner().invoke(main, ["pretrain", "--resume", "-o", str(tmp_path / "killed")])
    assert result.exit_code == 0, result.output
    resumed = read_checkpoint(tmp_path / "killed" / "final.pt")["model"]
    straight = read_checkpoint(reference)["model"]
    for key, value in straight.items():
        assert torch.equal(value, resumed[key]), key
    metrics = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in metrics]
    assert steps == list(range(1, 8))
    if tensorboard:  # the killed run's curves up to its checkpoint (flushed with it); the resumed
        # run's start says to drop any event from step 5 on, then it logs 5 to 7
        events = tensorboard_scalars(tmp_path / "killed" / "tensorboard")
        assert events == [*((k, "train/loss") for k in range(1, 5)), (5, None),
                          *((k, "train/loss") for k in range(5, 8))]


def test_all_files_failing_at_read_time_is_an_error(tmp_path):
    manifest = tmp_path / "m.tsv"
    manifest.write_text(f"{tmp_path}\n" + "".join(f"gone{i}.wav\t40000\n" for i in range(4)))
    cfg = build_config({**FAST, "data": [str(manifest)]})
    with pytest.raises(TrainingError, match="no clip of the data could be decoded"):
        train(cfg, tmp_path / "run")


@pytest.mark.parametrize("name", ["patch", "frame"])
def test_shipped_recipe_files_are_the_official_presets(name):
    from maeast_embed.config import preset

    cfg = build_config(file=Path(__file__).parent.parent / "configs" / "pretrain" / f"{name}.yaml")
    assert cfg.model == preset(name) and cfg == build_config({"preset": name})
