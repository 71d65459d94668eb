"""MAE-AST as a HEAR 2021 module: `load_model`, `get_timestamp_embeddings`, `get_scene_embeddings`.

The functions live in `hear_module.api` and are imported on first use, so that
`maeast-embed --help` (which lists the `hear` command of `hear_module.cli`) does not import torch.
"""

from importlib import import_module

_API = ("HearModel", "load_model", "get_timestamp_embeddings", "get_scene_embeddings")

__all__ = list(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'hear_module' has no attribute {name!r}")
    value = getattr(import_module(".api", __name__), name)
    globals()[name] = value
    return value
