"""s3prl integration, installed as the package `maeast_upstream` (so that an s3prl checkout's
own `upstream/` folder cannot shadow it): the `mae_ast` upstream (`maeast_upstream.mae_ast`),
the launcher (`maeast_upstream.run_downstream`), the s3prl 0.4.18 run-time shims
(`maeast_upstream.compat`) and the opt-in site hook (`maeast_upstream.cli`)."""
