# maeast-embed site hook
"""An opt-in import hook, copied into site-packages by `maeast_embed.sitehook.SiteHook.register`.

A one-line `.pth` next to it calls `install()` at interpreter start-up, so every interpreter of
the environment (DataLoader workers included, whatever their start method) has it. It is
standard library only and does nothing until one of the modules in `ACTIONS` is imported: then
it calls the named function before that module's own code runs ("before", no arguments) or
right after it ran ("after", with the module). `register` appends the hook's `NAME` and
`ACTIONS` below this text.
"""

import importlib
import sys

NAME = ""
ACTIONS = {}  # module name -> [(when, "package.module:function"), ...]
_warned = []


def _call(target, *args):
    module_name, function = target.split(":")
    try:
        action = getattr(importlib.import_module(module_name), function)
    except ImportError as err:
        if not _warned:
            _warned.append(err)
            print(
                f"maeast-embed {NAME} hook: cannot import {module_name} ({err}); running without it. "
                f"Reinstall maeast-embed, or run `maeast-embed {NAME} unregister`.",
                file=sys.stderr,
            )
        return
    action(*args)


class _Loader:
    """Wraps the real loader of a target module: "before" actions, its code, "after" actions."""

    def __init__(self, inner, name):
        self._inner, self._name = inner, name

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        for when, target in ACTIONS[self._name]:
            if when == "before":
                _call(target)
        self._inner.exec_module(module)
        for when, target in ACTIONS[self._name]:
            if when == "after":
                _call(target, module)

    def __getattr__(self, name):
        return getattr(self._inner, name)


class _Finder:
    """Meta-path finder that only wraps the loaders of the modules in ACTIONS."""

    def __init__(self):
        self.maeast_embed_hook = NAME

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in ACTIONS:
            return None
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            if find_spec is None or hasattr(finder, "maeast_embed_hook"):
                continue
            spec = find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader, fullname)
                return spec
        return None


def install():
    """Put this hook's finder first on sys.meta_path (once)."""
    if not any(getattr(finder, "maeast_embed_hook", None) == NAME for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
