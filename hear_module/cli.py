"""`maeast-embed hear ...`: the launcher of `hear_module.run` as a click command."""

from __future__ import annotations

import click

from .run import ENTRY_POINTS, main


@click.command(
    "hear",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.argument("entry", type=click.Choice(sorted(ENTRY_POINTS)))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def hear(entry: str, args: tuple[str, ...]) -> None:
    """Run hear-eval-kit or hear-validator with the Python 3.11 / torch 2.x shims.

    ENTRY is `embeddings` (heareval.embeddings.runner), `predictions`
    (heareval.predictions.runner) or `validate` (hearvalidator); ARGS go to it unchanged, e.g.

        maeast-embed hear embeddings hear_module --model mae-ast-patch.pt --tasks-dir tasks
    """
    main([entry, *args])
