"""Names the command line needs without importing torch."""

DEFAULT_MODEL = "maeast-small"  # the packaged offline model (checkpoint.PACKAGED)
# `--dtype` names (maeast_embed.precision says what each does and what auto picks)
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16", "int8")
