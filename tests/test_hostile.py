"""Untrusted inputs: nothing is written outside the output folder, nothing crashes or hangs, and
every input is accounted for as ok, failed or ignored.

Everything is built here: tar-slip shards with tarfile, links, FIFOs, crafted headers, and a
seeded mutation fuzz of short WAV/FLAC/OGG/MP3/M4A/WebM files run through `extract`, the
header probe and the pretraining loader (`-m slow` runs a larger fuzz).
"""

from __future__ import annotations

import io
import json
import os
import struct
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from helpers import chirp, noise, tone, write_audio
from media import encode

from maeast_embed.audio import AudioError, load_audio, probe, scan_folder
from maeast_embed.cli import main
from maeast_embed.extract import ExtractOptions, read_manifest, run_extract
from maeast_embed.extract import decoding as decoding_module
from maeast_embed.features import Embedder
from maeast_embed.outpaths import OutputPathError, confined, safe_filename, safe_relative
from maeast_embed.pretrain.data import ClipDataset, Window, scan_sources

FLOAT32 = ("--dtype", "float32")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MAEAST_CACHE", str(tmp_path / "cache"))


def extract(*args):
    return CliRunner().invoke(main, ["extract", *map(str, args), *FLOAT32])


def files_under(root: Path) -> set[str]:
    """Every file under `root` but the shard-index cache (which the autouse fixture puts there)."""
    found = {p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir()}
    return {p for p in found if not p.startswith("cache/")}


def flac_bytes(wave: np.ndarray, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, rate, format="FLAC")
    return buffer.getvalue()


