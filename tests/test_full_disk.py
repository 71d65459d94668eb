"""A full disk anywhere (extract: .npz, manifest, spool; probe: cache, report; pretrain:
checkpoint, metrics) is a clear error naming the path, keeps what was committed, and a rerun
after freeing space finishes. The disk is a small tmpfs where one can be mounted, and an
injected one (ENOSPC once a byte budget is spent) always (conftest: small_disk)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import SmallDisk, noise, tone, write_audio

from maeast_embed.checkpoint import read_checkpoint
from maeast_embed.cli import main
from maeast_embed.errors import OutputError
from maeast_embed.extract import ExtractOptions, read_manifest, run_extract
from maeast_embed.features import Embedder


def load(path):
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def room(disk, tmpfs: int, injected: int) -> int:
    """Bytes to leave free: a tmpfs counts whole pages, the injected disk counts bytes."""
    return tmpfs if isinstance(disk, SmallDisk) else injected


def _npz_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.npz"))


def _no_leftovers(folder: Path) -> None:
    assert not [p.name for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name.startswith("tmp")]


def _clean_error(result, path: Path, verb: str = "write") -> None:
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert f"Error: cannot {verb} {path}: no space left on the device" in result.output, result.output


# ---------------------------------------------------------------- extract
# room left: what fits before the write that fails
FULL_AT = {"npz": (80 * 1024, 70_000),  # the lock file, the manifest, two .npz
           "manifest": (4096, 300)}  # the lock file only


@pytest.mark.parametrize("where", ["npz", "manifest"])
def test_extract_full_disk(where, small_disk, tmp_path, tiny_patch_ckpt):
    src = tmp_path / "in"
    for i in range(5):
        write_audio(src / f"f{i}.wav", noise(2.0, seed=i))
    out = small_disk.path / "out"
    args = ["extract", str(src), "-o", str(out), "--model", str(tiny_patch_ckpt), "--dtype", "float32",
            "--batch-size", "1"]
    small_disk.fill(room(small_disk, *FULL_AT[where]))
    result = CliRunner().invoke(main, args)
    if where == "npz":
        _clean_error(result, out / "f2.wav.npz")
    else:
        _clean_error(result, out / "manifest.jsonl", "append to")
    done = ["f0.wav.npz", "f1.wav.npz"] if where == "npz" else []
    assert _npz_names(out) == done  # what was committed is whole
    for name in done:
        assert load(out / name)["embedding"].shape == (12, 512)
    _no_leftovers(out)
    _, files = read_manifest(out / "manifest.jsonl")
    assert sorted(Path(r["output"]).name for r in files.values() if r["status"] == "ok") == done

    small_disk.free()
    rerun = CliRunner().invoke(main, args)
    assert rerun.exit_code == 0, rerun.output
    assert f"{5 - len(done)} embedded, {len(done)} skipped" in rerun.stderr
    assert _npz_names(out) == [f"f{i}.wav.npz" for i in range(5)]
    _, files = read_manifest(out / "manifest.jsonl")
    assert {r["status"] for r in files.values()} <= {"ok", "skipped"} and len(files) == 5
    _no_leftovers(out)


def test_extract_full_disk_while_spooling_a_long_file(one_small_disk, tmp_path, tiny_patch_ckpt):
    """A long file's frame output is spooled to the output folder before its .npz is written."""
    disk = one_small_disk
    write_audio(tmp_path / "in" / "a_short.wav", tone(1.0))
    write_audio(tmp_path / "in" / "long.wav", noise(20.0, seed=4))  # 124 steps x 512 floats spooled
    out = disk.path / "out"
    embedder = Embedder(tiny_patch_ckpt, dtype="float32")
    options = ExtractOptions(stream_seconds=5.0, block_seconds=2.0)
    disk.fill(120 * 1024)
    spool = f"cannot write the spool of a long file .* in {out}: no space left"
    with pytest.raises(OutputError, match=spool):
        run_extract([tmp_path / "in"], out, embedder, options)
    assert _npz_names(out) == ["a_short.wav.npz"]
    _no_leftovers(out)
    disk.free()
    summary = run_extract([tmp_path / "in"], out, embedder, options)
    assert summary.ok and (summary.done, summary.skipped) == (1, 1)
    assert load(out / "long.wav.npz")["embedding"].shape == (124, 512)
    _no_leftovers(out)


