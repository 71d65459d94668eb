"""WebDataset tar shards as audio input: shard lists, samples, and random access by member index.

A shard is an uncompressed tar; members sharing a key (the name up to the first dot of its
base name, WebDataset's rule) form a sample, in tar order. The audio member is the first whose
extension is an audio extension; `.json` and `.cls` members may carry labels. Every shard gets
a member index (name, data offset, size of each member; built once by walking the tar headers,
cached under $MAEAST_CACHE/shard-index and rebuilt when the shard's size or mtime changes), so
a sample's audio is decoded in place (`ShardSample.audio()` is an `audio.FileRange`) reading
only its own bytes, in any order.

Damage is per sample: a shard cut short yields the samples before the cut, and the sample at
the cut comes with `error` set; a sample without an audio member too.

A shard is read as data, never unpacked: nothing is written from it; members that are not
regular files (links, devices, FIFOs, folders, sparse files), and files that belong to no
sample, are counted in `ShardIndex.ignored`, never followed. Walking the headers keeps one small
record per member, so a shard of 100 000 members is indexed in seconds.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import tarfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomic import atomic_open
from .audio import AudioError, FileRange, is_audio_name

INDEX_FORMAT = "maeast-shard-index/2"
LABEL_SUFFIXES = ("cls", "json")
_GLOB_CHARS = set("*?[")


class ShardError(AudioError):
    """A shard list that names nothing, a file that is not an uncompressed tar, a bad label."""


def is_shard_spec(spec: str | os.PathLike) -> bool:
    """True for what `expand_shards` takes: a .tar path, glob or brace pattern ('::' joins)."""
    return all(part.strip().lower().endswith(".tar") for part in str(spec).split("::"))


def _expand_one(url: str, spec: str) -> list[Path]:
    if _GLOB_CHARS & set(url):
        matches = sorted(glob.glob(os.path.expanduser(url)))
        if not matches:
            raise ShardError(f"no file matches {url!r}" + (f" (from {spec!r})" if url != spec else ""))
        return [Path(m) for m in matches]
    return [Path(url).expanduser()]


def expand_shards(specs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Shard paths named by .tar paths, globs (`shards/*.tar`) and WebDataset brace ranges
    (`train-{000000..000127}.tar`, several joined by '::'), in order, without repeats.
    A pattern that matches nothing, or names shards that do not exist, is a ShardError."""
    from webdataset.shardlists import expand_urls

    specs = [specs] if isinstance(specs, (str, os.PathLike)) else list(specs)
    out: dict[Path, None] = {}
    for spec in map(str, specs):
        paths = [p for url in expand_urls(spec) for p in _expand_one(url, spec)]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            if len(paths) == 1:
                raise ShardError(f"shard not found: {spec}")
            raise ShardError(
                f"{len(missing)} of the {len(paths)} shards named by {spec!r} do not exist "
                f"(first: {missing[0]})"
            )
        out.update(dict.fromkeys(paths))
    return list(out)


@dataclass(frozen=True)
class Member:
    name: str
    offset: int  # of the data, in the tar file
    size: int


@dataclass(frozen=True)
class ShardSample:
    """One sample: its members by WebDataset suffix ("flac", "json", "seg.wav", ...)."""

    shard: str
    key: str
    index: int  # position in the shard (keys may repeat in a badly made shard)
    members: dict[str, Member] = field(default_factory=dict)
    error: str | None = None  # why this sample cannot be used, when it cannot

    @property
    def name(self) -> str:
        return f"{self.shard}:{self.key}"

    @property
    def audio_suffix(self) -> str | None:
        return next((s for s in self.members if is_audio_name(f"x.{s}")), None)

    def audio(self) -> FileRange:
        """The audio member, for `audio.load_audio`/`probe`/`iter_audio_blocks`/`read_window`."""
        if self.error:
            raise ShardError(f"{self.error}: {self.name}")
        member = self.members[self.audio_suffix]
        return FileRange(self.shard, member.offset, member.size, f"{self.shard}:{member.name}")

    def read(self, suffix: str) -> bytes:
        member = self.members[suffix]
        with open(self.shard, "rb") as handle:
            handle.seek(member.offset)
            data = handle.read(member.size)
        if len(data) != member.size:
            raise ShardError(f"cut short: the shard ends inside {member.name}: {self.shard}")
        return data

    def labels(self) -> dict[str, Any]:
        """The label members, decoded: {"cls": int or str, "json": parsed JSON}."""
        out: dict[str, Any] = {}
        for suffix in LABEL_SUFFIXES:
            if suffix not in self.members:
                continue
            try:
                text = self.read(suffix).decode("utf-8")
                out[suffix] = json.loads(text) if suffix == "json" else _class_label(text)
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise ShardError(f"unreadable .{suffix} label ({err}): {self.name}") from err
        return out


def _class_label(text: str) -> int | str:
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        return text


@dataclass(frozen=True)
class ShardIndex:
    """Every member of a shard, grouped into samples; `error` describes damage to the tar."""

    shard: str
    members: list[Member]
    error: str | None = None
    samples: list[ShardSample] = field(default_factory=list)
    ignored: dict[str, int] = field(default_factory=dict)  # members in no sample, by kind


_KINDS = {
    tarfile.SYMTYPE: "symbolic link", tarfile.LNKTYPE: "hard link", tarfile.DIRTYPE: "directory",
    tarfile.FIFOTYPE: "FIFO", tarfile.CHRTYPE: "character device", tarfile.BLKTYPE: "block device",
}


def _kind(info: tarfile.TarInfo) -> str | None:
    """None for a regular file's member, else what it is (an ignored member)."""
    if info.issparse():
        return "sparse file"
    if info.isreg():
        return None
    return _KINDS.get(info.type, "other member type")


