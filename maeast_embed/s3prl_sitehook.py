# maeast-embed s3prl site hook (installed by `maeast-embed s3prl register`)
"""Makes plain `run_downstream.py -u mae_ast` work in this environment.

`maeast-embed s3prl register` copies this file into site-packages as `maeast_embed_s3prl_hook.py`
next to a one-line `.pth` that calls `install()` at interpreter start-up; `maeast-embed s3prl
unregister` removes both. It is standard library only and does nothing until s3prl is imported:
then it applies maeast_embed's s3prl 0.4.18 shims (before s3prl's own code runs) and, once
`s3prl.hub` has loaded, registers the `mae_ast` entries on it. Every interpreter runs the
`.pth`, so DataLoader workers get the same behaviour whatever their start method.
"""

import sys

_TARGETS = ("s3prl", "s3prl.hub")
_warned = []


def _call(what, *args):
    try:
        if what == "shims":
            from maeast_embed.s3prl_compat import apply

            apply()
        else:
            from upstream.mae_ast.hubconf import register

            register(*args)
    except ImportError as err:
        if not _warned:
            _warned.append(err)
            print(
                f"maeast-embed s3prl hook: cannot import maeast-embed ({err}); s3prl runs without "
                f"its shims. Reinstall maeast-embed or remove {__file__} and its .pth file.",
                file=sys.stderr,
            )


class _Loader:
    """Wraps s3prl's own loader: shims before `s3prl` runs, entries after `s3prl.hub` ran."""

    def __init__(self, inner, name):
        self._inner, self._name = inner, name

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        if self._name == "s3prl":
            _call("shims")
        self._inner.exec_module(module)
        if self._name == "s3prl.hub":
            _call("register", module)

    def __getattr__(self, name):
        return getattr(self._inner, name)


class _Finder:
    """Meta-path finder that only wraps the loaders of `s3prl` and `s3prl.hub`."""

    maeast_embed_s3prl = True

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _TARGETS:
            return None
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            if finder is self or find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader, fullname)
                return spec
        return None


def install():
    """Put the finder first on sys.meta_path (once)."""
    if not any(getattr(finder, "maeast_embed_s3prl", False) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
