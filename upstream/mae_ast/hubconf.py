"""s3prl hub entries for MAE-AST. s3prl calls each as `entry(ckpt=-k, model_config=-g, refresh=-r)`.

- `mae_ast`: `-k` is a local file, an http(s) URL, or a registered name
  (`mae-ast-patch`, `mae-ast-frame`: the official checkpoints, downloaded once and cached;
  `maeast-small`: the small model shipped in the package, offline).
- `mae_ast_local` (`-k PATH`), `mae_ast_url` (`-k URL`).
- `mae_ast_patch`, `mae_ast_frame`: the official checkpoints, no `-k`.
"""

from __future__ import annotations

from pathlib import Path

from maeast_embed.checkpoint import PACKAGED, REGISTRY, cache_dir, download
from maeast_embed.errors import CheckpointError, ConfigError

from .expert import UpstreamExpert

_NAMES = ", ".join(sorted([*PACKAGED, *REGISTRY]))


def _download(url: str, refresh: bool) -> str:
    dest = cache_dir() / url.rstrip("/").rsplit("/", 1)[-1]
    if refresh or not dest.is_file():
        download(url, dest)
    return str(dest)


def mae_ast(ckpt: str | None = None, model_config: str | None = None, refresh: bool = False, **kwargs):
    """MAE-AST from `-k`: a checkpoint file, an http(s) URL, or a registered name."""
    if not ckpt:
        raise ConfigError(
            "-u mae_ast needs -k: a checkpoint file (official fairseq layout or maeast-embed's), "
            f"an http(s) URL, or a registered name ({_NAMES})"
        )
    ckpt = str(ckpt)
    if ckpt.startswith(("http://", "https://")):
        return mae_ast_url(ckpt, refresh=refresh, **kwargs)
    if ckpt in REGISTRY:
        return mae_ast_url(REGISTRY[ckpt], refresh=refresh, **kwargs)
    if ckpt in PACKAGED:
        return UpstreamExpert(ckpt)
    return mae_ast_local(ckpt, **kwargs)


def mae_ast_local(ckpt: str | None = None, model_config: str | None = None, refresh: bool = False, **kwargs):
    """MAE-AST from a local checkpoint file (`-k PATH`)."""
    if not ckpt:
        raise ConfigError("-u mae_ast_local needs -k PATH (a local MAE-AST checkpoint file)")
    if not Path(ckpt).expanduser().is_file():
        raise CheckpointError(f"-k {ckpt}: no such checkpoint file")
    return UpstreamExpert(str(Path(ckpt).expanduser()))


def mae_ast_url(ckpt: str | None = None, model_config: str | None = None, refresh: bool = False, **kwargs):
    """MAE-AST from a URL (`-k URL`), downloaded once into the maeast-embed cache."""
    if not ckpt or not str(ckpt).startswith(("http://", "https://")):
        raise ConfigError(f"-u mae_ast_url needs -k URL (http or https), got {ckpt!r}")
    return UpstreamExpert(_download(str(ckpt), refresh))


def _official(name: str, entry: str, ckpt: str | None, refresh: bool, kwargs: dict):
    if ckpt:
        raise ConfigError(f"-u {entry} loads the official {name} checkpoint; for -k {ckpt} use -u mae_ast")
    return mae_ast_url(REGISTRY[name], refresh=refresh, **kwargs)


def mae_ast_patch(ckpt: str | None = None, model_config: str | None = None, refresh: bool = False, **kwargs):
    """The official MAE-AST Patch model (12 layers, chunked masking)."""
    return _official("mae-ast-patch", "mae_ast_patch", ckpt, refresh, kwargs)


def mae_ast_frame(ckpt: str | None = None, model_config: str | None = None, refresh: bool = False, **kwargs):
    """The official MAE-AST Frame model (12 layers, random masking)."""
    return _official("mae-ast-frame", "mae_ast_frame", ckpt, refresh, kwargs)


ENTRIES = {
    fn.__name__: fn for fn in (mae_ast, mae_ast_local, mae_ast_url, mae_ast_patch, mae_ast_frame)
}


def register(hub) -> list[str]:
    """Set the entries as attributes of `s3prl.hub` (so `-u mae_ast` resolves); returns their names.

    This replaces s3prl's own `mae_ast_local/_url/_patch/_frame` (its port of the same model)
    in this process; that port stays importable as `s3prl.upstream.mae_ast`.
    """
    for name, entry in ENTRIES.items():
        setattr(hub, name, entry)
    return list(ENTRIES)
