"""Bad input never stops a run, long files are streamed in bounded memory, kill -9 is safe."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from helpers import chirp, kill_mid_write_script, noise, tone, write_audio

from maeast_embed.cli import main
from maeast_embed.extract import ExtractOptions, embed_files, read_manifest, run_extract
from maeast_embed.features import Embedder


def load(path):
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def test_every_bad_file_is_recorded_and_the_rest_is_done(tmp_path, tiny_patch_ckpt):
    src = tmp_path / "in"
    write_audio(src / "good1.wav", tone(2.0))
    write_audio(src / "z_good2.flac", chirp(3.0))
    (src / "zero.wav").write_bytes(b"")
    write_audio(src / "tiny.wav", tone(0.02))  # 20 ms < one 25 ms fbank frame
    nan = noise(1.0)
    nan[4000:4010] = np.nan
    write_audio(src / "nan.wav", nan, subtype="FLOAT")
    (src / "text.mp3").write_text("definitely not audio " * 50)
    flac = write_audio(tmp_path / "ok.flac", noise(1.0), subtype="PCM_16").read_bytes()
    (src / "corrupt.flac").write_bytes(flac[:200] + bytes(3000) + flac[3200:])
    (src / "empty_dir").mkdir()
    (src / "only_text").mkdir()
    (src / "only_text" / "readme.txt").write_text("no audio here")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["extract", str(src), str(src / "only_text"), "-o", str(out), "--model", str(tiny_patch_ckpt)]
    )
    assert result.exit_code == 1
    assert "2 embedded, 0 skipped (already done), 6 failed" in result.stderr
    assert sorted(p.name for p in out.rglob("*.npz")) == ["good1.wav.npz", "z_good2.flac.npz"]
    _, files = read_manifest(out / "manifest.jsonl")
    reasons = {Path(k).name: v["error"] for k, v in files.items() if v["status"] == "failed"}
    assert reasons.keys() == {"zero.wav", "tiny.wav", "nan.wav", "text.mp3", "corrupt.flac", "only_text"}
    assert "empty file" in reasons["zero.wav"] and "shorter than one 25 ms" in reasons["tiny.wav"]
    assert "NaN" in reasons["nan.wav"] and "not a readable audio file" in reasons["text.mp3"]
    assert "decoding failed" in reasons["corrupt.flac"] and "no audio files" in reasons["only_text"]
    for name in reasons:
        assert f"FAILED {src}" in result.stderr and name in result.stderr
    assert "Traceback" not in result.output


def test_directory_without_audio_fails_cleanly(tmp_path, tiny_patch_ckpt):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("nothing")
    result = CliRunner().invoke(
        main,
        ["extract", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(tiny_patch_ckpt), "-q"],
    )
    assert result.exit_code == 1 and "1 file(s) failed" in result.stderr
    _, files = read_manifest(tmp_path / "out" / "manifest.jsonl")
    error = files[str(tmp_path / "in")]["error"]
    assert error == "no audio files found in directory (ignored 1 file: .txt 1)"


def _drop_permission_bypass() -> None:
    """In a child before exec: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding
    set (what `setpriv --bounding-set` does), so root's next program obeys file permissions."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def test_unreadable_file_is_recorded(tmp_path, tiny_patch_ckpt):
    write_audio(tmp_path / "in" / "ok.wav", tone(1.0))
    locked = write_audio(tmp_path / "in" / "locked.wav", tone(1.0))
    locked.chmod(0)
    cmd = [
        sys.executable,
        "-m",
        "maeast_embed.cli",
        "extract",
        str(tmp_path / "in"),
        "-o",
        str(tmp_path / "out"),
        "--model",
        str(tiny_patch_ckpt),
        "--num-workers",
        "0",
    ]
    # root reads anything: the child drops the capabilities that bypass permissions
    drop = _drop_permission_bypass if os.geteuid() == 0 else None
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, preexec_fn=drop)
    assert proc.returncode == 1, proc.stderr
    _, files = read_manifest(tmp_path / "out" / "manifest.jsonl")
    assert "permission denied" in files[str(locked)]["error"]
    assert files[str(tmp_path / "in" / "ok.wav")]["status"] == "ok"


