"""Consolidated outputs (--format parquet|webdataset), --storage-dtype, the one reader and convert:
each format holds what the .npz of the same run holds, resumes after a kill mid-part, refuses
broken parts as data, ranks write side by side."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import kill_mid_write_script, noise, write_audio

from maeast_embed import load_embeddings
from maeast_embed.cli import main
from maeast_embed.errors import ConfigError
from maeast_embed.extract import ExtractOptions, read_manifest, run_extract
from maeast_embed.features import Embedder

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
wds = pytest.importorskip("webdataset")

FORMATS = ["parquet", "webdataset"]


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> Path:
    """Seven clips of 0.6 to 1.8 s, one in a subfolder, names with dots and a '%'."""
    src = tmp_path_factory.mktemp("audio")
    names = ["a.wav", "b.v2.wav", "c%d.wav", "sub/d.wav", "sub/e.flac", "f.wav", "g.wav"]
    for i, name in enumerate(names):
        write_audio(src / name, noise(0.6 + 0.2 * i, seed=i))
    return src


def extract(audio: Path, out: Path, ckpt: Path, *extra: str, ok: bool = True):
    args = ["extract", str(audio), "-o", str(out), "--model", str(ckpt), "--dtype", "float32", "-q",
            "--num-workers", "0", *extra]
    result = CliRunner().invoke(main, args)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def npz_arrays(out: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """key -> (embedding, timestamps) read straight from the .npz files."""
    found = {}
    for path in out.rglob("*.npz"):
        with np.load(path) as data:
            found[path.relative_to(out).as_posix()[: -len(".npz")]] = (data["embedding"], data["timestamps"])
    return found


def parquet_arrays(out: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """key -> (embedding, timestamps) read with pyarrow alone (to_pylist, no project code)."""
    found = {}
    for path in sorted(out.glob("part-*.parquet")):
        table = pq.read_table(path)
        stored = table.schema.field("embedding").type
        while hasattr(stored, "value_type"):
            stored = stored.value_type
        for row in table.to_pylist():  # python floats: exact for float32 and float16 values
            embedding = np.array(row["embedding"], stored.to_pandas_dtype())
            found[row["key"]] = (embedding, np.array(row["timestamps"]))
    return found


def webdataset_arrays(out: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """key -> (embedding, timestamps) read with the webdataset library."""
    urls = [str(p) for p in sorted(out.glob("part-*.tar"))]
    found = {}
    for sample in wds.WebDataset(urls, shardshuffle=False).decode():
        found[sample["json"]["key"]] = (sample["npy"], np.array(sample["json"]["timestamps"]))
    return found


READERS = {"parquet": parquet_arrays, "webdataset": webdataset_arrays}


@pytest.mark.parametrize("granularity,layer", [("clip", "last"), ("frame", "all")])
def test_every_format_holds_what_the_npz_holds(tmp_path, audio, tiny_patch_ckpt, granularity, layer):
    opts = ["--granularity", granularity, "--layer", layer]
    extract(audio, tmp_path / "npz", tiny_patch_ckpt, *opts)
    reference = npz_arrays(tmp_path / "npz")
    assert len(reference) == 7 and "b.v2.wav" in reference and "sub/e.flac" in reference
    for fmt in FORMATS:
        out = tmp_path / fmt
        extract(audio, out, tiny_patch_ckpt, *opts, "--format", fmt, "--part-size", "3")
        assert len(list(out.glob("part-*"))) == 3  # 3 + 3 + 1 clips
        got = READERS[fmt](out)
        assert got.keys() == reference.keys()
        for key, (embedding, stamps) in reference.items():
            assert got[key][0].dtype == np.float32 and np.array_equal(got[key][0], embedding), (fmt, key)
            assert np.array_equal(got[key][1], stamps)
        half = tmp_path / f"{fmt}16"
        extract(audio, half, tiny_patch_ckpt, *opts, "--format", fmt, "--storage-dtype", "float16")
        for key, (embedding, _) in READERS[fmt](half).items():
            expected = reference[key][0].astype(np.float16)
            assert np.array_equal(np.asarray(embedding, np.float16), expected)
            assert np.abs(expected.astype(np.float32) - reference[key][0]).max() <= 1e-3 * np.abs(
                reference[key][0]).max()
        # the reader gives every format the same records
        records = {r.key: r for r in load_embeddings(out)}
        npz_records = {r.key: r for r in load_embeddings(tmp_path / "npz")}
        assert records.keys() == npz_records.keys() == reference.keys()
        for key, record in records.items():
            assert np.array_equal(record.embedding, npz_records[key].embedding)
            assert np.array_equal(record.timestamps, npz_records[key].timestamps)
            assert record.input == npz_records[key].input and record.duration == npz_records[key].duration
    if granularity == "clip":
        keys, array = load_embeddings(tmp_path / "parquet").to_numpy()
        assert array.shape == (7, reference["a.wav"][0].size) and array.flags.writeable
        assert np.array_equal(array, np.stack([reference[k][0] for k in keys]))
        for fmt in ("npz", "webdataset"):
            other_keys, other = load_embeddings(tmp_path / fmt).to_numpy()
            order = [other_keys.index(k) for k in keys]
            assert np.array_equal(other[order], array) and other.flags.writeable
    else:
        with pytest.raises(Exception, match="frame-level"):
            load_embeddings(tmp_path / "parquet").to_numpy()


def test_parquet_layout_and_metadata(tmp_path, audio, tiny_patch_ckpt):
    out = tmp_path / "pq"
    extract(audio, out, tiny_patch_ckpt, "--granularity", "clip", "--format", "parquet")
    (part,) = out.glob("part-*.parquet")
    assert part.name == "part-000000.parquet"
    table = pq.read_table(part)
    assert table.column_names == ["key", "input", "shard", "duration", "frames", "timestamps", "embedding",
                                  "layer"]
    field = table.schema.field("embedding")
    assert pa.types.is_fixed_size_list(field.type)
    assert not field.nullable and not field.type.value_field.nullable  # no levels of nulls to decode
    meta = json.loads(table.schema.metadata[b"maeast_embed"])
    assert meta["options"]["granularity"] == "clip" and meta["model"]["variant"] == "patch"
    assert sorted(table.column("duration").to_pylist()) == pytest.approx([0.6 + 0.2 * i for i in range(7)])


def test_tar_parts_stack_at_once_and_every_member_header_is_checked(tmp_path):
    from maeast_embed.extract.rows import BrokenPart, Row
    from maeast_embed.extract.tar_part import TarFormat

    rng = np.random.default_rng(0)
    rows = [Row(f"c{i}.wav", f"/a/c{i}.wav", None, 1.0, 2, np.array([0.5]),
                rng.standard_normal(5, np.float32))
            for i in range(4)]
    tar, path = TarFormat(), tmp_path / "part-000000.tar"
    for mixed in (False, True):  # one header for every .npy (gathered at once), or not (one by one)
        rows[2].embedding = rows[2].embedding.astype(np.float16 if mixed else np.float32)
        with open(path, "wb") as handle:
            writer = tar.writer(handle, {})
            writer.write(rows)
            writer.close()
        keys, stacked = tar.stack(path)
        assert keys == [r.key for r in rows] and stacked.dtype == np.float32
        assert np.array_equal(stacked, np.stack([r.embedding for r in tar.rows(path)]))
    with tarfile.open(path) as handle:
        header = handle.getmembers()[2].offset
    data = bytearray(path.read_bytes())
    data[header + 3] ^= 1  # one bit of the third member's name
    path.write_bytes(bytes(data))
    for read in (tar.stack, tar.keys):
        with pytest.raises(BrokenPart, match=f"damaged member header at byte {header}$"):
            read(path)


KILL_IN_PART = kill_mid_write_script("parts")


@pytest.mark.parametrize("fmt", FORMATS)
def test_kill_9_mid_part_then_rerun_completes(tmp_path, audio, tiny_patch_ckpt, fmt):
    """The process kills itself while writing its 2nd part (deterministic: the part writer's
    file is patched in the child): the 1st part stays whole, the rerun redoes only the inputs of
    the 2nd, and no key is in two parts."""
    out = tmp_path / "out"
    args = ["extract", str(audio), "-o", str(out), "--model", str(tiny_patch_ckpt), "--batch-size", "1",
            "--num-workers", "0", "--dtype", "float32", "--format", fmt, "--part-size", "3"]
    killed = subprocess.run([sys.executable, "-c", KILL_IN_PART, "2", *args, "-q"], capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    ext = ".parquet" if fmt == "parquet" else ".tar"
    assert [p.name for p in out.glob("part-*")] == [f"part-000000{ext}"]
    assert len([p for p in out.iterdir() if p.name.startswith(f".part-000001{ext}.")]) == 1  # the cut one
    assert len(list(load_embeddings(out))) == 3
    _, files = read_manifest(out / "manifest.jsonl")
    assert sum(r["status"] == "ok" for r in files.values()) == 3

    rerun = subprocess.run([sys.executable, "-m", "maeast_embed.cli", *args], capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "4 embedded, 3 skipped" in rerun.stderr
    assert sorted(p.name for p in out.iterdir()) == [".manifest.jsonl.lock", "manifest.jsonl"] + [
        f"part-00000{i}{ext}" for i in range(3)]  # the cut one removed
    keys = [r.key for r in load_embeddings(out)]
    assert len(keys) == len(set(keys)) == 7
    reference = tmp_path / "npz"
    extract(audio, reference, tiny_patch_ckpt, "--batch-size", "1")
    expected = npz_arrays(reference)
    for key, (embedding, _) in READERS[fmt](out).items():
        assert np.array_equal(embedding, expected[key][0])


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_part_cut_by_hand_is_refused_as_data_reported_and_redone(tmp_path, audio, tiny_patch_ckpt, fmt):
    out = tmp_path / "out"
    extract(audio, out, tiny_patch_ckpt, "--granularity", "clip", "--format", fmt, "--part-size", "3")
    ext = ".parquet" if fmt == "parquet" else ".tar"
    part = out / f"part-000001{ext}"
    whole = part.read_bytes()
    cuts = [len(whole) // 2, len(whole) - 1]
    if fmt == "webdataset":  # past the last member's data: end-of-archive blocks, then zero padding
        with tarfile.open(part) as tar:
            last = tar.getmembers()[-1]
        cuts = [len(whole) // 2, last.offset_data + last.size - 1, last.offset_data + last.size + 512]
    for cut in cuts:
        part.write_bytes(whole[:cut])
        with pytest.raises(Exception, match="part-000001"):
            load_embeddings(out).to_numpy()
    result = CliRunner().invoke(main, ["extract", str(audio), "-o", str(out), "--model", str(tiny_patch_ckpt),
                                       "--dtype", "float32", "--granularity", "clip", "--format", fmt,
                                       "--part-size", "3"])
    assert result.exit_code == 0, result.output
    assert f"BROKEN PART {part}" in result.output and "its inputs are redone" in result.output
    assert "3 embedded, 4 skipped" in result.output
    assert (out / f"part-000001{ext}.broken").is_file()
    keys, array = load_embeddings(out).to_numpy()
    assert sorted(keys) == sorted(set(keys)) and len(keys) == 7 and array.shape[0] == 7


def test_another_format_or_storage_dtype_is_refused_without_overwrite(tmp_path, audio, tiny_patch_ckpt):
    out = tmp_path / "out"
    extract(audio, out, tiny_patch_ckpt, "--granularity", "clip")
    refused = extract(audio, out, tiny_patch_ckpt, "--granularity", "clip", "--format", "parquet", ok=False)
    assert refused.exit_code == 1 and "format: None -> 'parquet'" in refused.output
    refused = extract(audio, out, tiny_patch_ckpt, "--granularity", "clip", "--storage-dtype", "float16",
                      ok=False)
    assert refused.exit_code == 1 and "storage_dtype: None -> 'float16'" in refused.output
    extract(audio, out, tiny_patch_ckpt, "--granularity", "clip", "--format", "parquet", "--overwrite")
    assert load_embeddings(out).format == "parquet" and len(load_embeddings(out).to_numpy()[0]) == 7


@pytest.mark.parametrize("fmt", FORMATS)
def test_ranks_write_their_own_parts_and_status_counts_them(tmp_path, audio, tiny_patch_ckpt, fmt):
    out = tmp_path / "out"
    def rank(index: int) -> None:
        result = CliRunner().invoke(
            main, ["extract", str(audio), "-o", str(out), "--model", str(tiny_patch_ckpt), "--dtype",
                   "float32", "-q", "--granularity", "clip", "--format", fmt, "--shard", "auto"],
            env={"RANK": str(index), "WORLD_SIZE": "2"})
        assert result.exit_code == 0, result.output

    rank(0)
    rank(1)
    ext = ".parquet" if fmt == "parquet" else ".tar"
    left = out / f".part-0-of-2-000004{ext}.a1b2c3.tmp"  # a killed rank-0 run's: rank 0 removes it
    writing = out / f".part-1-of-2-000001{ext}.x1y2z3.tmp"  # rank 1 at work: rank 0 leaves it
    for path in (left, writing):
        path.write_bytes(b"partial")
    rank(0)
    assert not left.exists() and writing.exists()
    writing.unlink()
    names = sorted(p.name for p in out.glob("part-*"))
    assert [n.split("-000000")[0] for n in names] == ["part-0-of-2", "part-1-of-2"]
    keys = [r.key for r in load_embeddings(out)]
    assert len(keys) == len(set(keys)) == 7
    status = CliRunner().invoke(main, ["status", str(out), "--json"])
    shards = json.loads(status.output)["shards"]
    assert [s["shard"] for s in shards] == ["0/2", "1/2"] and sum(s["done"] for s in shards) == 7
    assert all(s["pending"] == 0 for s in shards)


def test_a_moved_npz_folder_reads_as_before(tmp_path, audio, tiny_patch_ckpt):
    """The manifest records absolute paths; a folder moved (or copied) elsewhere still reads."""
    extract(audio, tmp_path / "first" / "out", tiny_patch_ckpt, "--granularity", "clip")
    keys, values = load_embeddings(tmp_path / "first" / "out").to_numpy()
    (tmp_path / "first").rename(tmp_path / "elsewhere")
    moved = load_embeddings(tmp_path / "elsewhere" / "out")
    again, moved_values = moved.to_numpy()
    assert again == keys and "sub/e.flac" in keys and np.array_equal(moved_values, values)
    assert [r.key for r in moved] == keys
    (tmp_path / "elsewhere" / "out" / "sub" / "e.flac.npz").unlink()
    with pytest.raises(ConfigError, match="the embedding of .*e.flac.* is missing"):
        moved.to_numpy()
    manifest = tmp_path / "elsewhere" / "out" / "manifest.jsonl"
    old = str(tmp_path / "first" / "out") + "/"
    manifest.write_text(manifest.read_text().replace(old, "/nowhere/else/gone_"))  # no file there
    with pytest.raises(ConfigError, match="neither in the folder nor in the folder it was moved from"):
        load_embeddings(tmp_path / "elsewhere" / "out").to_numpy()


@pytest.mark.parametrize("fmt", ["npz", "parquet", "webdataset"])
def test_a_moved_folder_resumes_without_redoing_anything(tmp_path, audio, tiny_patch_ckpt, fmt):
    extract(audio, tmp_path / "first" / "out", tiny_patch_ckpt, "--format", fmt, "--part-size", "3")
    (tmp_path / "first").rename(tmp_path / "elsewhere")
    out = tmp_path / "elsewhere" / "out"

    def outputs() -> dict[Path, int]:
        return {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.suffix in (".npz", ".parquet", ".tar")}

    written = outputs()
    assert written
    extract(audio, out, tiny_patch_ckpt, "--format", fmt, "--part-size", "3")
    assert outputs() == written
    status = json.loads(CliRunner().invoke(main, ["status", str(out), "--json"]).output)["shards"]
    assert [(s["done"], s["failed"], s["pending"]) for s in status] == [(7, 0, 0)]


def test_convert_between_formats(tmp_path, audio, tiny_patch_ckpt):
    src = tmp_path / "npz"
    extract(audio, src, tiny_patch_ckpt, "--granularity", "frame")
    reference = npz_arrays(src)
    chain = [("parquet", "float32"), ("webdataset", "float32"), ("npz", "float16")]
    previous = src
    for fmt, dtype in chain:
        target = tmp_path / f"to-{fmt}"
        args = ["convert", str(previous), "--format", fmt, "-o", str(target), "--storage-dtype", dtype]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0 and "7 converted" in result.output, result.output
        again = CliRunner().invoke(main, args)  # resumes: nothing left to do
        assert again.exit_code == 0 and "0 converted, 7 skipped" in again.output, again.output
        loaded = load_embeddings(target)
        assert loaded.format == fmt and loaded.options["granularity"] == "frame"
        for record in loaded:
            assert np.array_equal(record.embedding, reference[record.key][0].astype(dtype))
            assert np.array_equal(record.timestamps, reference[record.key][1])
        previous = target
    assert npz_arrays(tmp_path / "to-npz")["a.wav"][0].dtype == np.float16


@pytest.mark.parametrize("fmt", FORMATS)
def test_streamed_long_files_go_into_parts_as_into_npz(tmp_path, tiny_patch_ckpt, fmt):
    """A file longer than stream_seconds is spooled to disk at frame level: its part row (float32
    and float16) equals its .npz, and a float16 .npz its float32 one rounded."""
    write_audio(tmp_path / "in" / "long.wav", noise(4.3, seed=5))
    write_audio(tmp_path / "in" / "short.wav", noise(0.9, seed=6))
    embedder = Embedder(tiny_patch_ckpt, batch_size=2, chunk_seconds=1.28, dtype="float32")
    runs = {}
    for name, kind, dtype in [("npz", "npz", "float32"), ("n16", "npz", "float16"), ("p32", fmt, "float32"),
                              ("p16", fmt, "float16")]:
        options = ExtractOptions(layer="all", stream_seconds=2.0, block_seconds=1.0, format=kind,
                                 storage_dtype=dtype)
        assert run_extract([tmp_path / "in"], tmp_path / name, embedder, options).ok
        runs[name] = {r.key: r for r in load_embeddings(tmp_path / name)}
    reference = npz_arrays(tmp_path / "npz")
    assert reference["long.wav"][0].shape[:2] == (2, 26)  # [L, T, D], streamed in 1 s blocks
    for key, (embedding, stamps) in reference.items():
        assert np.array_equal(runs["p32"][key].embedding, embedding)
        assert np.array_equal(runs["p16"][key].embedding, embedding.astype(np.float16))
        assert np.array_equal(runs["n16"][key].embedding, embedding.astype(np.float16))
        assert np.array_equal(runs["p32"][key].timestamps, stamps)
    assert not [p for p in (tmp_path / "p16").iterdir() if p.name.startswith("tmp")]
