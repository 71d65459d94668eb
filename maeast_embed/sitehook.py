"""Explicit, reversible site-packages hooks for consumers' third-party tools.

A consumer (the s3prl upstream, the HEAR module) describes what must happen when a tool is
imported; `register` copies `sitehook_runtime.py` into site-packages as
`maeast_embed_<name>_hook.py` with that table and adds `maeast_embed_<name>.pth`, which
activates it in every interpreter of the environment. Nothing is installed without `register`;
`unregister` removes exactly what it wrote, and files not written by maeast-embed are never
touched. The core knows no tool: the tables live with their consumers.
"""

from __future__ import annotations

import sysconfig
from dataclasses import dataclass
from pathlib import Path

import click

from .atomic import atomic_open

MARKER = "# maeast-embed site hook"


def default_site_dir() -> Path:
    """site-packages of the running interpreter (the active environment)."""
    return Path(sysconfig.get_paths()["purelib"])


def _ours(path: Path, marker: str) -> bool:
    return path.is_file() and marker in path.read_text(errors="replace")


@dataclass(frozen=True)
class SiteHook:
    """`actions` maps a module name to [(when, "package.module:function")], when being
    "before" (called with no arguments before the module's code runs) or "after" (called
    with the module once it ran)."""

    name: str
    actions: dict[str, list[tuple[str, str]]]

    @property
    def module(self) -> str:
        return f"maeast_embed_{self.name}_hook"

    def files(self, site_dir: Path) -> tuple[Path, Path]:
        """(the .pth, the hook module) in `site_dir`."""
        return site_dir / f"maeast_embed_{self.name}.pth", site_dir / f"{self.module}.py"

    def source(self) -> str:
        runtime = Path(__file__).with_name("sitehook_runtime.py").read_text()
        actions = {module: [list(a) for a in todo] for module, todo in self.actions.items()}
        return f"{runtime}\n\nNAME = {self.name!r}\nACTIONS = {actions!r}\n"

    def register(self, site_dir: Path) -> list[Path]:
        """Write the hook module, then the .pth that activates it; returns the written paths."""
        if not site_dir.is_dir():
            raise click.ClickException(f"{site_dir} is not a directory")
        pth, module = self.files(site_dir)
        for path, marker in ((module, MARKER), (pth, self.module)):
            if path.exists() and not _ours(path, marker):
                raise click.ClickException(f"{path} exists and was not written by maeast-embed; leaving it")
        activate = f"import {self.module}; {self.module}.install()\n"
        for path, text in ((module, self.source()), (pth, activate)):
            with atomic_open(path, "w") as handle:
                handle.write(text)
        return [module, pth]

    def unregister(self, site_dir: Path) -> list[Path]:
        """Remove the .pth first (deactivates), then the module; returns the removed paths."""
        pth, module = self.files(site_dir)
        removed = []
        for path, marker in ((pth, self.module), (module, MARKER)):
            if _ours(path, marker):
                path.unlink()
                removed.append(path)
        for cache in (site_dir / "__pycache__").glob(f"{self.module}.*.pyc"):
            cache.unlink()
        return removed

    def installed(self, site_dir: Path) -> bool:
        pth, module = self.files(site_dir)
        return _ours(pth, self.module) and _ours(module, MARKER)

    def current(self, site_dir: Path) -> bool:
        """Whether the installed hook is this version's (`register` again updates it)."""
        return self.installed(site_dir) and self.files(site_dir)[1].read_text() == self.source()


def add_hook_commands(group: click.Group, hook: SiteHook, *, needs: str, done: str) -> None:
    """Add `register`, `unregister` and `status` for `hook` to a consumer's click group.

    `needs` is the top-level module the hook serves (register refuses when it is missing);
    `done` is what register tells the user now works.
    """
    site_dir_option = click.option(
        "--site-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="site-packages folder to use (default: the running interpreter's).",
    )

    @group.command("register")
    @site_dir_option
    def register(site_dir: Path | None) -> None:
        """Install the opt-in site-packages hook (undo with `unregister`)."""
        import importlib.util

        if importlib.util.find_spec(needs) is None:
            raise click.ClickException(f"{needs} is not installed in this environment")
        for path in hook.register(site_dir or default_site_dir()):
            click.echo(f"wrote {path}")
        click.echo(done)

    @group.command("unregister")
    @site_dir_option
    def unregister(site_dir: Path | None) -> None:
        """Remove the hook installed by `register` (the tool itself is left as it was)."""
        removed = hook.unregister(site_dir or default_site_dir())
        for path in removed:
            click.echo(f"removed {path}")
        if not removed:
            click.echo(f"no maeast-embed {hook.name} hook was installed there")

    @group.command("status")
    @site_dir_option
    def status(site_dir: Path | None) -> None:
        """Say whether the hook is installed, and whether it is this version's."""
        site_dir = site_dir or default_site_dir()
        if not hook.installed(site_dir):
            click.echo(f"not registered in {site_dir}")
        elif not hook.current(site_dir):
            click.echo(f"registered in {site_dir} by another version of maeast-embed: run "
                       f"`maeast-embed {group.name} register` again to update it")
        else:
            click.echo(f"registered in {site_dir}")
