"""Finding audio: folder scans that count what they leave out, list files, common roots."""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import AudioError
from .formats import is_audio_name

HIDDEN = "hidden"  # key of hidden files in FolderScan.ignored
NO_EXTENSION = "no extension"


@dataclass(frozen=True)
class FolderScan:
    """Audio files under a folder (sorted) and what was not treated as audio.

    `ignored` counts files per lower-case extension (".txt"), with "hidden" for dot-files and
    "no extension"; `hidden_dirs` counts dot-folders and `linked_dirs` symbolic links to
    folders, neither of them entered (a link could lead anywhere, or in a circle).
    """

    files: list[Path]
    ignored: dict[str, int] = field(default_factory=dict)
    hidden_dirs: int = 0
    linked_dirs: int = 0

    @property
    def ignored_count(self) -> int:
        return sum(self.ignored.values())

    def summary(self) -> str:
        """'ignored 12 files: .txt 10, .json 2' (most frequent first; '' when nothing was)."""
        parts = []
        if self.ignored:
            counts = sorted(self.ignored.items(), key=lambda kv: (-kv[1], kv[0]))
            noun = "file" if self.ignored_count == 1 else "files"
            parts.append(f"ignored {self.ignored_count} {noun}: " + ", ".join(f"{k} {n}" for k, n in counts))
        if self.hidden_dirs:
            noun = "folder" if self.hidden_dirs == 1 else "folders"
            parts.append(f"skipped {self.hidden_dirs} hidden {noun}")
        if self.linked_dirs:
            noun = "link" if self.linked_dirs == 1 else "links"
            parts.append(f"skipped {self.linked_dirs} symbolic {noun} to folders")
        return "; ".join(parts)


def _ignored_key(name: str) -> str:
    if name.startswith("."):
        return HIDDEN
    return Path(name).suffix.lower() or NO_EXTENSION


def scan_folder(folder: str | os.PathLike) -> FolderScan:
    """Audio files under a folder, recursively, sorted, with counts of everything else.
    Hidden files and folders (names starting with '.') are never treated as audio; links to
    folders are not followed (counted in `linked_dirs`)."""
    folder = Path(folder)
    found: list[Path] = []
    ignored: Counter[str] = Counter()
    hidden_dirs = linked_dirs = 0
    for root, dirs, files in os.walk(folder):
        hidden_dirs += sum(d.startswith(".") for d in dirs)
        visible = [d for d in dirs if not d.startswith(".")]
        links = {d for d in visible if os.path.islink(os.path.join(root, d))}
        linked_dirs += len(links)
        dirs[:] = sorted(d for d in visible if d not in links)
        for name in files:
            if is_audio_name(name):
                found.append(Path(root) / name)
            else:
                ignored[_ignored_key(name)] += 1
    return FolderScan(sorted(found), dict(ignored), hidden_dirs, linked_dirs)


def find_audio(folder: str | os.PathLike) -> list[Path]:
    """Audio files under a folder, recursively, sorted; hidden files and folders are skipped
    (`scan_folder` also says what was left out)."""
    return scan_folder(folder).files


def read_path_list(list_file: str | os.PathLike) -> tuple[Path, list[str]]:
    """Paths named in a list file -> (root they are relative to, entries as written).

    .txt/.lst/.list: one path per line ('#' comments). .csv: the column named path, file,
    filename or audio if the first row names one, else the first column. .tsv: a fairseq
    manifest (first line the root folder, then `relative/path<TAB>samples`) or first column.
    Relative entries are relative to the list file's folder (or the manifest root).
    """
    list_file = Path(list_file)
    root = list_file.parent
    try:
        text = list_file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise AudioError(f"cannot read the list file {list_file}: {err}") from err
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    suffix = list_file.suffix.lower()
    if suffix == ".csv":
        rows = [row for row in csv.reader(lines) if row]
        column = 0
        if rows:
            header = [cell.strip().lower() for cell in rows[0]]
            named = [i for i, cell in enumerate(header) if cell in ("path", "file", "filename", "audio")]
            if named:
                column, rows = named[0], rows[1:]
        entries = [row[column].strip() for row in rows if len(row) > column]
    elif suffix == ".tsv":
        if lines and "\t" not in lines[0] and (list_file.parent / lines[0].strip()).is_dir():
            root, lines = list_file.parent / lines[0].strip(), lines[1:]
        entries = [line.split("\t")[0].strip() for line in lines]
    else:
        entries = [line.strip() for line in lines]
    return root, [entry for entry in entries if entry]


def common_root(paths: Iterable[Path]) -> Path:
    """Deepest folder that contains every path (relative ones are taken from the current folder)."""
    parents = [os.path.abspath(p.parent) for p in paths]
    return Path(os.path.commonpath(parents)) if parents else Path(".")
