"""`maeast-embed s3prl register|unregister|status`: an explicit, reversible opt-in that makes
plain `run_downstream.py -u mae_ast` (or `python -m s3prl.run_downstream`) work in the active
environment, by installing `maeast_embed_s3prl_hook.py` + `maeast_embed_s3prl.pth` into its
site-packages (see `s3prl_sitehook`). Nothing is installed unless you run `register`.
"""

from __future__ import annotations

import importlib.util
import sysconfig
from pathlib import Path

import click

from .atomic import atomic_open

HOOK_MODULE = "maeast_embed_s3prl_hook"
HOOK_FILE = HOOK_MODULE + ".py"
PTH_FILE = "maeast_embed_s3prl.pth"
PTH_LINE = f"import {HOOK_MODULE}; {HOOK_MODULE}.install()\n"
MARKER = "# maeast-embed s3prl site hook"


def default_site_dir() -> Path:
    """site-packages of the running interpreter (the active environment)."""
    return Path(sysconfig.get_paths()["purelib"])


def _write_atomic(path: Path, text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def _ours(path: Path, marker: str) -> bool:
    return path.is_file() and marker in path.read_text(errors="replace")


def register(site_dir: Path) -> list[Path]:
    """Install the hook module, then the .pth that activates it; returns the written paths."""
    if not site_dir.is_dir():
        raise click.ClickException(f"{site_dir} is not a directory")
    source = Path(__file__).with_name("s3prl_sitehook.py").read_text()
    module, pth = site_dir / HOOK_FILE, site_dir / PTH_FILE
    for path, marker in ((module, MARKER), (pth, HOOK_MODULE)):
        if path.exists() and not _ours(path, marker):
            raise click.ClickException(f"{path} exists and was not written by maeast-embed; not touching it")
    _write_atomic(module, source)
    _write_atomic(pth, PTH_LINE)
    return [module, pth]


def unregister(site_dir: Path) -> list[Path]:
    """Remove the .pth first (deactivates), then the module; returns the removed paths."""
    removed = []
    for path, marker in ((site_dir / PTH_FILE, HOOK_MODULE), (site_dir / HOOK_FILE, MARKER)):
        if _ours(path, marker):
            path.unlink()
            removed.append(path)
    for cache in (site_dir / "__pycache__").glob(f"{HOOK_MODULE}.*.pyc"):
        cache.unlink()
    return removed


site_dir_option = click.option(
    "--site-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="site-packages folder to use (default: the running interpreter's).",
)


@click.group("s3prl")
def s3prl() -> None:
    """Opt in (or out) to `-u mae_ast` in plain s3prl `run_downstream` for this environment."""


@s3prl.command("register")
@site_dir_option
def register_command(site_dir: Path | None) -> None:
    """Install a small site-packages hook: when s3prl is imported, apply the s3prl 0.4.18
    run-time shims and add the mae_ast hub entries. Undo with `maeast-embed s3prl unregister`."""
    if importlib.util.find_spec("s3prl") is None:
        raise click.ClickException("s3prl is not installed here: pip install 'maeast-embed[s3prl]'")
    for path in register(site_dir or default_site_dir()):
        click.echo(f"wrote {path}")
    click.echo("plain `python -m s3prl.run_downstream -u mae_ast ...` now works in this environment")


@s3prl.command("unregister")
@site_dir_option
def unregister_command(site_dir: Path | None) -> None:
    """Remove the hook installed by `register` (s3prl is left as it was)."""
    removed = unregister(site_dir or default_site_dir())
    for path in removed:
        click.echo(f"removed {path}")
    if not removed:
        click.echo("no maeast-embed s3prl hook was installed there")


@s3prl.command("status")
@site_dir_option
def status_command(site_dir: Path | None) -> None:
    """Say whether the hook is installed."""
    site_dir = site_dir or default_site_dir()
    installed = _ours(site_dir / PTH_FILE, HOOK_MODULE) and _ours(site_dir / HOOK_FILE, MARKER)
    click.echo(f"{'registered' if installed else 'not registered'} in {site_dir}")
