"""Embedding extraction over many files: output layout, atomic .npz, manifest, resume, shards.

Every input file becomes `OUTPUT_DIR/<path relative to its input>.npz` (named through
`maeast_embed.outpaths`, which keeps every output under OUTPUT_DIR) holding `embedding`
(float32) and `timestamps` (float64 seconds). `OUTPUT_DIR/manifest.jsonl` is an append-only
log: each run adds a header record (model, options) and then one record per file; the latest
record of a file is its state. Outputs are written to a temporary name and renamed, so a killed
run never leaves a truncated .npz, and a rerun skips what is done. Short files are decoded in
worker threads and batched across files; long files are streamed block by block.

Modules: `options` (ExtractOptions), `jobs` (inputs -> jobs), `decoding` (decoding threads),
`streaming` (long files), `engine` (jobs through the embedder; `embed_files`), `npz` (atomic
output files), `manifest` (headers and records), `run` (`run_extract`). `--format parquet|webdataset`
writes parts of many clips instead: `rows` (a row, the part-format protocol), `parts` (naming,
atomic part writer, scan and resume), `parquet_part` and `tar_part` (the two formats), `partrun`
(the parts side of a run); `reader` (`load_embeddings`, any format) and `convert`.
"""

from .engine import embed_files, iter_results
from .jobs import Job, collect_jobs, shard_of
from .manifest import MANIFEST, manifest_name, read_manifest
from .npz import write_npz_atomic
from .options import ExtractOptions, parse_shard, parse_timeout
from .run import Summary, run_extract

__all__ = [
    "MANIFEST",
    "ExtractOptions",
    "Job",
    "Summary",
    "collect_jobs",
    "embed_files",
    "iter_results",
    "manifest_name",
    "parse_shard",
    "parse_timeout",
    "read_manifest",
    "run_extract",
    "shard_of",
    "write_npz_atomic",
]
