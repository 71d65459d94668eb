"""Options shared by the `maeast-embed` commands (a module of its own: command modules import it
without importing `maeast_embed.cli`, which imports them)."""

import click

trust_option = click.option(
    "--trust-checkpoint",
    is_flag=True,
    help="Allow arbitrary unpickling of the checkpoint (only for files from a trusted source).",
)
