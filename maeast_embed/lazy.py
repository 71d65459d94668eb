"""Package attributes imported on first use (PEP 562), so that light modules such as the command
line do not pay for importing torch through a package's `__init__`."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_attributes(package: str, sources: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package`: `sources` maps each public name to the module
    (relative, like ".model") that defines it; the first access imports it and caches it."""

    def __getattr__(name: str) -> Any:
        if name not in sources:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(sources[name], package), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
