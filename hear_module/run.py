"""Launcher for the real hear-eval-kit / hear-validator entry points with the compat shims.

    python -m hear_module.run embeddings  hear_module --model CKPT --tasks-dir D --embeddings-dir E
    python -m hear_module.run predictions E/hear_module/* --grid faster
    python -m hear_module.run validate    hear_module --model CKPT

Everything after the sub-command is handed unchanged to
`heareval.embeddings.runner`, `heareval.predictions.runner` or `hearvalidator.validate`
(run as `__main__`, exactly like `python -m ...`); only `compat.apply()` runs first.
"""

from __future__ import annotations

import importlib.util
import runpy
import sys
from collections.abc import Sequence

ENTRY_POINTS = {
    "embeddings": "heareval.embeddings.runner",
    "predictions": "heareval.predictions.runner",
    "validate": "hearvalidator.validate",
}
USAGE = f"usage: python -m hear_module.run {{{','.join(ENTRY_POINTS)}}} ARGS..."
INSTALL = (
    'pip install -c constraints.txt -e ".[hear]" && '
    "pip install --no-deps heareval==2021.1.3 hearvalidator==2021.0.2"
)


def main(argv: Sequence[str] | None = None) -> None:
    """Apply the shims, then run the chosen entry point with the remaining arguments."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in ENTRY_POINTS:
        print(USAGE + "\n\n" + __doc__, file=sys.stderr)
        raise SystemExit(0 if argv and argv[0] in ("-h", "--help") else 2)
    target = ENTRY_POINTS[argv[0]]
    if importlib.util.find_spec(target.split(".")[0]) is None:
        raise SystemExit(f"{target.split('.')[0]} is not installed; install the HEAR tools with: {INSTALL}")
    from . import compat

    compat.apply()
    sys.argv = [target, *argv[1:]]
    runpy.run_module(target, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
