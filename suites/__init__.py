"""MAE-AST in the field's benchmark suites: the X-ARES encoder (`maeast_suites.xares`), the
MAEB/MTEB model (`maeast_suites.mteb_model`) and `maeast-embed bench`; a consumer of the core's
extraction engine, which never imports it. X-ARES and MTEB come with the `suites` extra."""
