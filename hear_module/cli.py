"""`maeast-embed hear ...`: hear-eval-kit / hear-validator with the shims, and an opt-in site hook
(`register` / `unregister` / `status`) that makes their own commands work unchanged."""

from __future__ import annotations

import click

from maeast_embed.sitehook import SiteHook, add_hook_commands

from .run import ENTRY_POINTS, main

HOOK = SiteHook(
    "hear",
    {
        "heareval": [("after", "hear_module.compat:on_import")],
        "hearvalidator": [("after", "hear_module.compat:on_import")],
    },
)


@click.group("hear")
def hear() -> None:
    """Run hear-eval-kit or hear-validator with the Python 3.11 / torch 2.x shims.

    `embeddings`, `predictions` and `validate` run heareval.embeddings.runner,
    heareval.predictions.runner and hearvalidator with their arguments unchanged, e.g.

        maeast-embed hear embeddings hear_module --model CKPT --tasks-dir tasks

    or opt in once with `maeast-embed hear register`, after which the tools' own commands
    (`hear-validator hear_module ...`, `python -m heareval.embeddings.runner hear_module ...`)
    work as they are in this environment.
    """


def _runner(entry: str) -> click.Command:
    @click.command(
        entry,
        help=f"Run {ENTRY_POINTS[entry]} with the shims; ARGS go to it unchanged (--help included).",
        context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False,
                          "help_option_names": []},
    )
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def run(args: tuple[str, ...]) -> None:
        main([entry, *args])

    return run


for _entry in ENTRY_POINTS:
    hear.add_command(_runner(_entry))

add_hook_commands(
    hear, HOOK, needs="heareval",
    done="`hear-validator hear_module ...` and `python -m heareval.embeddings.runner hear_module ...` "
    "(and the predictions runner) now work unchanged in this environment",
)