def ignored_summary(ignored: dict[str, int]) -> str:
    """'ignored 3 shard members: symbolic link 2, directory 1' ('' when none)."""
    if not ignored:
        return ""
    total = sum(ignored.values())
    counts = ", ".join(f"{k} {n}" for k, n in sorted(ignored.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"ignored {total} shard member{'' if total == 1 else 's'}: {counts}"


def _walk(path: Path) -> tuple[list[Member], str | None, dict[str, int]]:
    """Member table from the tar headers (data is skipped, not read), any damage, and the
    count of ignored members by kind."""
    members: list[Member] = []
    ignored: Counter[str] = Counter()
    size = path.stat().st_size
    with open(path, "rb") as handle:
        try:
            tar = tarfile.open(fileobj=handle, mode="r:")
        except tarfile.ReadError as err:
            raise ShardError(f"not an uncompressed tar file ({err}): {path}") from err
        error = None
        last = -1
        try:
            for info in tar:
                tar.members = []  # keep memory flat on big shards
                if info.offset <= last or info.size < 0:  # a crafted size leading back: stop
                    error = f"the shard is damaged at byte {info.offset} (a member of size {info.size})"
                    break
                last = info.offset
                kind = _kind(info)
                if kind is None:
                    members.append(Member(info.name, info.offset_data, info.size))
                else:
                    ignored[kind] += 1
        except tarfile.TarError as err:
            error = f"the shard is cut short after this sample ({err}): it may miss members"
        if error is None:  # tarfile stops silently at a damaged or missing header
            handle.seek(tar.offset)
            tail = handle.read(2 * tarfile.BLOCKSIZE)
            if len(tail) < 2 * tarfile.BLOCKSIZE or any(tail):
                error = (f"the shard is damaged or cut short at byte {tar.offset} of {size}, after this "
                         "sample (no end-of-archive marker): it may miss members")
    if members and members[-1].offset + members[-1].size > size:
        last_member = members[-1]
        error = (f"cut short: the shard ends inside {last_member.name} "
                 f"({max(0, size - last_member.offset)} of {last_member.size} bytes)")
    return members, error, dict(ignored)


def _group(shard: str, members: list[Member], error: str | None, ignored: Counter[str]) -> list[ShardSample]:
    """Samples from the member table; members that belong to none are counted in `ignored`."""
    from webdataset.tariterators import base_plus_ext, meta_prefix, meta_suffix

    groups: list[tuple[str, dict[str, Member], list[str]]] = []
    for member in members:
        base = member.name.rsplit("/", 1)[-1]
        if base.startswith(meta_prefix) and base.endswith(meta_suffix):
            ignored["WebDataset metadata"] += 1
            continue
        key, suffix = base_plus_ext(member.name)
        if key is None:
            ignored["file without a key or extension"] += 1
            continue
        if not groups or groups[-1][0] != key:
            groups.append((key, {}, []))
        _, found, problems = groups[-1]
        suffix = suffix.lower()
        if suffix in found:
            problems.append(f"duplicate member .{suffix}")
        found[suffix] = member
    samples = []
    for index, (key, found, problems) in enumerate(groups):
        if not any(is_audio_name(f"x.{s}") for s in found):
            problems.append(f"no audio member (members: {', '.join('.' + s for s in found)})")
        samples.append(ShardSample(shard, key, index, found, "; ".join(problems) or None))
    if error and samples:  # the sample at the damage may miss members
        last = samples[-1]
        samples[-1] = ShardSample(shard, last.key, last.index, last.members, error)
    return samples


def _cache_file(path: Path) -> Path:
    from .checkpoint import cache_dir

    digest = hashlib.sha256(str(path).encode()).hexdigest()[:20]
    return cache_dir() / "shard-index" / f"{path.name[:100]}-{digest}.json"


def index_shard(path: str | os.PathLike, *, cache: bool = True) -> ShardIndex:
    """The member index of one shard, from the cache when the shard has not changed since."""
    path = Path(path).resolve()
    if not path.is_file():
        raise ShardError(f"shard not found: {path}")
    stat = path.stat()
    stamp = {"format": INDEX_FORMAT, "shard": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    cache_file = _cache_file(path)
    cached = _read_cache(cache_file, stamp) if cache else None
    if cached is not None:
        members, error, ignored = cached
    else:
        members, error, ignored = _walk(path)
        if cache:
            _write_cache(cache_file, stamp, members, error, ignored)
    counts = Counter(ignored)
    samples = _group(str(path), members, error, counts)
    return ShardIndex(str(path), members, error, samples, dict(counts))


def _read_cache(
    cache_file: Path, stamp: dict[str, Any]
) -> tuple[list[Member], str | None, dict[str, int]] | None:
    try:
        data = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or any(data.get(k) != v for k, v in stamp.items()):
        return None
    try:
        members = [Member(str(n), int(o), int(s)) for n, o, s in data["members"]]
        return members, data.get("error"), {str(k): int(v) for k, v in data.get("ignored", {}).items()}
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


def _write_cache(cache_file: Path, stamp: dict[str, Any], members: list[Member], error: str | None,
                 ignored: dict[str, int]) -> None:
    record = {**stamp, "error": error, "ignored": ignored,
              "members": [[m.name, m.offset, m.size] for m in members]}
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(cache_file, "w") as handle:
            json.dump(record, handle)
    except OSError:  # a read-only cache only costs the walk next time
        pass


def iter_samples(specs: str | os.PathLike | Sequence[str | os.PathLike]) -> Iterator[ShardSample]:
    """Every sample of every shard named by `specs` (see `expand_shards`), shard by shard in
    tar order; broken samples come too, with `error` set, and the next ones follow."""
    for path in expand_shards(specs):
        yield from index_shard(path).samples
