"""MAE-AST as a HEAR 2021 module: `load_model`, `get_timestamp_embeddings`, `get_scene_embeddings`.

The functions live in `hear_module.api` and are imported on first use, so that
`maeast-embed --help` (which lists the `hear` command of `hear_module.cli`) does not import torch.
"""

from maeast_embed.lazy import lazy_attributes

_API = ("HearModel", "load_model", "get_timestamp_embeddings", "get_scene_embeddings")

__all__ = list(_API)


__getattr__ = lazy_attributes(__name__, dict.fromkeys(_API, ".api"))
