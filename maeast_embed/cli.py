"""The `maeast-embed` command line: thin click commands over the library.

The core's own commands are listed in `CORE`; consumers (the HEAR module, the probes, the s3prl
upstream) add theirs through the `maeast_embed.commands` entry-point group, so the core never
imports them. Commands are imported only when used (or listed by --help), and no command module
imports torch at import time, so `maeast-embed --help` stays fast.
"""

from __future__ import annotations

import json
from importlib import import_module
from importlib.metadata import entry_points

import click

from . import __version__
from .cli_common import trust_option
from .errors import MAEASTError

ENTRY_POINT_GROUP = "maeast_embed.commands"
CORE = {
    "convert": "maeast_embed.cli_convert:convert",
    "doctor": "maeast_embed.cli_doctor:doctor",
    "export": "maeast_embed.cli_export:export",
    "extract": "maeast_embed.cli_extract:extract",
    "pretrain": "maeast_embed.pretrain.cli:pretrain",
    "status": "maeast_embed.cli_status:status",
}


def _unavailable(name: str, origin: str, err: Exception) -> click.Command:
    """A stand-in for a plugin command that cannot be imported: listed, and it says why."""
    reason = f"{type(err).__name__}: {err}"

    def fail() -> None:
        raise click.ClickException(f"the '{name}' command ({origin}) cannot be loaded: {reason}")

    return click.Command(name, callback=fail, help=f"(unavailable: {reason})", add_help_option=False)


class CommandGroup(click.Group):
    """Core commands plus those of the installed consumers, each imported on first use."""

    def _sources(self) -> dict[str, str]:
        plugins = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
        return {**plugins, **CORE}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self._sources()})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.commands:
            return self.commands[name]
        origin = self._sources().get(name)
        if origin is None:
            return None
        module, _, attr = origin.partition(":")
        try:
            command = getattr(import_module(module), attr)
        except Exception as err:  # noqa: BLE001 - a broken plugin must not break the other commands
            return _unavailable(name, origin, err)
        self.add_command(command, name)
        return command


@click.group(cls=CommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="maeast-embed")
def main() -> None:
    """MAE-AST toolkit: inspect checkpoints, extract embeddings, pretrain, evaluate."""


@main.command()
@click.argument("checkpoint")
@trust_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def info(checkpoint: str, trust_checkpoint: bool, as_json: bool) -> None:
    """Print a checkpoint's variant, config and parameter counts.

    CHECKPOINT is a file (official fairseq layout or this project's) or a registered name.
    """
    from .checkpoint import load_model

    try:
        model = load_model(checkpoint, trust_checkpoint=trust_checkpoint)
    except MAEASTError as err:
        raise click.ClickException(str(err)) from err
    cfg = model.cfg
    encoder_path = sum(
        p.numel()
        for name, p in model.named_parameters()
        if name.startswith(("encoder.", "post_extract_proj."))
    )
    record = {
        "path": model.checkpoint.path,
        "sha256": model.checkpoint.sha256,
        "variant": cfg.variant,
        "parameters": model.num_parameters,
        "encoder_parameters": encoder_path,
        "weights": "full" if model.has_decoder else "encoder only (inference)",
        "token_hop_ms": cfg.kernel_time * 10,
        "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
    }
    if as_json:
        click.echo(json.dumps(record))
        return
    click.echo(f"checkpoint : {record['path']}")
    click.echo(f"sha256     : {record['sha256']}")
    click.echo(f"variant    : {cfg.variant} ({cfg.kernel_time}x{cfg.kernel_chan} tokens, "
               f"{cfg.tokens_per_step} per {record['token_hop_ms']} ms step)")
    click.echo(f"parameters : {record['parameters']:,} ({encoder_path:,} in the encoder path)")
    click.echo(f"weights    : {record['weights']}")
    for key, value in record["config"].items():
        click.echo(f"  {key:<20} {value}")


if __name__ == "__main__":
    main()
