"""`maeast-embed s3prl register|unregister|status`: an explicit, reversible opt-in that makes
plain `run_downstream.py -u mae_ast` (or `python -m s3prl.run_downstream`) work in the active
environment. When s3prl is imported, the hook applies the s3prl 0.4.18 run-time shims before
s3prl's own code runs and, once `s3prl.hub` has loaded, adds the `mae_ast` entries to it (and
keys the SID recipe's file-list cache by dataset: `compat.key_voxceleb1_cache`).

The hook reaches this code as `maeast_upstream` (the installed name of the repository's
`upstream/` folder), which an s3prl checkout's own `upstream/` package cannot shadow.
"""

from __future__ import annotations

import click

from maeast_embed.sitehook import SiteHook, add_hook_commands

HOOK = SiteHook(
    "s3prl",
    {
        "s3prl": [("before", "maeast_upstream.compat:apply")],
        "s3prl.hub": [("after", "maeast_upstream.mae_ast.hubconf:register")],
        "s3prl.downstream.voxceleb1.dataset": [("after", "maeast_upstream.compat:key_voxceleb1_cache")],
    },
)


@click.group("s3prl")
def s3prl() -> None:
    """Opt in (or out) to `-u mae_ast` in plain s3prl `run_downstream` for this environment."""


add_hook_commands(
    s3prl, HOOK, needs="s3prl",
    done="plain `python -m s3prl.run_downstream -u mae_ast ...`, and `python run_downstream.py "
    "-u mae_ast ...` in an s3prl checkout, now work in this environment",
)
