"""s3prl integration: the `mae_ast` upstream (`upstream.mae_ast`) and its launcher
(`upstream.run_downstream`)."""
