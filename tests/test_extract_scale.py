"""Scale-out and double starts: shards from torchrun/SLURM environments, a real two-process
torchrun run on CPU, the status command, the per-shard run lock and killed runs' leftovers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import chirp, noise, tone, write_audio

from maeast_embed.cli import main
from maeast_embed.errors import ConfigError
from maeast_embed.extract import read_manifest
from maeast_embed.extract.launch import process_device, shard_from_environment
from maeast_embed.extract.lock import FolderInUse, lock_path, run_lock


def extract(*args):
    return CliRunner().invoke(main, ["extract", *map(str, args)])


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    for i in range(10):
        write_audio(root / f"g{i % 3}" / f"c{i}.wav", [tone, chirp, noise][i % 3](0.5 + 0.3 * i))
    return root


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, (0, 1)),
        ({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}, (3, 8)),
        ({"SLURM_PROCID": "2", "SLURM_NTASKS": "4"}, (2, 4)),
        ({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "10", "SLURM_ARRAY_TASK_MIN": "1"}, (4, 10)),
        # an array of multi-task jobs: array index x tasks + task
        ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "3",
          "SLURM_PROCID": "1", "SLURM_NTASKS": "2"}, (3, 6)),
        # torchrun inside SLURM: torchrun's ranks win over SLURM's tasks
        ({"RANK": "1", "WORLD_SIZE": "2", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"}, (1, 2)),
    ],
)
def test_shard_from_the_launchers_environment(env, expected):
    assert shard_from_environment(env) == expected


@pytest.mark.parametrize(
    "env", [{"RANK": "4", "WORLD_SIZE": "4"}, {"SLURM_PROCID": "x", "SLURM_NTASKS": "2"}]
)
def test_an_impossible_environment_is_a_clear_error(env):
    with pytest.raises(ConfigError, match="RANK|SLURM_PROCID"):
        shard_from_environment(env)


def test_each_process_of_a_launch_takes_its_local_gpu():
    assert process_device("auto", True, {"LOCAL_RANK": "1"}) == "cuda:1"
    assert process_device("cuda", True, {"SLURM_LOCALID": "3"}) == "cuda:3"
    assert process_device("auto", False, {"LOCAL_RANK": "1"}) == "auto"  # no CUDA here
    assert process_device("cpu", True, {"LOCAL_RANK": "1"}) == "cpu"
    assert process_device("auto", True, {}) == "auto"


def outputs(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.npz"))


@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(
    os.path.join(os.path.dirname(sys.executable), "torchrun")), reason="torchrun is not installed")
def test_torchrun_two_processes_split_the_files_like_one_run(clips, tiny_patch_ckpt, tmp_path):
    single = tmp_path / "single"
    assert extract(clips, "-o", single, "--model", tiny_patch_ckpt, "-q").exit_code == 0
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    out = tmp_path / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_ARRAY_TASK_ID"):
        env.pop(name, None)
    result = subprocess.run(
        [torchrun, "--nproc_per_node=2", "--master_port=0", "-m", "maeast_embed.cli", "extract", str(clips),
         "-o", str(out), "--model", str(tiny_patch_ckpt), "-q"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert outputs(out) == outputs(single) and len(outputs(single)) == 10
    for rel in outputs(single):
        with np.load(single / rel) as a, np.load(out / rel) as b:
            np.testing.assert_allclose(a["embedding"], b["embedding"], atol=1e-5)
    done = []
    for index in range(2):
        headers, files = read_manifest(out / f"manifest.shard-{index}-of-2.jsonl")
        assert headers[-1]["options"]["shard"] == f"{index}/2"
        done += [r["input"] for r in files.values() if r["status"] == "ok"]
    assert len(done) == len(set(done)) == 10  # every file once, in exactly one shard

    status = CliRunner().invoke(main, ["status", str(out), "--json"])
    assert status.exit_code == 0, status.output
    shards = json.loads(status.output)["shards"]
    assert [s["shard"] for s in shards] == ["0/2", "1/2"]
    assert sum(s["done"] for s in shards) == 10
    assert all(s["pending"] == 0 and s["failed"] == 0 for s in shards)
    assert all(s["files_per_second"] > 0 and s["running"] is None for s in shards)
    total = sum((0.5 + 0.3 * i) for i in range(10)) / 3600
    assert sum(s["audio_hours"] for s in shards) == pytest.approx(total, rel=1e-3)
    table = CliRunner().invoke(main, ["status", str(out)])
    assert "total" in table.output and "finished" in table.output


def test_status_of_a_folder_without_manifest(tmp_path):
    result = CliRunner().invoke(main, ["status", str(tmp_path)])
    assert result.exit_code == 1 and "no extraction manifest" in result.output


HOLDER = """
import sys, time
from pathlib import Path
from maeast_embed.extract.lock import run_lock
with run_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(600)
"""


def hold_lock(path):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_is_refused_and_a_killed_runs_lock_is_taken_over(clips, tiny_patch_ckpt, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    holder = hold_lock(lock_path(out, "manifest.jsonl"))
    try:
        started = time.perf_counter()
        refused = extract(clips, "-o", out, "--model", tiny_patch_ckpt, "--shard", "0/1")
        assert refused.exit_code == 1
        assert f"in use by another run (pid {holder.pid} on " in refused.output
        assert "started 20" in refused.output
        assert time.perf_counter() - started < 60 and not outputs(out)
        # another shard of the same folder runs side by side
        other = extract(clips, "-o", out, "--model", tiny_patch_ckpt, "--shard", "1/2")
        assert other.exit_code == 0, other.output
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    (out / "g0").mkdir(exist_ok=True)
    leftover = out / "g0" / ".c0.wav.npz.k1ll3d00.tmp"  # what a run killed mid-write leaves
    leftover.write_bytes(b"partial")
    resumed = extract(clips, "-o", out, "--model", tiny_patch_ckpt, "--shard", "0/1")
    assert resumed.exit_code == 0, resumed.output
    assert f"took over the lock of a killed run (pid {holder.pid} on " in resumed.output
    assert not leftover.exists() and len(outputs(out)) == 10
    headers, _ = read_manifest(out / "manifest.jsonl")
    assert headers[-1]["taken_over"].startswith(f"pid {holder.pid}") and headers[-1]["files"] == 10


def test_the_lock_is_exclusive_within_one_process_too(tmp_path):
    path = tmp_path / ".manifest.jsonl.lock"
    with run_lock(path) as left:
        assert left is None
        with pytest.raises(FolderInUse, match=f"pid {os.getpid()}"):
            with run_lock(path):
                pass
    with run_lock(path) as left:  # a clean finish leaves nothing to take over
        assert left is None