def wav_bytes(wave: np.ndarray, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def add_member(tar: tarfile.TarFile, name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE,
               link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


# ---------------------------------------------------------------------------- output names


@pytest.mark.parametrize("name", ["../../escape1.wav", "a/../../../escape2.wav", "/abs/path/abs_escape.wav",
                                  "nul\x00name.wav", "ctrl\x1b[2J.wav", "", ".", "..", "x" * 300 + ".wav",
                                  "bad\udcffbytes.wav", "a/" * 600 + "deep.wav"])
def test_every_unsafe_name_maps_to_a_stable_confined_name(name, tmp_path):
    safe = safe_relative(name)
    assert safe.changed and safe.changed.startswith("renamed (")
    assert safe == safe_relative(name)  # stable
    path = confined(tmp_path / "out", safe.rel + ".npz")
    assert path.is_relative_to(tmp_path / "out")
    assert all(len(part.encode()) + len(".npz") + 20 <= 255 for part in Path(safe.rel).parts)
    assert not any(ord(c) < 32 or 0xD800 <= ord(c) < 0xE000 for c in safe.rel)
    assert safe.rel != safe_relative(name + "x").rel


def test_safe_names_are_kept_and_escapes_are_refused(tmp_path):
    assert safe_relative("a/b.wav").rel == "a/b.wav" and safe_relative("a/b.wav").changed is None
    assert safe_relative("./a//b.wav").rel == "a/b.wav"
    assert safe_relative("train-000000", "clip001").rel == "train-000000/clip001"
    for bad in ("../x.npz", "/etc/x.npz", "a/../../x.npz", ""):
        with pytest.raises(OutputPathError):
            confined(tmp_path, bad)
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out" / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OutputPathError, match="through a symbolic link"):
        confined(tmp_path / "out", "link/x.npz")


def test_safe_filenames_are_one_component_and_never_meet():
    names = ["maeast-small", "a/b.pt", "a_b.pt", "a_b.pt~" + "0" * 10, "../x", "..", "", "n\x00ul", "n_ul",
             "/abs/model.pt", "_abs_model.pt", "x" * 300, "x" * 301]
    files = [safe_filename(name) for name in names]
    assert files[0] == "maeast-small" and files[2] == "a_b.pt"  # safe names are kept
    assert len(set(files)) == len(names)
    for name, file in zip(names, files, strict=True):
        assert file == safe_filename(name) and "/" not in file and file not in ("", ".", "..")
        assert len(file.encode()) + len(".json") + 20 <= 255


def write_evil_shard(path: Path) -> None:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        add_member(tar, "good.wav", wav_bytes(tone(1.0)))
        add_member(tar, "../../escape1.wav", wav_bytes(tone(0.8, 300.0)))
        add_member(tar, "a/../../../escape2.wav", wav_bytes(noise(0.9)))
        add_member(tar, "/abs/path/abs_escape.wav", wav_bytes(chirp(0.7)))
        add_member(tar, "link.wav", kind=tarfile.SYMTYPE, link="/etc/passwd")
        add_member(tar, "hard.wav", kind=tarfile.LNKTYPE, link="good.wav")
        add_member(tar, "dir", kind=tarfile.DIRTYPE)
        add_member(tar, "fifo.wav", kind=tarfile.FIFOTYPE)
        add_member(tar, "zero.wav", kind=tarfile.CHRTYPE)
        add_member(tar, "ctrl\x01key.flac", flac_bytes(tone(0.6, 500.0)))
        add_member(tar, ".wav", wav_bytes(tone(0.5)))  # no key


def test_tar_slip_links_and_devices_in_shards(tmp_path, tiny_patch_ckpt):
    work = tmp_path / "deep" / "er"
    work.mkdir(parents=True)
    for i in range(2):
        write_evil_shard(work / f"evil-{i:06d}.tar")
    before = files_under(tmp_path)
    out = work / "out"
    result = extract(work / "evil-{000000..000001}.tar", "-o", out, "--model", tiny_patch_ckpt)
    assert result.exit_code == 0, result.output
    assert files_under(tmp_path) - before == {f"deep/er/out/{p}" for p in files_under(out)}
    assert not Path("/abs/path").exists()
    npz = sorted(p for p in files_under(out) if p.endswith(".npz"))
    assert len(npz) == 10 and all(p.startswith(("evil-000000/", "evil-000001/")) for p in npz)
    headers, files = read_manifest(out / "manifest.jsonl")
    ignored = "ignored 12 shard members"
    assert ignored in headers[-1]["ignored"] and ignored in result.output
    for kind in ("symbolic link 2", "hard link 2", "directory 2", "FIFO 2", "character device 2",
                 "file without a key or extension 2"):
        assert kind in headers[-1]["ignored"]
    assert {r["status"] for r in files.values()} == {"ok"} and len(files) == 10
    renamed = {r["key"]: r for r in files.values() if "renamed" in r}
    assert sorted({k for k in renamed}) == ["../../escape1", "/abs/path/abs_escape", "a/../../../escape2",
                                            "ctrl\x01key"]
    for record in renamed.values():
        assert Path(record["output"]).is_relative_to(out) and Path(record["output"]).is_file()
    assert "'..' component" in renamed["../../escape1"]["renamed"]
    assert "absolute path" in renamed["/abs/path/abs_escape"]["renamed"]
    escape = np.load(renamed["../../escape1"]["output"])["embedding"]
    plain = tmp_path / "plain"
    write_audio(plain / "escape1.wav", tone(0.8, 300.0), subtype="PCM_16")
    alone = tmp_path / "plain_out"
    assert extract(plain / "escape1.wav", "-o", alone, "--model", tiny_patch_ckpt).exit_code == 0
    np.testing.assert_allclose(escape, np.load(alone / "escape1.wav.npz")["embedding"], atol=1e-5)


def test_the_pretraining_loader_reads_an_evil_shard_as_data(tmp_path):
    write_evil_shard(tmp_path / "evil.tar")
    before = files_under(tmp_path)
    report = scan_sources([str(tmp_path / "evil.tar")], min_samples=400)
    assert sorted(c.path.split(":", 1)[1] for c in report.clips) == [
        "../../escape1", "/abs/path/abs_escape", "a/../../../escape2", "ctrl\x01key", "good"]
    assert report.unreadable == [] and len(report.ignored) == 1
    assert "ignored 6 shard members" in report.ignored[0]
    dataset = ClipDataset(report.clips, 400)
    assert all(dataset[Window(0, i, 0, 4000)][2].shape == (4000,) for i in range(len(report.clips)))
    assert files_under(tmp_path) == before


def test_list_files_with_paths_outside_their_folder(tmp_path, tiny_patch_ckpt):
    write_audio(tmp_path / "x.wav", tone(1.0))
    write_audio(tmp_path / "other" / "y.flac", noise(1.0))
    write_audio(tmp_path / "lists" / "sub" / "in.wav", chirp(1.0))
    listing = tmp_path / "lists" / "sub" / "list.txt"
    listing.write_text(f"../../x.wav\n{tmp_path / 'other' / 'y.flac'}\nin.wav\nnul\x00name.wav\n")
    out = tmp_path / "out"
    before = files_under(tmp_path)
    result = extract(listing, "-o", out, "--model", tiny_patch_ckpt)
    assert result.exit_code == 1, result.output
    _, files = read_manifest(out / "manifest.jsonl")
    assert {Path(k).name: r["status"] for k, r in files.items()} == {
        "x.wav": "ok", "y.flac": "ok", "in.wav": "ok", "nul\x00name.wav": "failed"}
    bad = next(r for k, r in files.items() if "\x00" in k)
    assert "cannot open" in bad["error"] and "control characters" in bad["renamed"]
    assert files_under(tmp_path) - before == {f"out/{p}" for p in files_under(out)}
    expected = {"x.wav.npz", "other/y.flac.npz", "in.wav.npz"}
    assert {p for p in files_under(out) if p.endswith(".npz")} == expected


def test_folders_links_fifos_devices_and_collisions(tmp_path, tiny_patch_ckpt):
    src = tmp_path / "in"
    write_audio(src / "a" / "same.wav", tone(1.0))
    write_audio(tmp_path / "outside" / "secret.wav", noise(1.0))
    (src / "linked").symlink_to(tmp_path / "outside")  # a link to a folder: not followed, counted
    (src / "zero.wav").symlink_to("/dev/zero")
    (src / "random.wav").symlink_to("/dev/urandom")
    (src / "loop.wav").symlink_to(src / "loop.wav")
    os.mkfifo(src / "fifo.wav")
    write_audio(tmp_path / "b" / "a" / "same.wav", chirp(1.0))  # same output name as in/a/same.wav
    scan = scan_folder(src)
    assert scan.linked_dirs == 1 and "skipped 1 symbolic link to folders" in scan.summary()
    out = tmp_path / "out"
    started = time.monotonic()
    result = extract(src, tmp_path / "b", "-o", out, "--model", tiny_patch_ckpt)
    assert time.monotonic() - started < 60
    assert result.exit_code == 1
    assert files_under(out) == {"manifest.jsonl"} | {p for p in files_under(out) if p.startswith(".manifest")}
    headers, files = read_manifest(out / "manifest.jsonl")
    assert "skipped 1 symbolic link to folders" in headers[-1]["ignored"]
    errors = {Path(k).name: r["error"] for k, r in files.items()}
    assert set(errors) == {"same.wav", "zero.wav", "random.wav", "loop.wav", "fifo.wav"}
    assert all(r["status"] == "failed" for r in files.values())
    assert "not a regular file" in errors["fifo.wav"] and "not a regular file" in errors["zero.wav"]
    shared = [line for line in result.output.splitlines() if "is shared with" in line]
    assert len(shared) == 2 and str(src / "a" / "same.wav") in shared[1] and str(tmp_path / "b") in shared[0]


def test_an_output_folder_holding_a_link_outside_is_not_written_through(tmp_path, tiny_patch_ckpt):
    write_audio(tmp_path / "in" / "sub" / "a.wav", tone(1.0))
    write_audio(tmp_path / "in" / "b.wav", tone(1.0))
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (out / "sub").symlink_to(tmp_path / "elsewhere")
    result = extract(tmp_path / "in", "-o", out, "--model", tiny_patch_ckpt)
    assert result.exit_code == 1 and "through a symbolic link" in result.output
    assert list((tmp_path / "elsewhere").iterdir()) == [] and (out / "b.wav.npz").is_file()


# ---------------------------------------------------------------------------- shards as data


def _raw_header(name: str, size_field: bytes) -> bytes:
    """A ustar header whose 12-byte size field is `size_field` (checksum fixed)."""
    info = tarfile.TarInfo(name)
    info.size = 0
    block = bytearray(info.tobuf(format=tarfile.USTAR_FORMAT))
    block[124:136] = size_field
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block[:512])


def test_a_crafted_negative_size_and_a_size_past_the_end(tmp_path, tiny_patch_ckpt):
    good = wav_bytes(tone(0.5))
    with tarfile.open(tmp_path / "neg.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
        add_member(tar, "first.wav", good)
    data = (tmp_path / "neg.tar").read_bytes()
    end = len(good) + 511 & ~511
    negative = data[: 512 + end] + _raw_header("back.wav", b"\xff" * 12) + bytes(1024)
    (tmp_path / "neg.tar").write_bytes(negative)
    with tarfile.open(tmp_path / "over.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
        add_member(tar, "first.wav", good)
        add_member(tar, "huge.wav", good)
    over = bytearray((tmp_path / "over.tar").read_bytes())
    header = 512 + end
    over[header : header + 512] = _raw_header("huge.wav", b"%011o\0" % (1 << 30))
    (tmp_path / "over.tar").write_bytes(bytes(over[: header + 512 + len(good)]))
    out = tmp_path / "out"
    started = time.monotonic()
    result = extract(tmp_path / "neg.tar", tmp_path / "over.tar", "-o", out, "--model", tiny_patch_ckpt)
    assert time.monotonic() - started < 60, "a crafted size must not loop"
    assert result.exit_code == 1
    _, files = read_manifest(out / "manifest.jsonl")
    status = {(Path(r["shard"]).name, r["key"]): (r["status"], r["error"]) for r in files.values()}
    assert status[("neg.tar", "first")][0] in ("ok", "failed")
    assert status[("over.tar", "first")] == ("ok", None)
    assert status[("over.tar", "huge")][0] == "failed" and "cut short" in status[("over.tar", "huge")][1]
    assert "1073741824 bytes" in status[("over.tar", "huge")][1]


def _many_members(path: Path, count: int) -> Path:
    template = tarfile.TarInfo("k000000.txt")
    template.size = 1
    with open(path, "wb") as handle:
        for i in range(count):
            template.name = f"k{i:06d}.{'wav' if i % 2 else 'txt'}"
            handle.write(template.tobuf(format=tarfile.USTAR_FORMAT) + b"x" + bytes(511))
        handle.write(bytes(1024))
    return path


def test_a_shard_of_100k_tiny_members_is_indexed_in_bounded_time_and_memory(tmp_path):
    import tracemalloc

    from maeast_embed.shards import index_shard

    started = time.monotonic()
    index = index_shard(_many_members(tmp_path / "many.tar", 100_000), cache=False)
    seconds = time.monotonic() - started
    assert len(index.members) == 100_000 and len(index.samples) == 100_000 and index.error is None
    assert seconds < 40, seconds  # about 4 s on 2 busy cores, building the shard included
    small = _many_members(tmp_path / "small.tar", 10_000)
    tracemalloc.start()
    index_shard(small, cache=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 10_000 * 2048, peak  # a small record per member: no data, no TarInfo kept


# ---------------------------------------------------------------------------- headers, time limits


def _wav_header(rate: int, channels: int, frames: int = 1600) -> bytes:
    data = bytes(frames * 2 * min(channels, 4))
    rates = (rate * channels * 2 & 0xFFFFFFFF, channels * 2 & 0xFFFF)
    fmt = struct.pack("<HHIIHH", 1, channels, rate, *rates, 16)
    body = b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _au_header(rate: int, channels: int, size: int = 3200) -> bytes:
    return b".snd" + struct.pack(">IIIII", 24, size, 3, rate, channels) + bytes(size)


def _flac_claiming(frames: int) -> bytes:
    data = bytearray(flac_bytes(tone(0.5)))
    at = 8 + 13  # STREAMINFO total samples: the low 4 bits of this byte and the next 4 bytes
    data[at] = (data[at] & 0xF0) | (frames >> 32 & 0x0F)
    data[at + 1 : at + 5] = struct.pack(">I", frames & 0xFFFFFFFF)
    return bytes(data)


@pytest.mark.parametrize("name,data", [
    ("rate0.wav", _wav_header(0, 1)), ("rate4ghz.wav", _wav_header(4_000_000_000, 1)),
    ("rate2ghz.wav", _wav_header(2_000_000_000, 1)), ("rate3mhz.wav", _wav_header(3_000_000, 1)),
    ("rate1hz.wav", _wav_header(1, 1, 64)), ("ch65535.wav", _wav_header(16000, 65535, 64)),
    ("ch2e31.au", _au_header(16000, 2**31)), ("rate4ghz.au", _au_header(4_000_000_000, 1)),
    ("frames2e36.flac", _flac_claiming(2**36 - 1)),
])
def test_absurd_headers_are_refused_before_any_allocation(name, data, tmp_path):
    import tracemalloc

    path = tmp_path / name
    path.write_bytes(data)
    tracemalloc.start()
    with pytest.raises(AudioError):
        load_audio(path)
    with pytest.raises(AudioError):
        probe(path)
    assert tracemalloc.get_traced_memory()[1] < 64 * 2**20
    tracemalloc.stop()


def test_a_header_shorter_than_the_audio_is_streamed_not_held(tmp_path, tiny_patch_ckpt, monkeypatch):
    """A header that claims 1 s for 4 s of audio (as MP3 estimates can): with stream_seconds 2,
    the whole-file decode stops past 2 s and the file is streamed; the result is the same."""
    from maeast_embed.audio import LongerThan
    from maeast_embed.audio.read import AudioInfo

    write_audio(tmp_path / "in" / "liar.flac", tone(4.0))
    write_audio(tmp_path / "in" / "honest.flac", tone(4.0))
    with pytest.raises(LongerThan):
        load_audio(tmp_path / "in" / "liar.flac", max_seconds=2.0)
    real = decoding_module.probe

    def lying(source, **kwargs):
        info = real(source, **kwargs)
        return AudioInfo(info.path, info.sample_rate, info.channels, 16000) if "liar" in str(source) else info

    monkeypatch.setattr(decoding_module, "probe", lying)
    embedder = Embedder(str(tiny_patch_ckpt), device="cpu", dtype="float32")
    options = ExtractOptions(granularity="clip", stream_seconds=2.0, block_seconds=1.0)
    summary = run_extract([tmp_path / "in"], tmp_path / "out", embedder, options, progress=False)
    assert summary.ok and summary.done == 2
    _, files = read_manifest(tmp_path / "out" / "manifest.jsonl")
    assert [r["duration"] for r in files.values()] == [4.0, 4.0]
    liar, honest = (np.load(tmp_path / "out" / f"{n}.flac.npz")["embedding"] for n in ("liar", "honest"))
    np.testing.assert_allclose(liar, honest, atol=1e-5)


def test_a_decoder_that_never_returns_is_a_failure(tmp_path, tiny_patch_ckpt, monkeypatch):
    for name in ("a.wav", "hang.wav", "z.wav"):
        write_audio(tmp_path / "in" / name, tone(1.0))
    never = threading.Event()
    real = decoding_module.load_audio

    def stuck(source, **kwargs):
        if str(source).endswith("hang.wav"):
            never.wait()  # a decoder stuck in native code: it never returns
        return real(source, **kwargs)

    monkeypatch.setattr(decoding_module, "load_audio", stuck)
    embedder = Embedder(str(tiny_patch_ckpt), device="cpu", dtype="float32")
    for workers in (0, 2):
        out = tmp_path / f"out{workers}"
        started = time.monotonic()
        summary = run_extract([tmp_path / "in"], out, embedder,
                              ExtractOptions(file_timeout=1.0, num_workers=workers), progress=False)
        assert time.monotonic() - started < 30
        assert summary.done == 2 and len(summary.failed) == 1
        name, reason = summary.failed[0]
        assert name.endswith("hang.wav") and "did not finish within 1 s" in reason
    stalled = threading.Event()

    def slow_blocks(path, block_seconds, timeout=None):  # a streamed file that stalls after a block
        from maeast_embed.audio.read import _ahead

        def blocks():
            yield load_audio(path)[:16000]
            stalled.wait()

        return _ahead(blocks(), timeout, str(path))

    import maeast_embed.extract.streaming as streaming

    monkeypatch.setattr(streaming, "iter_audio_blocks", slow_blocks)
    summary = run_extract([tmp_path / "in"], tmp_path / "streamed", embedder,
                          ExtractOptions(file_timeout=1.0, stream_seconds=0.5), progress=False)
    assert summary.done == 0 and len(summary.failed) == 3
    assert all("did not return a block within 1 s" in reason for _, reason in summary.failed)
    never.set()
    stalled.set()


def test_file_timeout_option(tmp_path, tiny_patch_ckpt):
    write_audio(tmp_path / "a.wav", tone(1.0))
    for value in ("auto", "0", "2.5"):
        result = extract(tmp_path / "a.wav", "-o", tmp_path / f"o{value}", "--model", tiny_patch_ckpt,
                         "--file-timeout", value)
        assert result.exit_code == 0, result.output
        headers, _ = read_manifest(tmp_path / f"o{value}" / "manifest.jsonl")
        assert headers[-1]["options"]["file_timeout"] == {"auto": None, "0": 0.0, "2.5": 2.5}[value]
    bad = extract(tmp_path / "a.wav", "-o", tmp_path / "bad", "--model", tiny_patch_ckpt, "--file-timeout=-1")
    assert bad.exit_code != 0 and "--file-timeout must be" in bad.output


# ---------------------------------------------------------------------------- mutation fuzz

FORMATS = ("wav", "flac", "ogg", "mp3", "m4a", "webm")


@pytest.fixture(scope="session")
def seeds(tmp_path_factory) -> dict[str, bytes]:
    """One short clip per format (44.1 kHz stereo where the codec takes it)."""
    root = tmp_path_factory.mktemp("seeds")
    stereo = np.stack([tone(0.6, 330.0, sr=44100), chirp(0.6, sr=44100)], axis=1)
    sf.write(root / "s.wav", stereo, 44100, subtype="PCM_16")
    sf.write(root / "s.flac", stereo, 44100)
    sf.write(root / "s.ogg", stereo, 44100, format="OGG", subtype="VORBIS")
    sf.write(root / "s.mp3", stereo, 44100, format="MP3")
    encode(root / "s.m4a", stereo, 44100, "aac")
    encode(root / "s.webm", stereo[:, :1].repeat(2, 1), 48000, "libopus", container="webm")
    return {fmt: (root / f"s.{fmt}").read_bytes() for fmt in FORMATS}


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One of: bit flips, a byte run overwritten (zeros, 0xff, random), a cut, a chunk repeated
    or removed, a header field set to an extreme, garbage appended."""
    data = bytearray(data)
    kind = rng.integers(7)
    n = len(data)
    if kind == 0:
        for at in rng.integers(0, n, rng.integers(1, 20)):
            data[at] ^= 1 << int(rng.integers(8))
    elif kind == 1:
        at, size = int(rng.integers(0, n)), int(rng.integers(1, 64))
        fill = [bytes(size), b"\xff" * size, rng.bytes(size)][rng.integers(3)]
        data[at : at + size] = fill[: len(data[at : at + size])]
    elif kind == 2:
        data = data[: int(rng.integers(0, n))]
    elif kind == 3:
        at, size = int(rng.integers(0, n)), int(rng.integers(1, 2048))
        data[at:at] = data[at : at + size] * int(rng.integers(1, 4))
    elif kind == 4:
        at, size = int(rng.integers(0, n)), int(rng.integers(1, 4096))
        del data[at : at + size]
    elif kind == 5:
        at = int(rng.integers(0, min(n, 128)))
        data[at : at + 4] = [b"\xff\xff\xff\x7f", b"\0\0\0\0", b"\xff\xff\xff\xff"][rng.integers(3)]
    else:
        data += rng.bytes(int(rng.integers(1, 4096)))
    return bytes(data)


def run_fuzz(tmp_path: Path, seeds: dict[str, bytes], per_format: int, ckpt: Path, seed: int = 20) -> None:
    rng = np.random.default_rng(seed)
    src = tmp_path / "fuzz"
    for fmt in FORMATS:
        (src / fmt).mkdir(parents=True)
        (src / fmt / f"seed.{fmt}").write_bytes(seeds[fmt])
        for i in range(per_format):
            (src / fmt / f"m{i:03d}.{fmt}").write_bytes(mutate(seeds[fmt], rng))
    names = sorted(p.relative_to(src).as_posix() for p in src.rglob("*.*"))
    before = files_under(tmp_path)
    out = tmp_path / "out"
    started = time.monotonic()
    result = extract(src, "-o", out, "--model", ckpt, "--num-workers", "2", "--file-timeout", "60", "-q")
    seconds = time.monotonic() - started
    assert result.exit_code in (0, 1) and not isinstance(result.exception, Exception), result.output
    assert "Traceback" not in result.output
    assert files_under(tmp_path) - before == {f"out/{p}" for p in files_under(out)}
    _, files = read_manifest(out / "manifest.jsonl")
    status = {Path(k).relative_to(src).as_posix(): r["status"] for k, r in files.items()}
    assert sorted(status) == names and set(status.values()) <= {"ok", "failed"}
    ok = {n for n, s in status.items() if s == "ok"}
    assert {p[: -len(".npz")] for p in files_under(out) if p.endswith(".npz")} == ok
    assert {f"{fmt}/seed.{fmt}" for fmt in FORMATS} <= ok
    alone = tmp_path / "alone"
    seeds_only = [src / fmt / f"seed.{fmt}" for fmt in FORMATS]
    assert extract(*seeds_only, "-o", alone, "--model", ckpt, "-q").exit_code == 0
    for fmt in FORMATS:  # the good files' embeddings do not depend on the bad ones beside them
        with np.load(out / fmt / f"seed.{fmt}.npz") as a, np.load(alone / f"seed.{fmt}.npz") as b:
            np.testing.assert_allclose(a["embedding"], b["embedding"], atol=1e-5)

    started_probe = time.monotonic()
    for name in names:  # the header probe: an AudioError or an answer, nothing else
        try:
            probe(src / name)
        except AudioError:
            pass
    report = scan_sources([str(src)], min_samples=400)
    paths = {c.path for c in report.clips}
    assert len(paths) + len(report.unreadable) + report.too_short == len(names)
    dataset = ClipDataset(report.clips, 400)
    for i, clip in enumerate(report.clips):  # the pretraining loader's read: a window or None
        dataset[Window(0, i, 0, clip.num_samples)]
    probed = time.monotonic() - started_probe

    started_command = time.monotonic()  # `maeast-embed probe` (formats as classes, fbank baseline)
    report_dir = tmp_path / "probe"
    args = ["probe", str(src), "-m", "fbank", "--folds", "2", "--l2", "0.01", "-o", str(report_dir), "-q"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    report = json.loads((report_dir / "report.json").read_text())
    skipped = report["models"][0]["skipped"]
    assert report["dataset"]["num_clips"] == len(names) and set(skipped["files"]) <= set(names)
    assert len(skipped["files"]) == min(skipped["count"], 100)  # the report lists the first 100
    assert not {f"{fmt}/seed.{fmt}" for fmt in FORMATS} & set(skipped["files"])
    failed = len(names) - len(ok)
    print(f"fuzz: {len(names)} files ({per_format} mutants + 1 seed per format), {failed} failed in extract "
          f"({seconds:.1f} s), probe + loader {probed:.1f} s, `probe` command {skipped['count']} skipped "
          f"({time.monotonic() - started_command:.1f} s)")
    figures = {"files": len(names), "failed": failed, "seconds": seconds, "probe_skipped": skipped["count"]}
    (tmp_path / "fuzz.json").write_text(json.dumps(figures))


def test_mutation_fuzz(tmp_path, seeds, tiny_patch_ckpt):
    run_fuzz(tmp_path, seeds, 50, tiny_patch_ckpt)


@pytest.mark.slow
def test_mutation_fuzz_long(tmp_path, seeds, tiny_patch_ckpt):
    run_fuzz(tmp_path, seeds, 400, tiny_patch_ckpt, seed=21)


def test_the_probe_cache_name_from_a_hostile_task_name_stays_in_the_cache(tmp_path):
    from types import SimpleNamespace

    from probes.embeddings import cache_path

    spec = SimpleNamespace(model_hash="abc", label="maeast-small")
    options = SimpleNamespace(key=lambda spec: {"pool": "mean"})
    methods = {"audio_fingerprint": lambda self: "f", "__len__": lambda self: 1}
    for name in ("../../../evil", "/etc/evil", "a\x00b", "t" * 400):
        ds = type("DS", (), {"name": name, **methods})()
        path, _ = cache_path(spec, options, ds, tmp_path / "cache")
        assert path.parent == tmp_path / "cache" and len(path.name.encode()) < 255
