"""Output files: atomic uncompressed .npz writing and the on-disk spool of long frame outputs."""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import IO

import numpy as np
from torch import Tensor

from ..atomic import atomic_open
from ..outpaths import confined

TMP_SUFFIX = ".tmp"


class FrameSpool:
    """Frame features of a long file kept on disk (one temporary file per layer) until written."""

    def __init__(self, directory: Path, layers: int, dim: int, keep_layer_axis: bool) -> None:
        self.files = [tempfile.TemporaryFile(dir=directory) for _ in range(layers)]
        self.dim, self.steps, self.keep_layer_axis = dim, 0, keep_layer_axis

    def add(self, features: Tensor) -> None:  # [layers, t, dim]
        for handle, layer in zip(self.files, features.float().numpy(), strict=True):
            handle.write(np.ascontiguousarray(layer).tobytes())
        self.steps += features.shape[1]

    @property
    def shape(self) -> tuple[int, ...]:
        inner = (self.steps, self.dim)
        return (len(self.files), *inner) if self.keep_layer_axis else inner

    def write_npy(self, out: IO[bytes], dtype: str = "float32") -> None:
        header = {
            "descr": np.lib.format.dtype_to_descr(np.dtype(dtype).newbyteorder("<")),
            "fortran_order": False,
            "shape": self.shape,
        }
        np.lib.format.write_array_header_1_0(out, header)
        for handle in self.files:
            handle.seek(0)
            if dtype == "float32":
                shutil.copyfileobj(handle, out, 1 << 22)
                continue
            while block := handle.read(1 << 22):
                out.write(np.frombuffer(block, "<f4").astype(dtype).tobytes())

    def array(self, dtype: str = "float32") -> np.ndarray:
        """The whole output in memory (for the formats that store it in one row)."""
        layers = []
        for handle in self.files:
            handle.seek(0)
            layers.append(np.frombuffer(handle.read(), "<f4").astype(dtype).reshape(self.steps, self.dim))
        return np.stack(layers) if self.keep_layer_axis else layers[0]

    def close(self) -> None:
        for handle in self.files:
            handle.close()


def write_npz_atomic(
    path: Path, arrays: dict[str, np.ndarray | FrameSpool], root: Path | None = None,
    spool_dtype: str = "float32",
) -> None:
    """Write an uncompressed .npz (np.load reads it) to a temporary name unique to this write
    (`.<name>.<random>.tmp`), fsync, rename. With `root`, first prove (`outpaths.confined`)
    that `path` lies under it (an OutputPathError, an OSError, if not). A FrameSpool is stored
    as `spool_dtype`."""
    if root is not None:
        path = confined(root, path)
    with atomic_open(path, "wb", suffix=TMP_SUFFIX) as handle:
        with zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            for name, value in arrays.items():
                with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                    if isinstance(value, FrameSpool):
                        value.write_npy(member, spool_dtype)
                    else:
                        np.lib.format.write_array(member, np.asarray(value), allow_pickle=False)


def remove_leftovers(outputs: list[Path]) -> int:
    """Delete the temporary files killed runs left for these outputs (one listing per folder);
    returns how many."""
    by_folder: dict[Path, set[str]] = {}
    for out in outputs:
        by_folder.setdefault(out.parent, set()).add(out.name)
    removed = 0
    for folder, names in by_folder.items():
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder):
            name = entry.name  # .<output name>.<random>.tmp
            if name.startswith(".") and name.endswith(TMP_SUFFIX):
                if name[1 : -len(TMP_SUFFIX)].rpartition(".")[0] in names:
                    Path(entry.path).unlink(missing_ok=True)
                    removed += 1
    return removed

