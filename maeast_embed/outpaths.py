"""Output paths from untrusted names: the one place that turns a file path, list entry, shard
name or shard key into a path under an output folder.

`safe_relative` maps any name to a relative posix path that cannot leave the folder it is
joined to: '..', absolute paths, NUL and control characters, bytes that are not UTF-8, empty
names and components too long for the filesystem are replaced, and a name that had to change
gets a short hash of the original (`~1a2b3c4d5e`), so the mapping is stable and two different
names never meet by sanitising. `output_path` joins it to the folder and proves the result lies
under it, lexically and through the symlinks that exist at the time of the call.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import MAEASTError

# 255 bytes per component, less what the writers add: ".npz" and the atomic writer's
# ".<name>.<random>.tmp" around it
MAX_COMPONENT_BYTES = 200
MAX_PATH_BYTES = 1024
_UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")  # control chars; undecodable bytes


class OutputPathError(MAEASTError, OSError):
    """An output path that would lie outside the output folder."""


@dataclass(frozen=True)
class SafeName:
    """`rel`: a relative posix path safe to join to an output folder; `changed`: why it differs
    from the name it was made from (None when only '.' and empty components were dropped)."""

    rel: str
    changed: str | None = None


def _fit(component: str) -> str:
    data = component.encode("utf-8")
    if len(data) <= MAX_COMPONENT_BYTES:
        return component
    return data[: MAX_COMPONENT_BYTES - 12].decode("utf-8", "ignore")


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:10]


def safe_relative(*parts: str) -> SafeName:
    """The parts ('/'-separated names: a folder-relative path, a shard name, a key) as one safe
    relative path; see the module docstring for what is changed and how."""
    reasons: list[str] = []
    out: list[str] = []
    for part in parts:
        if part.startswith("/"):
            reasons.append("absolute path")
        for component in part.split("/"):
            if component in ("", "."):
                continue
            if component == "..":
                reasons.append("'..' component")
                continue
            clean = _UNSAFE_CHARS.sub("_", component)
            if clean != component:
                reasons.append("control characters or bytes that are not UTF-8")
            fitted = _fit(clean)
            if fitted != clean:
                reasons.append(f"a component longer than {MAX_COMPONENT_BYTES} bytes")
            out.append(fitted)
    if not out:
        reasons.append("empty name")
        out = ["unnamed"]
    if len("/".join(out).encode("utf-8")) > MAX_PATH_BYTES:
        reasons.append(f"longer than {MAX_PATH_BYTES} bytes")
        out = [_fit(out[-1])]
    if not reasons:
        return SafeName("/".join(out))
    out[-1] = f"{out[-1]}~{_digest('/'.join(parts))}"
    unique = list(dict.fromkeys(reasons))
    return SafeName("/".join(out), f"renamed ({', '.join(unique)})")


def safe_filename(name: str) -> str:
    """`name` as one safe file name: as `safe_relative`, with a '/' in it made '_'; a name that
    had to change ends in its own hash, so 'a/b' and 'a_b' stay two files."""
    safe = safe_relative(name.replace("/", "_"))
    if safe.rel == name:
        return name
    stem = safe.rel.rsplit("~", 1)[0] if safe.changed else safe.rel
    return f"{stem}~{_digest(name)}"


def _under(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def confined(output_dir: str | os.PathLike, path: str | os.PathLike) -> Path:
    """`path` (absolute, or relative to `output_dir`) normalised, raising OutputPathError unless
    it lies strictly under `output_dir`, lexically and through the symlinks that exist now."""
    root = os.path.abspath(output_dir)
    full = os.path.normpath(os.path.join(root, path))
    if full == root or not _under(full, root):
        raise OutputPathError(f"output {str(path)!r} would lie outside {root}")
    if not _under(os.path.realpath(os.path.dirname(full)), os.path.realpath(root)):
        raise OutputPathError(f"output {full} would be written outside {root} through a symbolic link")
    return Path(full)


def output_path(output_dir: str | os.PathLike, rel: str, suffix: str = "") -> Path:
    """`output_dir/rel + suffix`, proved by `confined` to lie under `output_dir` (writers check
    again right before writing, once the folders exist)."""
    return confined(output_dir, rel + suffix)
