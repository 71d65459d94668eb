"""`maeast-embed bench`: several suites (HEAR, X-ARES, MAEB) with several models (MAE-AST models,
a random-init and an fbank baseline), resumable, into one table (`bench.json`, `.md`, `.csv`,
`.png`)."""

from .run import BenchConfig, run_bench

__all__ = ["BenchConfig", "run_bench"]
