"""WebDataset shards: shard lists, samples as WebDataset groups them, in-place decoding through
the cached member index, and damaged shards (cut short, non-audio members, no audio)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import webdataset as wds
from helpers import chirp, noise, tone
from media import encode

from maeast_embed import shards
from maeast_embed.audio import load_audio, probe, read_window
from maeast_embed.errors import AudioError
from maeast_embed.shards import ShardError, expand_shards, index_shard, is_shard_spec, iter_samples

SR = 16000


def flac_bytes(wave: np.ndarray, rate: int = SR) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, rate, format="FLAC")
    return buffer.getvalue()


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("MAEAST_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture()
def shard_dir(tmp_path, cache) -> Path:
    """Three shards of 3 samples: FLAC (with .cls and .json labels) and one AAC .m4a."""
    root = tmp_path / "shards"
    root.mkdir()
    m4a = encode(tmp_path / "x.m4a", tone(1.0, 330.0, sr=44100), 44100, "aac").read_bytes()
    with wds.ShardWriter(str(root / "train-%06d.tar"), maxcount=3, verbose=0) as sink:
        for i in range(9):
            sample = {"__key__": f"clip{i:03d}", "cls": i % 4, "json": {"label": f"word{i}", "i": i}}
            if i == 4:
                sample["m4a"] = m4a
            else:
                sample["flac"] = flac_bytes((noise if i % 2 else tone)(1.0 + 0.1 * i, seed=i))
            sink.write(sample)
    return root


def test_expand_shard_lists(shard_dir):
    names = [p.name for p in expand_shards(str(shard_dir / "train-{000000..000002}.tar"))]
    assert names == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    assert expand_shards(str(shard_dir / "*.tar")) == expand_shards(shard_dir / "train-{000000..000002}.tar")
    joined = f"{shard_dir}/train-000002.tar::{shard_dir}/train-00000[01].tar"
    assert [p.name for p in expand_shards(joined)] == [names[2], names[0], names[1]]
    assert is_shard_spec(joined) and is_shard_spec("a/b-{0..9}.tar") and not is_shard_spec("a/b.flac")
    with pytest.raises(ShardError, match=r"2 of the 5 shards named by .*\{0+..0+4\}.tar.* do not exist"):
        expand_shards(str(shard_dir / "train-{000000..000004}.tar"))
    with pytest.raises(ShardError, match="no file matches .*valid-"):
        expand_shards(str(shard_dir / "valid-*.tar"))
    with pytest.raises(ShardError, match="shard not found"):
        expand_shards(str(shard_dir / "test.tar"))


def test_samples_are_webdataset_samples_and_decode_in_place(shard_dir):
    spec = str(shard_dir / "train-{000000..000002}.tar")
    ours = list(iter_samples(spec))
    theirs = list(wds.WebDataset(spec, shardshuffle=False))
    assert [s.key for s in ours] == [t["__key__"] for t in theirs] == [f"clip{i:03d}" for i in range(9)]
    for sample, reference in zip(ours, theirs, strict=True):
        assert sample.error is None
        assert set(sample.members) == {k for k in reference if not k.startswith("__")}
        for suffix in sample.members:
            assert sample.read(suffix) == reference[suffix]
        audio = sample.audio_suffix
        wave = load_audio(sample.audio())
        assert torch.equal(wave, load_audio(_bytes_source(reference, audio)))
        labels = sample.labels()
        i = int(sample.key[-3:])
        assert labels == {"cls": i % 4, "json": {"label": f"word{i}", "i": i}}
    m4a = ours[4]
    assert m4a.audio_suffix == "m4a" and probe(m4a.audio()).backend == "ffmpeg"
    assert m4a.audio().name.endswith("train-000001.tar:clip004.m4a")
    window = read_window(ours[7].audio(), 3000, 8000)
    assert torch.equal(window, load_audio(ours[7].audio())[3000:11000])


def _bytes_source(sample: dict, suffix: str):
    from maeast_embed.audio import EncodedAudio

    return EncodedAudio(f"{sample['__key__']}.{suffix}", sample[suffix])


def test_decoding_a_member_reads_only_its_bytes(shard_dir, tmp_path):
    sample = index_shard(shard_dir / "train-000000.tar").samples[1]
    member = sample.members["flac"]
    expected = load_audio(sample.audio())
    data = bytearray((shard_dir / "train-000000.tar").read_bytes())
    damaged = bytearray(len(data))  # everything outside the member zeroed
    damaged[member.offset : member.offset + member.size] = data[member.offset : member.offset + member.size]
    copy = tmp_path / "zeros.tar"
    copy.write_bytes(bytes(damaged))
    from maeast_embed.audio import FileRange

    in_place = FileRange(str(copy), member.offset, member.size, "zeros.tar:x.flac")
    assert torch.equal(load_audio(in_place), expected)


def test_member_index_is_cached_and_rebuilt_when_the_shard_changes(shard_dir, cache, monkeypatch):
    path = shard_dir / "train-000001.tar"
    first = index_shard(path)
    assert len(list((cache / "shard-index").glob("train-000001.tar-*.json"))) == 1
    walks = []
    original = shards._walk
    monkeypatch.setattr(shards, "_walk", lambda p: walks.append(p) or original(p))
    again = index_shard(path)
    assert walks == [] and again == first
    with wds.TarWriter(str(path)) as sink:  # the shard is rewritten: other members, other offsets
        sink.write({"__key__": "new", "flac": flac_bytes(chirp(0.5)), "txt": "hello"})
    os.utime(path, ns=(1, 1))
    rebuilt = index_shard(path)
    assert len(walks) == 1 and [s.key for s in rebuilt.samples] == ["new"]
    assert set(rebuilt.samples[0].members) == {"flac", "txt"} and rebuilt.samples[0].labels() == {}


def test_shard_cut_in_the_middle_yields_the_samples_before_the_cut(shard_dir):
    whole = shard_dir / "train-000000.tar"
    samples = index_shard(whole).samples
    cut_in = samples[1].members["flac"]
    data = whole.read_bytes()
    (shard_dir / "train-000001.tar").write_bytes(data[: cut_in.offset + cut_in.size // 2])
    spec = str(shard_dir / "train-{000000..000002}.tar")
    found = list(iter_samples(spec))
    assert [s.key for s in found] == ["clip000", "clip001", "clip002", "clip000", "clip001", *[
        f"clip{i:03d}" for i in range(6, 9)]]
    broken = [s for s in found if s.error]
    assert len(broken) == 1 and broken[0].shard.endswith("train-000001.tar") and broken[0].key == "clip001"
    assert "cut short: the shard ends inside clip001.flac" in broken[0].error
    with pytest.raises(ShardError, match="cut short"):
        broken[0].audio()
    assert torch.equal(load_audio(found[3].audio()), load_audio(samples[0].audio()))  # before the cut
    # cut between two members: the sample at the end may miss some, so it is reported too
    (shard_dir / "train-000002.tar").write_bytes(data[: samples[2].members["cls"].offset - 512])
    tail = index_shard(shard_dir / "train-000002.tar").samples
    assert [s.key for s in tail] == ["clip000", "clip001"]
    assert tail[0].error is None and "cut short after this sample" in tail[1].error
    header = samples[2].members["cls"].offset - 512
    (shard_dir / "train-000002.tar").write_bytes(data[: header + 100])  # inside a header
    tail = index_shard(shard_dir / "train-000002.tar").samples
    assert [s.key for s in tail] == ["clip000", "clip001"] and "truncated header" in tail[1].error
    for block in (os.urandom(512), bytes(512)):  # a damaged header; a zero block in the middle
        (shard_dir / "train-000002.tar").write_bytes(data[:header] + block + data[header + 512 :])
        tail = index_shard(shard_dir / "train-000002.tar").samples
        assert [s.key for s in tail] == ["clip000", "clip001"] and "it may miss members" in tail[1].error


def test_members_that_are_not_audio_and_samples_without_audio(tmp_path, cache):
    path = tmp_path / "odd.tar"
    with wds.TarWriter(str(path)) as sink:
        sink.write({"__key__": "good", "wav": flac_bytes(tone(0.5))})  # FLAC bytes under .wav: fine
        sink.write({"__key__": "text", "flac": b"this is not audio at all\n" * 20, "cls": 1})
        sink.write({"__key__": "nolabel", "json": {"a": 1}, "txt": "x"})
        sink.write({"__key__": "badjson", "flac": flac_bytes(tone(0.5)), "json": b"{not json"})
    samples = index_shard(path).samples
    assert [s.error is None for s in samples] == [True, True, False, True]
    assert samples[2].error == "no audio member (members: .json, .txt)"
    assert load_audio(samples[0].audio()).numel() == 8000
    with pytest.raises(AudioError, match=r"not a readable audio file .*odd.tar:text.flac"):
        load_audio(samples[1].audio())
    with pytest.raises(ShardError, match="unreadable .json label"):
        samples[3].labels()


def test_files_that_are_not_uncompressed_tars(tmp_path, cache):
    gz = tmp_path / "packed.tar"
    with tarfile.open(gz, "w:gz") as tar:
        info = tarfile.TarInfo("a.flac")
        payload = flac_bytes(tone(0.2))
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(ShardError, match="not an uncompressed tar file"):
        index_shard(gz)
    junk = tmp_path / "junk.tar"
    junk.write_bytes(os.urandom(3000))
    with pytest.raises(ShardError, match="not an uncompressed tar file"):
        list(iter_samples(str(junk)))


def test_members_that_are_not_files_are_counted_and_cached(tmp_path, cache, monkeypatch):
    path = tmp_path / "mixed.tar"
    with tarfile.open(path, "w") as tar:
        for name, kind in (("a.flac", tarfile.REGTYPE), ("link.flac", tarfile.SYMTYPE),
                           ("dir", tarfile.DIRTYPE), ("pipe.flac", tarfile.FIFOTYPE)):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, "a.flac" if kind == tarfile.SYMTYPE else ""
            payload = flac_bytes(tone(0.3)) if kind == tarfile.REGTYPE else b""
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    first = index_shard(path)
    assert [s.key for s in first.samples] == ["a"] and first.samples[0].error is None
    assert first.ignored == {"symbolic link": 1, "directory": 1, "FIFO": 1}
    summary = "ignored 3 shard members: FIFO 1, directory 1, symbolic link 1"
    assert shards.ignored_summary(first.ignored) == summary
    monkeypatch.setattr(shards, "_walk", lambda p: pytest.fail("the cached index was not used"))
    assert index_shard(path) == first