# ---------------------------------------------------------------- probe
@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from probes.synthetic import write_dataset

    root = tmp_path_factory.mktemp("ds")
    return write_dataset(root, "esc50", num_classes=3, per_class=5, seconds=1.0, seed=1)


@pytest.mark.parametrize("where", ["cache", "report"])
def test_probe_full_disk(where, one_small_disk, dataset, tmp_path, tiny_patch_ckpt):
    disk = one_small_disk
    cache = (disk.path if where == "cache" else tmp_path) / "cache"
    out = disk.path / "report"
    args = ["probe", str(dataset), "-m", str(tiny_patch_ckpt), "-o", str(out), "--cache-dir", str(cache),
            "--l2", "0.1", "--device", "cpu", "--dtype", "float32", "-q"]
    disk.fill(0)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    failed = cache if where == "cache" else out
    assert f"Error: cannot write {failed}/" in result.output
    assert "no space left on the device" in result.output
    assert not out.exists() or not list(out.iterdir())
    kept = sorted(p.name for p in cache.glob("*.npz"))
    assert len(kept) == (0 if where == "cache" else 1)  # embeddings computed before the report
    disk.free()
    rerun = CliRunner().invoke(main, args)
    assert rerun.exit_code == 0, rerun.output
    report = json.loads((out / "report.json").read_text())
    assert report["models"][0]["cache"]["hit"] is (where == "report")  # the kept cache is used
    _no_leftovers(disk.path)


# ---------------------------------------------------------------- pretrain
@pytest.mark.parametrize("where", ["checkpoint", "metrics"])
def test_pretrain_full_disk_then_resume(where, one_small_disk, tmp_path):
    disk = one_small_disk
    for i in range(6):
        write_audio(tmp_path / "audio" / f"t{i}.wav", tone(1.0 + 0.15 * i, 150.0 * (i + 1), seed=i))
    run = disk.path / "run"
    args = ["pretrain", "--data", str(tmp_path / "audio"), "-o", str(run), "--preset", "tiny-patch",
            "batch_size=3", "max_steps=4", "warmup_steps=2", "num_workers=0", "device=cpu", "save_every=2",
            "log_every=1", "progress=false", "min_seconds=1.0"]
    # a training state is ~1.9 MB: the first fits, the second does not; or only config.yaml fits
    disk.fill(room(disk, 3 << 20, 3_000_000) if where == "checkpoint" else room(disk, 4096, 1000))
    result = CliRunner().invoke(main, args)
    if where == "checkpoint":
        _clean_error(result, run / "checkpoints" / "state_00000004.pt")
        lines = (run / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4]
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["state_00000002.pt"]
        assert read_checkpoint(run / "checkpoints" / "state_00000002.pt")["step"] == 2  # whole
    else:
        _clean_error(result, run / "metrics.jsonl", "append to")
        assert (run / "config.yaml").is_file() and not (run / "checkpoints").exists()
    assert not (run / "final.pt").exists()
    _no_leftovers(run)

    disk.free()
    again = args if where == "metrics" else ["pretrain", "--resume", "-o", str(run)]  # no state: fresh
    resumed = CliRunner().invoke(main, again)
    assert resumed.exit_code == 0, resumed.output
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    final = read_checkpoint(run / "final.pt")
    assert all(torch.isfinite(v).all() for v in final["model"].values() if v.is_floating_point())
    _no_leftovers(run)


def test_extract_into_an_unusable_folder_names_it(tmp_path, tiny_patch_ckpt):
    write_audio(tmp_path / "in" / "a.wav", tone(1.0))
    (tmp_path / "file").write_text("not a folder")
    result = CliRunner().invoke(main, ["extract", str(tmp_path / "in"), "-o", str(tmp_path / "file" / "out"),
                                       "--model", str(tiny_patch_ckpt), "--dtype", "float32"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"Error: cannot create {tmp_path / 'file' / 'out'}: Not a directory" in result.output
