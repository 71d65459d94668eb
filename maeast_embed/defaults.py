"""Names the command line needs without importing torch."""

DEFAULT_MODEL = "maeast-small"  # the packaged offline model (checkpoint.PACKAGED)
