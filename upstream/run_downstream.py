"""Launcher: s3prl's own `run_downstream`, unchanged, with `-u mae_ast` (and friends) registered.

    python -m maeast_upstream.run_downstream -m train -u mae_ast -k CKPT -d speech_commands ...
    maeast-s3prl -m evaluate -e result/downstream/NAME/dev-best.ckpt

Importing this module applies the s3prl 0.4.18 run-time shims (`maeast_upstream.compat`),
keys the SID recipe's file-list cache by dataset and registers the hub entries. It does so at
import on purpose: DataLoader workers started with 'spawn' or 'forkserver' re-import the main
module, so they get the shims too ('fork' workers inherit them).
"""

from __future__ import annotations

import sys

from maeast_embed.errors import MAEASTError

from .compat import apply as _apply_shims

_apply_shims()

import s3prl.hub  # noqa: E402

from .mae_ast.hubconf import register  # noqa: E402

register(s3prl.hub)

try:
    import s3prl.downstream.voxceleb1.dataset as _voxceleb1  # noqa: E402  (9 ms once s3prl.hub is in)
except ImportError:  # a recipe dependency missing: s3prl reports it if SID is run
    pass
else:
    from .compat import key_voxceleb1_cache  # noqa: E402

    key_voxceleb1_cache(_voxceleb1)


def main(argv: list[str] | None = None) -> None:
    """Run `s3prl.run_downstream.main()` with `argv` (default: this process's arguments)."""
    import s3prl.run_downstream

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    try:
        s3prl.run_downstream.main()
    except MAEASTError as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
