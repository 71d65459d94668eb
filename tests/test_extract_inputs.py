"""Extraction inputs beyond tidy folders: every common container in one folder, what a folder
scan left out, and WebDataset shards (outputs per shard and key, resume per sample, a shard cut
in the middle, a member that is not audio, patterns that match nothing)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import webdataset  # a core dependency: its absence is a failure, never a skip
from click.testing import CliRunner
from helpers import chirp, noise, tone, write_audio
from media import encode

from maeast_embed.cli import main
from maeast_embed.extract import read_manifest


def extract(*args):
    return CliRunner().invoke(main, ["extract", *map(str, args)])


def outputs(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.npz"))


def test_a_folder_of_containers_is_embedded_and_the_rest_is_counted(tmp_path, tiny_patch_ckpt):
    src = tmp_path / "in"
    write_audio(src / "a.wav", tone(1.5))
    encode(src / "b.m4a", chirp(2.0, sr=44100), 44100, "aac")
    encode(src / "c.webm", noise(1.2, sr=48000), 48000, "libopus", container="webm")
    encode(src / "v" / "d.mp4", tone(1.0, sr=44100), 44100, "aac", video=True)
    (src / "notes.txt").write_text("not audio")
    (src / "meta.json").write_text("{}")
    (src / "more.txt").write_text("not audio")
    out = tmp_path / "out"
    result = extract(src, "-o", out, "--model", tiny_patch_ckpt)
    assert result.exit_code == 0, result.output
    assert outputs(out) == ["a.wav.npz", "b.m4a.npz", "c.webm.npz", "v/d.mp4.npz"]
    assert "ignored 3 files: .txt 2, .json 1" in result.output
    headers, files = read_manifest(out / "manifest.jsonl")
    assert headers[-1]["ignored"] == "ignored 3 files: .txt 2, .json 1"
    durations = {k.rsplit("/", 1)[-1]: v["duration"] for k, v in files.items()}
    assert durations["b.m4a"] == pytest.approx(2.0, abs=0.03)
    assert durations["d.mp4"] == pytest.approx(1.0, abs=0.03)


def flac_bytes(data, sr=16000):
    buffer = io.BytesIO()
    sf.write(buffer, data, sr, format="FLAC")
    return buffer.getvalue()


def write_shards(root, count=2, per_shard=3):
    root.mkdir(parents=True, exist_ok=True)
    with webdataset.ShardWriter(str(root / "train-%06d.tar"), maxcount=per_shard) as sink:
        for i in range(count * per_shard):
            sink.write({"__key__": f"clip{i:03d}", "flac": flac_bytes(tone(0.6 + 0.2 * i, freq=200 + 50 * i)),
                        "cls": str(i % 2).encode()})
    return sorted(root.glob("train-*.tar"))


def test_shards_by_brace_range_outputs_per_shard_and_key_and_resume(tmp_path, tiny_patch_ckpt):
    shards = write_shards(tmp_path / "shards")
    spec = str(tmp_path / "shards" / "train-{000000..000001}.tar")
    out = tmp_path / "out"
    result = extract(spec, "-o", out, "--model", tiny_patch_ckpt)
    assert result.exit_code == 0, result.output
    assert outputs(out) == [f"train-{i // 3:06d}/clip{i:03d}.npz" for i in range(6)]
    _, files = read_manifest(out / "manifest.jsonl")
    record = files[f"{shards[1]}:clip004"]
    assert record["shard"] == str(shards[1]) and record["key"] == "clip004" and record["status"] == "ok"
    assert record["duration"] == pytest.approx(1.4, abs=1e-3)
    # the same audio as a plain file gives the same embedding
    write_audio(tmp_path / "clip004.flac", tone(1.4, freq=400))
    plain = tmp_path / "plain"
    assert extract(tmp_path / "clip004.flac", "-o", plain, "--model", tiny_patch_ckpt, "-q").exit_code == 0
    with np.load(out / "train-000001" / "clip004.npz") as a, np.load(plain / "clip004.flac.npz") as b:
        np.testing.assert_allclose(a["embedding"], b["embedding"], atol=1e-4)
    # resume per sample: remove one output, rerun with a glob naming the same shards
    (out / "train-000000" / "clip001.npz").unlink()
    again = extract(tmp_path / "shards" / "train-*.tar", "-o", out, "--model", tiny_patch_ckpt)
    assert again.exit_code == 0 and "1 embedded, 5 skipped" in again.output


def test_a_cut_shard_and_a_member_that_is_not_audio(tmp_path, tiny_patch_ckpt):
    root = tmp_path / "shards"
    root.mkdir()
    with webdataset.TarWriter(str(root / "bad.tar")) as sink:
        sink.write({"__key__": "good", "flac": flac_bytes(tone(1.0))})
        sink.write({"__key__": "fake", "wav": b"this is not a RIFF file at all" * 40})
        sink.write({"__key__": "labels-only", "json": b'{"label": 1}'})
        sink.write({"__key__": "late", "flac": flac_bytes(noise(3.0))})
        sink.write({"__key__": "after", "flac": flac_bytes(chirp(1.0))})
    data = (root / "bad.tar").read_bytes()
    cut = data.index(b"after.flac") - 100  # inside the data of the member before it
    (root / "bad.tar").write_bytes(data[:cut])
    out = tmp_path / "out"
    result = extract(root / "bad.tar", "-o", out, "--model", tiny_patch_ckpt)
    assert result.exit_code == 1
    assert outputs(out) == ["bad/good.npz"]
    _, files = read_manifest(out / "manifest.jsonl")
    status = {r.get("key"): (r["status"], r["error"]) for r in files.values()}
    assert status["good"] == ("ok", None)
    assert status["fake"][0] == "failed" and status["fake"][1]
    assert status["labels-only"][0] == "failed" and "no audio member" in status["labels-only"][1]
    assert status["late"][0] == "failed" and "cut short" in status["late"][1]


@pytest.mark.parametrize("spec", ["none-*.tar", "train-{000000..000003}.tar"])
def test_a_pattern_that_matches_nothing_is_a_failure(spec, tmp_path, tiny_patch_ckpt):
    result = extract(tmp_path / spec, "-o", tmp_path / "out", "--model", tiny_patch_ckpt)
    assert result.exit_code == 1
    reasons = ("no file matches", "do not exist", "not found")
    assert "FAILED" in result.output and any(reason in result.output for reason in reasons)
