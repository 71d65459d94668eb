"""Pretraining input pipeline: segments of long recordings, windowed reads equal to cropping the
whole decoded file, WebDataset shards as --data, files whose metadata lies, the data-wait metric."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import webdataset as wds
from helpers import chirp, noise, tone, write_audio
from media import encode

from maeast_embed.audio import load_audio
from maeast_embed.pretrain import build_config, train
from maeast_embed.pretrain.data import (
    ClipDataset,
    Window,
    epoch_loader,
    load_dataset_index,
    plan_epoch,
    plan_windows,
    scan_sources,
    segments,
)

SR = 16000
FAST = dict(
    preset="tiny-patch", batch_size=2, max_steps=3, warmup_steps=1, num_workers=0, device="cpu",
    save_every=100, log_every=1, progress=False, min_seconds=1.0,
)


def _signal(seconds: float, rate: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    sweep = np.sin(2 * np.pi * (200 + 50 * seed) * t * (1 + t / seconds))
    left = 0.3 * sweep + 0.02 * rng.standard_normal(t.size)
    return np.stack([left, 0.5 * left[::-1]], 1).astype(np.float32)


@pytest.fixture(scope="module")
def long_dir(tmp_path_factory) -> Path:
    """Three 20 s 44.1 kHz recordings: WAV, FLAC and AAC (without noise substitution, whose
    random noise bands differ after a seek), plus a note that is not audio."""
    root = tmp_path_factory.mktemp("long")
    write_audio(root / "a.wav", _signal(20.0, 44100, 0), sr=44100, subtype="PCM_16")
    write_audio(root / "b.flac", _signal(20.0, 44100, 1), sr=44100, subtype="PCM_16")
    encode(root / "c.m4a", _signal(20.0, 44100, 2), 44100, "aac", options={"aac_pns": "0"})
    (root / "notes.txt").write_text("not audio")
    return root


def test_segments_cover_long_recordings():
    hour = 3600 * SR
    pieces = segments(hour, 6 * SR)
    assert len(pieces) == 600 and all(n == 6 * SR for _, n in pieces)
    pieces = segments(hour + 5 * SR + 7, 6 * SR)
    assert len(pieces) == 600 and all(6 * SR <= n < 12 * SR for _, n in pieces)
    assert pieces[0][0] == 0 and sum(n for _, n in pieces) == hour + 5 * SR + 7
    assert all(a + n == b for (a, n), (b, _) in zip(pieces[:-1], pieces[1:], strict=True))
    assert segments(11 * SR, 6 * SR) == [(0, 11 * SR)] and segments(hour, None) == [(0, hour)]


def test_index_cuts_files_into_segments_and_counts_what_it_ignores(long_dir):
    report = scan_sources([str(long_dir)], SR, 6 * SR)
    assert report.ignored == [f"{long_dir}: ignored 1 file: .txt 1"] and not report.unreadable
    names = [Path(c.path).name for c in report.clips]
    assert names == ["a.wav"] * 3 + ["b.flac"] * 3 + ["c.m4a"] * 3
    wav = [c for c in report.clips if c.path.endswith("a.wav")]
    assert [c.offset for c in wav] == [0, 106666, 213333] and sum(c.num_samples for c in wav) == 20 * SR
    assert len(scan_sources([str(long_dir)], SR).clips) == 3  # no max_seconds: whole files


def test_windows_equal_crops_of_the_whole_decoded_file(long_dir):
    clips = load_dataset_index([str(long_dir)], SR, 6 * SR)
    dataset = ClipDataset(clips, SR)
    whole = {path: load_audio(path) for path in {c.path for c in clips}}
    plan = plan_epoch(np.array([c.num_samples for c in clips]), 3, seed=5, epoch=0)
    for batch in plan:
        windows = plan_windows(batch, clips, seed=5, epoch=0, max_samples=6 * SR)
        assert windows == plan_windows(batch, clips, seed=5, epoch=0, max_samples=6 * SR)
        for window in windows:
            clip = clips[window.clip]
            assert window.length == 6 * SR
            assert clip.offset <= window.start <= clip.offset + clip.num_samples - window.length
            _, _, wave = dataset[window]
            expected = whole[clip.path][window.start : window.start + window.length].numpy()
            assert wave.shape == expected.shape
            assert float(np.abs(wave - expected).max()) < 1e-4, clip.path


def test_loader_batches_are_the_planned_crops_and_masks(long_dir):
    cfg = build_config({"preset": "tiny-patch"})
    clips = load_dataset_index([str(long_dir)], SR, 6 * SR)
    plan = plan_epoch(np.array([c.num_samples for c in clips]), 3, seed=2, epoch=1)
    args = dict(seed=2, epoch=1, min_samples=SR, max_samples=6 * SR, num_workers=0)
    batches = list(epoch_loader(clips, plan, cfg.model, **args))
    again = list(epoch_loader(clips, plan, cfg.model, **{**args, "num_workers": 2}))
    assert len(batches) == 3
    for batch, other, planned in zip(batches, again, plan, strict=True):
        assert batch.wave.shape == (3, 6 * SR) and batch.skipped == []
        assert torch.equal(batch.wave, other.wave) and torch.equal(batch.masked, other.masked)
        for row, window in zip(batch.wave, plan_windows(planned, clips, 2, 1, 6 * SR), strict=True):
            full = load_audio(clips[window.clip].path)
            assert float((row - full[window.start : window.start + window.length]).abs().max()) < 1e-4


def _flac(wave: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, SR, format="FLAC")
    return buffer.getvalue()


def test_shards_as_training_data(tmp_path, monkeypatch):
    monkeypatch.setenv("MAEAST_CACHE", str(tmp_path / "cache"))
    with wds.ShardWriter(str(tmp_path / "train-%03d.tar"), maxcount=4, verbose=0) as sink:
        for i in range(8):
            wave = (tone if i % 2 else noise)(1.2 + 0.3 * i, seed=i) if i != 5 else chirp(14.0)
            sink.write({"__key__": f"s{i}", "flac": _flac(wave), "cls": i})
        sink.write({"__key__": "junk", "flac": b"not audio" * 100})
    spec = str(tmp_path / "train-{000..002}.tar")
    report = scan_sources([spec], SR, 6 * SR)
    assert report.unreadable == [f"{tmp_path / 'train-002.tar'}:junk"]
    keys = [c.path.rsplit(":", 1)[1] for c in report.clips]
    assert keys == ["s0", "s1", "s2", "s3", "s4", "s5", "s5", "s6", "s7"]
    long = [c for c in report.clips if c.path.endswith(":s5")]
    assert [(c.offset, c.num_samples) for c in long] == [(0, 7 * SR), (7 * SR, 7 * SR)]
    _, _, wave = ClipDataset(report.clips, SR)[Window(0, 6, 7 * SR + 100, 3 * SR)]
    assert np.allclose(wave, chirp(14.0)[7 * SR + 100 : 10 * SR + 100], atol=1e-4)
    final = train(build_config({**FAST, "data": [spec], "max_seconds": 6.0}), tmp_path / "run")
    assert final.exists()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in records)
    assert records[-1]["skipped"] == 0  # the junk sample was left out when the shards were scanned


def test_files_whose_metadata_lies_are_trained_on_what_decodes(tmp_path):
    """A WebM claiming 5x its length: the index plans crops past the end; those come back empty
    and are skipped, the rest trains."""
    for i in range(3):
        write_audio(tmp_path / f"ok{i}.wav", tone(3.0, 200.0 * (i + 1), seed=i))
    path = encode(tmp_path / "clip.webm", _signal(3.0, 48000, 3), 48000, "libopus")
    data = bytearray(path.read_bytes())
    at = data.find(b"\x44\x89\x88")  # Matroska Segment Duration (8-byte float, ms)
    data[at + 3 : at + 11] = struct.pack(">d", struct.unpack(">d", data[at + 3 : at + 11])[0] * 5)
    path.write_bytes(bytes(data))
    clips = load_dataset_index([str(tmp_path)], SR, 2 * SR)
    lying = [c for c in clips if c.path.endswith("clip.webm")]
    assert len(lying) == 7  # 15 s claimed, in 2-s segments
    dataset = ClipDataset(clips, SR)
    index = clips.index(lying[-1])
    assert dataset[Window(0, index, lying[-1].offset, 2 * SR)][2] is None  # nothing there
    cfg = build_config({**FAST, "data": [str(tmp_path)], "max_seconds": 2.0, "max_steps": 4, "batch_size": 1})
    train(cfg, tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all(np.isfinite(r["loss"]) for r in records)
