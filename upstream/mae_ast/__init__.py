"""s3prl upstream folder for MAE-AST, built on maeast_embed's frontend and model."""

from .expert import UpstreamExpert
from .hubconf import mae_ast, mae_ast_frame, mae_ast_local, mae_ast_patch, mae_ast_url

__all__ = ["UpstreamExpert", "mae_ast", "mae_ast_local", "mae_ast_url", "mae_ast_patch", "mae_ast_frame"]