@pytest.mark.parametrize("granularity, layer", [("frame", "all"), ("frame", "last"), ("clip", "all")])
def test_streamed_long_files_equal_the_in_memory_path(tmp_path, tiny_patch_ckpt, granularity, layer):
    # 22.05 kHz stereo, streamed in 1.3 s blocks (resampled block by block) with 1.28 s windows
    seconds, rate = 5.3, 22050
    data = np.stack([chirp(seconds, sr=rate), noise(seconds, sr=rate, seed=3)], 1)
    path = write_audio(tmp_path / "in" / "long.wav", data, sr=rate, subtype="FLOAT")
    embedder = Embedder(tiny_patch_ckpt, batch_size=3, chunk_seconds=1.28, dtype="float32")  # exact
    runs = {}
    for name, stream in [("memory", 1e9), ("stream", 2.0)]:
        options = ExtractOptions(
            granularity=granularity, layer=layer, pool="meanmax", stream_seconds=stream, block_seconds=1.3
        )
        summary = run_extract([tmp_path / "in"], tmp_path / name, embedder, options)
        assert summary.ok and summary.done == 1
        runs[name] = load(tmp_path / name / "long.wav.npz")
    for key in ["embedding", "timestamps"]:
        assert runs["stream"][key].shape == runs["memory"][key].shape
        np.testing.assert_allclose(runs["stream"][key], runs["memory"][key], atol=2e-5)
    assert not list((tmp_path / "stream").glob("*.tmp")) and not list((tmp_path / "stream").glob("tmp*"))
    api = embed_files(embedder, [path], granularity=granularity, layer=layer, pool="meanmax")[0]
    np.testing.assert_allclose(api.embedding, runs["memory"]["embedding"], atol=2e-5)


def test_streamed_file_with_nan_in_a_late_block_fails_cleanly(tmp_path, tiny_patch_ckpt):
    data = noise(6.0)
    data[-100] = np.nan
    write_audio(tmp_path / "in" / "late_nan.wav", data, subtype="FLOAT")
    write_audio(tmp_path / "in" / "ok.wav", tone(1.0))
    options = ExtractOptions(stream_seconds=1.0, block_seconds=0.5)
    summary = run_extract([tmp_path / "in"], tmp_path / "out", Embedder(tiny_patch_ckpt), options)
    assert summary.done == 1 and len(summary.failed) == 1 and "NaN" in summary.failed[0][1]
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == [".manifest.jsonl.lock", "manifest.jsonl", "ok.wav.npz"]


