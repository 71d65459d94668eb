"""`maeast-embed extract` and the Python API under it: layout, manifest, every option."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import chirp, noise, tone, write_audio

from maeast_embed.audio import load_audio
from maeast_embed.cli import main
from maeast_embed.extract import (
    ExtractOptions,
    collect_jobs,
    embed_files,
    read_manifest,
    run_extract,
    shard_of,
)
from maeast_embed.features import Embedder

LENGTHS = {"a.wav": 3.0, "sub/b.flac": 12.5, "sub/deep/c.ogg": 1.3, "d.wav": 0.1, "e.wav": 5.0}


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio")
    for i, (rel, seconds) in enumerate(LENGTHS.items()):
        signal = [tone, chirp, noise][i % 3](seconds)
        write_audio(root / rel, signal, subtype="VORBIS" if rel.endswith(".ogg") else None)
    write_audio(root / "stereo44.wav", np.stack([tone(2.0, sr=44100), noise(2.0, sr=44100)], 1), sr=44100)
    return root


def extract(*args):
    """The CLI, in float32 unless --dtype is given: these tests compare values with the float32
    engine exactly."""
    args = [*map(str, args)]
    dtype = [] if "--dtype" in args else ["--dtype", "float32"]
    return CliRunner().invoke(main, ["extract", *args, *dtype])


def load(path):
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def outputs(out_dir):
    return sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*.npz"))


def test_folder_layout_manifest_and_values(audio_dir, tmp_path, tiny_patch_ckpt):
    out = tmp_path / "out"
    result = extract(audio_dir, "-o", out, "--model", tiny_patch_ckpt, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "6 embedded, 0 skipped" in result.stderr and "0 failed" in result.stderr
    expected = sorted(f"{rel}.npz" for rel in [*LENGTHS, "stereo44.wav"])
    assert outputs(out) == expected

    embedder = Embedder(tiny_patch_ckpt, device="cpu", dtype="float32")
    for rel in ["a.wav", "sub/b.flac", "stereo44.wav", "d.wav"]:
        data = load(out / f"{rel}.npz")
        wave = load_audio(audio_dir / rel)
        reference = embedder.frame_features([wave])[0][0]  # last layer, [T, 8 * 64]
        assert data["embedding"].dtype == np.float32 and data["timestamps"].dtype == np.float64
        assert data["embedding"].shape == (reference.shape[0], 8 * 64)
        np.testing.assert_allclose(data["embedding"], reference.numpy(), atol=2e-5)
        np.testing.assert_array_equal(data["timestamps"], embedder.timestamps(reference.shape[0]))
    assert load(out / "sub/b.flac.npz")["embedding"].shape[0] == 78  # 12.5 s: 1248 frames // 16
    assert load(out / "d.wav.npz")["embedding"].shape[0] == 1  # 100 ms: padded to one token step

    headers, files = read_manifest(out / "manifest.jsonl")
    header = headers[-1]
    assert header["model"]["sha256"] == embedder.model.checkpoint.sha256
    assert header["model"]["variant"] == "patch" and header["layers"] == [2]
    assert header["options"]["granularity"] == "frame" and header["options"]["chunk_seconds"] == 10.24
    record = files[str(audio_dir / "sub/b.flac")]
    assert record["status"] == "ok" and record["frames"] == 78 and record["duration"] == 12.5
    assert record["output"] == str(out / "sub/b.flac.npz") and record["error"] is None
    assert len(files) == 6


def test_list_files_and_single_files(audio_dir, tmp_path, tiny_patch_ckpt):
    listing = tmp_path / "files.csv"
    listing.write_text(f"path,label\n{audio_dir / 'a.wav'},x\n{audio_dir / 'sub/b.flac'},y\n")
    out = tmp_path / "out"
    result = extract(listing, audio_dir / "e.wav", "-o", out, "--model", tiny_patch_ckpt, "--quiet")
    assert result.exit_code == 0 and result.output == ""
    assert outputs(out) == ["a.wav.npz", "e.wav.npz", "sub/b.flac.npz"]  # mirrors the list's common root
    (audio_dir / "rel.txt").write_text("sub/deep/c.ogg\n")
    collected = collect_jobs([audio_dir / "rel.txt", audio_dir / "nope.wav"])
    assert [j.rel for j in collected.jobs] == ["sub/deep/c.ogg"] and collected.problems == [
        (str(audio_dir / "nope.wav"), "file not found")
    ]
    (audio_dir / "rel.txt").unlink()


def test_python_api_matches_the_cli(audio_dir, tmp_path, tiny_patch_ckpt):
    embedder = Embedder(tiny_patch_ckpt, device="cpu", batch_size=3, dtype="float32")
    files = [audio_dir / "a.wav", audio_dir / "stereo44.wav"]
    from_files = embed_files(embedder, files, granularity="clip", layer="all", pool="meanmax")
    waves = [load_audio(f) for f in files]
    from_waves = embedder.embed_waveforms(waves, granularity="clip", layer="all", pool="meanmax")
    for a, b in zip(from_files, from_waves, strict=True):
        assert a.embedding.shape == (2, 2 * 8 * 64) and a.duration == b.duration
        np.testing.assert_allclose(a.embedding, b.embedding, atol=2e-5)
        np.testing.assert_allclose(a.timestamps, [a.duration / 2])
    out = tmp_path / "cli"  # the same files and options through `maeast-embed extract`
    result = extract(*files, "-o", out, "--model", tiny_patch_ckpt, "--batch-size", "3", "--granularity",
                     "clip", "--layer", "all", "--pool", "meanmax", "--device", "cpu", "-q")
    assert result.exit_code == 0, result.output
    for api, file in zip(from_files, files, strict=True):
        cli = load(out / f"{file.name}.npz")
        assert cli["embedding"].shape == api.embedding.shape
        np.testing.assert_allclose(cli["embedding"], api.embedding, atol=2e-5)
        np.testing.assert_array_equal(cli["timestamps"], api.timestamps)
    _, records = read_manifest(out / "manifest.jsonl")
    assert [records[str(f)]["duration"] for f in files] == [round(a.duration, 6) for a in from_files]
    native = tone(2.0, sr=44100)
    resampled = embedder.embed_waveforms([native], sample_rate=44100)[0]
    np.testing.assert_allclose(
        resampled.embedding,
        embed_files(embedder, [write_audio(tmp_path / "n.wav", native, sr=44100, subtype="FLOAT")])[
            0
        ].embedding,
        atol=2e-5,
    )


@pytest.mark.parametrize("layer", ["all", "1", "-1", "mean", "1,2"])
def test_layer_option(audio_dir, tmp_path, tiny_patch_ckpt, layer):
    out = tmp_path / layer.replace(",", "_")
    result = extract(audio_dir / "a.wav", "-o", out, "--model", tiny_patch_ckpt, "--layer", layer, "-q")
    assert result.exit_code == 0, result.output
    got = load(out / "a.wav.npz")["embedding"]
    stacked = torch.stack(
        Embedder(tiny_patch_ckpt, dtype="float32")
        .frame_features([load_audio(audio_dir / "a.wav")], layer="all")[0]
        .unbind(0)
    ).numpy()
    expected = {"all": stacked, "1": stacked[0], "-1": stacked[1], "mean": stacked.mean(0), "1,2": stacked}[
        layer
    ]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=2e-5)
    header = read_manifest(out / "manifest.jsonl")[0][-1]
    assert (
        header["layers"]
        == {"all": [1, 2], "1": [1], "-1": [2], "mean": {"mean_of": [1, 2]}, "1,2": [1, 2]}[layer]
    )


def test_bad_option_values_are_clean_errors(audio_dir, tmp_path, tiny_patch_ckpt):
    for args, message in [
        (["--layer", "7"], "layer"),
        (["--shard", "2/2"], "shard"),
        (["--layer", "top"], "cannot read layer"),
        (["--pool", "max"], "pool"),
    ]:
        result = extract(audio_dir / "a.wav", "-o", tmp_path / "o", "--model", tiny_patch_ckpt, *args)
        assert result.exit_code == 2 if args[0] == "--pool" else result.exit_code == 1
        assert message in result.output and "Traceback" not in result.output
    if not torch.cuda.is_available():
        result = extract(
            audio_dir / "a.wav", "-o", tmp_path / "o", "--model", tiny_patch_ckpt, "--device", "cuda"
        )
        assert result.exit_code == 1 and "no CUDA device" in result.output


def test_clip_granularity_pool_and_freq_pool(audio_dir, tmp_path, tiny_patch_ckpt):
    frame = tmp_path / "frame"
    assert extract(audio_dir, "-o", frame, "--model", tiny_patch_ckpt, "-q").exit_code == 0
    for pool in ["mean", "meanmax"]:
        out = tmp_path / pool
        result = extract(
            audio_dir, "-o", out, "--model", tiny_patch_ckpt, "--granularity", "clip", "--pool", pool, "-q"
        )
        assert result.exit_code == 0, result.output
        for rel, seconds in LENGTHS.items():
            frames = load(frame / f"{rel}.npz")["embedding"]
            clip = load(out / f"{rel}.npz")
            expected = frames.mean(0) if pool == "mean" else np.concatenate([frames.mean(0), frames.max(0)])
            np.testing.assert_allclose(clip["embedding"], expected, atol=1e-5)
            assert clip["timestamps"].shape == (1,) and abs(clip["timestamps"][0] - seconds / 2) < 1e-3
    out = tmp_path / "fmean"
    assert (
        extract(audio_dir / "e.wav", "-o", out, "--model", tiny_patch_ckpt, "--freq-pool", "mean").exit_code
        == 0
    )
    concat = load(frame / "e.wav.npz")["embedding"]
    np.testing.assert_allclose(
        load(out / "e.wav.npz")["embedding"], concat.reshape(len(concat), 8, 64).mean(1), atol=1e-5
    )


def test_frame_model_gives_20ms_frames(audio_dir, tmp_path, tiny_frame_ckpt):
    out = tmp_path / "out"
    assert extract(audio_dir / "a.wav", "-o", out, "--model", tiny_frame_ckpt, "-q").exit_code == 0
    data = load(out / "a.wav.npz")
    assert data["embedding"].shape == (149, 64)  # 3 s: 298 fbank frames -> 149 pairs
    np.testing.assert_allclose(np.diff(data["timestamps"]), 0.02)
    assert data["timestamps"][0] == pytest.approx(0.0175) and data["timestamps"][-1] < 3.0


def test_batch_size_workers_and_other_files_do_not_change_results(audio_dir, tmp_path, tiny_patch_ckpt):
    alone = tmp_path / "alone"
    assert (
        extract(
            audio_dir / "sub/b.flac",
            "-o",
            alone,
            "--model",
            tiny_patch_ckpt,
            "--batch-size",
            "1",
            "--num-workers",
            "0",
            "-q",
        ).exit_code
        == 0
    )
    runs = {}
    for batch, workers in [(2, 3), (16, 1)]:
        out = runs[batch] = tmp_path / f"b{batch}"
        assert (
            extract(
                audio_dir,
                "-o",
                out,
                "--model",
                tiny_patch_ckpt,
                "--batch-size",
                batch,
                "--num-workers",
                workers,
                "-q",
            ).exit_code
            == 0
        )
    reference = load(alone / "b.flac.npz")["embedding"]  # a single file: its name
    for out in runs.values():
        np.testing.assert_allclose(load(out / "sub/b.flac.npz")["embedding"], reference, atol=1e-5)
    for rel in LENGTHS:  # and every file agrees between the two batchings
        np.testing.assert_allclose(
            load(runs[2] / f"{rel}.npz")["embedding"], load(runs[16] / f"{rel}.npz")["embedding"], atol=1e-5
        )


def test_chunk_seconds_windows_are_stitched(audio_dir, tmp_path, tiny_patch_ckpt):
    runs = {}
    for chunk in ["10.24", "2.56"]:
        out = runs[chunk] = tmp_path / chunk
        result = extract(
            audio_dir / "sub/b.flac", "-o", out, "--model", tiny_patch_ckpt, "--chunk-seconds", chunk
        )
        assert result.exit_code == 0, result.output
    long, short = (load(runs[c] / "b.flac.npz") for c in ["10.24", "2.56"])
    np.testing.assert_array_equal(long["timestamps"], short["timestamps"])
    # 2.56 s windows = 16 steps each, encoded alone: the first 16 steps equal a 2.56 s clip's
    embedder = Embedder(tiny_patch_ckpt, dtype="float32")
    wave = load_audio(audio_dir / "sub/b.flac")
    first = embedder.frame_features([wave[: (16 * 16 - 1) * 160 + 400]])[0][0].numpy()
    np.testing.assert_allclose(short["embedding"][:16], first, atol=1e-5)
    assert not np.allclose(long["embedding"][:16], first, atol=1e-3)  # the 10.24 s window sees more context


def test_dtypes_stay_close_to_float32(audio_dir, tmp_path, tiny_patch_ckpt):
    ref = embed_files(Embedder(tiny_patch_ckpt, dtype="float32"), [audio_dir / "e.wav"])[0].embedding
    for dtype in ["bfloat16", "float16"]:
        out = tmp_path / dtype
        result = extract(audio_dir / "e.wav", "-o", out, "--model", tiny_patch_ckpt, "--dtype", dtype)
        assert result.exit_code == 0, result.output
        got = load(out / "e.wav.npz")["embedding"]
        assert got.dtype == np.float32 and not np.array_equal(got, ref)
        cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
        assert cos.min() > 0.99, (dtype, cos.min())
        options = read_manifest(out / "manifest.jsonl")[0][-1]["options"]
        assert (options["dtype"], options["dtype_reason"]) == (dtype, "asked for")
    out = tmp_path / "auto"
    result = extract(audio_dir / "e.wav", "-o", out, "--model", tiny_patch_ckpt, "--dtype", "auto")
    assert result.exit_code == 0, result.output
    options = read_manifest(out / "manifest.jsonl")[0][-1]["options"]
    choice = Embedder(tiny_patch_ckpt).dtype, Embedder(tiny_patch_ckpt).dtype_reason
    assert (options["dtype"], options["dtype_reason"]) == choice and choice[1] != "asked for"


def test_resume_skips_done_files_and_overwrite_redoes_them(audio_dir, tmp_path, tiny_patch_ckpt):
    out = tmp_path / "out"
    assert extract(audio_dir / "a.wav", "-o", out, "--model", tiny_patch_ckpt, "-q").exit_code == 0
    first = (out / "a.wav.npz").stat().st_mtime_ns
    result = extract(audio_dir / "a.wav", audio_dir / "e.wav", "-o", out, "--model", tiny_patch_ckpt)
    assert result.exit_code == 0 and "1 embedded, 1 skipped" in result.stderr
    assert (out / "a.wav.npz").stat().st_mtime_ns == first
    _, files = read_manifest(out / "manifest.jsonl")
    assert files[str(audio_dir / "a.wav")]["status"] == "skipped"
    assert files[str(audio_dir / "a.wav")]["frames"] == 18  # carried over from the first run
    # other settings into the same folder are refused unless --overwrite
    result = extract(audio_dir / "a.wav", "-o", out, "--model", tiny_patch_ckpt, "--layer", "1")
    assert result.exit_code == 1 and "other settings" in result.output and "layer" in result.output
    result = extract(
        audio_dir / "a.wav", "-o", out, "--model", tiny_patch_ckpt, "--layer", "1", "--overwrite"
    )
    assert result.exit_code == 0 and "1 embedded, 0 skipped" in result.stderr
    assert (out / "a.wav.npz").stat().st_mtime_ns != first
    headers, files = read_manifest(out / "manifest.jsonl")
    assert len(headers) == 3 and files[str(audio_dir / "a.wav")]["status"] == "ok"


def test_shards_split_the_work_without_overlap(audio_dir, tmp_path, tiny_patch_ckpt):
    out = tmp_path / "out"
    done = []
    for index in range(3):
        result = extract(audio_dir, "-o", out, "--model", tiny_patch_ckpt, "--shard", f"{index}/3", "-q")
        assert result.exit_code == 0, result.output
        _, files = read_manifest(out / f"manifest.shard-{index}-of-3.jsonl")
        done.append({rec["output"] for rec in files.values()})
        assert all(shard_of(f"{rel}", 3) == index for rel in (p[len(str(out)) + 1 : -4] for p in done[-1]))
    assert sum(map(len, done)) == len(set().union(*done)) == 6 and len(outputs(out)) == 6
    assert not (out / "manifest.jsonl").exists()


def test_progress_bar_reports_files_and_audio_rate(audio_dir, tmp_path, tiny_patch_ckpt, capsys):
    summary = run_extract(
        [audio_dir / "a.wav", audio_dir / "e.wav"],
        tmp_path / "out",
        Embedder(tiny_patch_ckpt),
        ExtractOptions(),
        progress=True,
    )
    err = capsys.readouterr().err
    assert summary.ok and summary.done == 2 and summary.audio_seconds == pytest.approx(8.0)
    assert "2/2" in err and "file/s" in err and "audio-s/s" in err
    assert json.loads((tmp_path / "out/manifest.jsonl").read_text().splitlines()[0])["type"] == "header"