def _write_long_file(path: Path, seconds: int, rate: int) -> None:
    """A long, quiet, cheap file written block by block (never whole in memory)."""
    with sf.SoundFile(str(path), "w", samplerate=rate, channels=1, subtype="PCM_16") as handle:
        block = tone(60.0, freq=250.0, sr=rate, amp=0.05)
        for _ in range(seconds // 60):
            handle.write(block)


def _peak_rss_run(args: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    code = (
        "import resource, sys\nfrom maeast_embed.cli import main\n"
        "try:\n    main(sys.argv[1:])\nfinally:\n"
        "    print('PEAK_RSS_MB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, file=sys.stderr)"
    )
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=1800)
    peak = float(proc.stderr.rsplit("PEAK_RSS_MB", 1)[1].split()[0])
    return proc, peak


@pytest.mark.slow
def test_two_hour_file_streams_in_bounded_memory(tmp_path, tiny_patch_ckpt):
    rate, seconds = 8000, 2 * 3600
    path = tmp_path / "in" / "two_hours.wav"
    path.parent.mkdir()
    _write_long_file(path, seconds, rate)
    whole_16k_mb = seconds * 16000 * 4 / 2**20  # 440 MiB just for the decoded waveform
    results = {}
    for granularity in ["frame", "clip"]:
        out = tmp_path / granularity
        proc, peak = _peak_rss_run(
            [
                "extract",
                str(path),
                "-o",
                str(out),
                "--model",
                str(tiny_patch_ckpt),
                "--granularity",
                granularity,
                "--device",
                "cpu",
            ]
        )
        assert proc.returncode == 0, proc.stderr
        data = load(out / "two_hours.wav.npz")
        results[granularity] = (data, peak)
        record = json.loads((out / "manifest.jsonl").read_text().splitlines()[-1])
        assert record["status"] == "ok" and record["duration"] == seconds
    frames, frame_peak = results["frame"]
    steps = ((seconds * 16000 - 400) // 160 + 1) // 16
    assert frames["embedding"].shape == (steps, 512) and np.isfinite(frames["embedding"]).all()
    clip, clip_peak = results["clip"]
    np.testing.assert_allclose(clip["embedding"], frames["embedding"].mean(0), atol=1e-4)
    baseline = _peak_rss_run(["info", str(tiny_patch_ckpt)])[1]  # python + torch + the model
    print(f"peak RSS MB: baseline {baseline:.0f}, frame {frame_peak:.0f}, clip {clip_peak:.0f}")
    assert clip_peak - baseline < 0.5 * whole_16k_mb
    assert frame_peak - baseline < 0.5 * whole_16k_mb  # the 88 MiB output is spooled to disk


KILL_IN_WRITE = kill_mid_write_script("npz")


def test_kill_9_during_a_write_then_rerun_completes(tmp_path, tiny_patch_ckpt):
    """The process kills itself in the middle of writing its 4th .npz (deterministic: a writer
    patched in the child): no output is truncated, and a rerun completes."""
    src = tmp_path / "in"
    for i in range(8):
        write_audio(src / f"f{i:02d}.wav", noise(2.0, seed=i))
    out = tmp_path / "out"
    args = ["extract", str(src), "-o", str(out), "--model", str(tiny_patch_ckpt), "--batch-size", "1",
            "--num-workers", "0", "--dtype", "float32", "-q"]
    killed = subprocess.run([sys.executable, "-c", KILL_IN_WRITE, "4", *args], capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert sorted(p.name for p in out.glob("*.npz")) == ["f00.wav.npz", "f01.wav.npz", "f02.wav.npz"]
    partial = [p for p in out.iterdir() if p.name.startswith(".f03.wav.npz.") and p.name.endswith(".tmp")]
    assert len(partial) == 1 and 4096 < partial[0].stat().st_size < (out / "f00.wav.npz").stat().st_size
    for npz in out.glob("*.npz"):  # whatever exists is complete
        assert load(npz)["embedding"].shape == (12, 512)
    _, files = read_manifest(out / "manifest.jsonl")
    assert sorted(Path(k).name for k, r in files.items() if r["status"] == "ok") == [
        "f00.wav", "f01.wav", "f02.wav"
    ]
    killed_with = 3
    cmd = [sys.executable, "-m", "maeast_embed.cli", *args]  # without -q below: the summary
    manifest = out / "manifest.jsonl"

    rerun = subprocess.run(cmd[:-1], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{8 - killed_with} embedded, {killed_with} skipped" in rerun.stderr
    assert "took over the lock of a killed run" in rerun.stderr
    # no temporary file is left behind; the (hidden) lock file stays, released
    assert sorted(p.name for p in out.iterdir()) == [".manifest.jsonl.lock"] + [
        f"f{i:02d}.wav.npz" for i in range(8)
    ] + ["manifest.jsonl"]
    for npz in out.glob("*.npz"):
        assert load(npz)["embedding"].shape == (12, 512)
    headers, files = read_manifest(manifest)
    assert (
        len(headers) == 2 and {r["status"] for r in files.values()} <= {"ok", "skipped"} and len(files) == 8
    )

