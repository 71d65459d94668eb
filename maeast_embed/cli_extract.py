"""`maeast-embed extract`: a thin click layer over `maeast_embed.extract.run_extract`.

Torch and the decoders are imported when the command runs, not when it is listed.
"""

from __future__ import annotations

import click

from .cli_common import trust_option
from .defaults import DEFAULT_MODEL, DTYPE_CHOICES
from .errors import MAEASTError


class _FormatsHelp(click.Command):
    """Fills in the readable formats only when this command's own --help is shown (the list
    comes from the decoders, which the top-level --help must not import)."""

    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        try:
            from .audio import supported_formats_text

            formats = supported_formats_text()
        except Exception:  # noqa: BLE001 - --help must work even if a decoder library is odd
            formats = "whatever the installed decoders read"
        self.help = self.help.replace("{formats}", formats)
        super().format_help_text(ctx, formatter)


@click.command(
    cls=_FormatsHelp,
    short_help="Embed audio files with MAE-AST.",
    help="""Embed audio files with MAE-AST.

INPUT is audio files, folders (searched recursively for audio) or list files (.txt/.lst: one
path per line; .csv: a 'path' column or the first one; .tsv: fairseq manifest). Each file
becomes OUTPUT_DIR/<its path relative to the input>.npz with `embedding` (float32) and
`timestamps` (float64 seconds, frame centres; the clip centre for --granularity clip), and
OUTPUT_DIR/manifest.jsonl logs the run. Files already done are skipped (resume).

Readable formats here: {formats}. Any sample rate (resampled to 16 kHz), any channel
count (averaged to mono).

Exits with status 1 if any file failed (after processing all the others).
"""
)
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("-o", "--output-dir", required=True, type=click.Path(file_okay=False), help="Where outputs go.")
@click.option("--model", "model", default=DEFAULT_MODEL, show_default=True,
              help="Checkpoint file, Hub folder or name: maeast-small (packaged, offline; the default), "
              "mae-ast-patch or mae-ast-frame (the official models, downloaded once), or a Hugging Face "
              "model org/name[@revision] (through the huggingface_hub cache).")
@click.option("--granularity", type=click.Choice(["frame", "clip"]), default="frame", show_default=True,
              help="One vector per time step (0.16 s patch / 0.02 s frame model) or one per file.")
@click.option("--layer", default="last", show_default=True,
              help="last, all (stacked [L, T, D]), mean (of all layers), N (1-based, -1 = last) or N,M,...")
@click.option("--pool", type=click.Choice(["mean", "meanmax"]), default="mean", show_default=True,
              help="Time pooling for --granularity clip (meanmax: mean and max concatenated).")
@click.option("--freq-pool", type=click.Choice(["concat", "mean"]), default="concat", show_default=True,
              help="Patch model: concatenate the 8 frequency patches of a time step (8 x D) or average.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Windows (of --chunk-seconds) per forward pass; several files share a batch.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--dtype", type=click.Choice(DTYPE_CHOICES), default="auto", show_default=True,
              help="Encoder compute dtype; outputs are float32. auto: bfloat16 on GPUs with native bf16 and "
              "CPUs with AMX, int8 on other x86 CPUs (if the model's int8 agrees with float32), else "
              "float32 (`maeast-embed doctor` says which and why); the manifest records the one used. "
              "int8: CPU only.")
@click.option("--backend", type=click.Choice(["torch", "onnxruntime"]), default="torch", show_default=True,
              help="onnxruntime: run the model's ONNX export (CPU, float32; exported once and cached by "
              "checksum) instead of torch.")
@click.option("--num-workers", type=click.IntRange(min=0), default=2, show_default=True,
              help="Threads decoding files ahead of the encoder (0: one; with --file-timeout 0, the main "
              "thread).")
@click.option("--chunk-seconds", type=click.FloatRange(min=0, min_open=True), default=10.24,
              show_default=True,
              help="Long files are encoded in windows of this length and stitched (deterministic).")
@click.option("--overwrite", is_flag=True, help="Redo files whose output exists (default: skip them).")
@click.option("--file-timeout", default="auto", show_default=True, metavar="auto|SECONDS",
              help="Time limit of each decoding step (a file, or a block of a file over 10 minutes); a file "
              "past it is a failure and the run goes on (its decoder thread is abandoned). auto: 60 s + "
              "10 x the audio's duration; 0: no limit.")
@click.option("--shard", default="auto", show_default=True,
              help="I/N: process only shard I (0-based) of N; each shard writes manifest.shard-I-of-N.jsonl. "
              "auto: from torchrun (RANK/WORLD_SIZE) or SLURM (SLURM_PROCID/SLURM_NTASKS, job arrays) "
              "when launched by one, else 0/1; on CUDA each process then uses cuda:LOCAL_RANK.")
@click.option("--format", "out_format", type=click.Choice(["npz", "parquet", "webdataset"]), default="npz",
              show_default=True,
              help="npz: one .npz per input; parquet: part files of many clips (one row each); webdataset: "
              "tar parts of <key>.npy + <key>.json samples. Parts are committed whole and resumed.")
@click.option("--part-size", type=click.IntRange(min=1), default=None,
              help="Clips per part (parquet, webdataset) [default: about 256 MB per part].")
@click.option("--storage-dtype", type=click.Choice(["float32", "float16"]), default="float32",
              show_default=True, help="Dtype the embeddings are stored in (float16: half the size).")
@click.option("--quiet", "-q", is_flag=True,
              help="No progress bar, no summary (failures still go to stderr).")
@trust_option
def extract(inputs, output_dir, model, granularity, layer, pool, freq_pool, batch_size, device, dtype,
            backend, num_workers, chunk_seconds, overwrite, file_timeout, shard, out_format, part_size,
            storage_dtype, quiet, trust_checkpoint) -> None:
    import torch

    from .extract import ExtractOptions, parse_shard, parse_timeout, run_extract
    from .extract.launch import process_device
    from .features import Embedder, parse_layer

    try:
        device = process_device("cpu" if backend == "onnxruntime" and device == "auto" else device,
                                torch.cuda.is_available())
        options = ExtractOptions(
            granularity=granularity, layer=parse_layer(layer), pool=pool, freq_pool=freq_pool,
            num_workers=num_workers, overwrite=overwrite, shard=parse_shard(shard),
            file_timeout=parse_timeout(file_timeout), format=out_format, part_size=part_size,
            storage_dtype=storage_dtype,
        )
        embedder = Embedder(model, device=device, dtype=dtype, batch_size=batch_size,
                            chunk_seconds=chunk_seconds, trust_checkpoint=trust_checkpoint, backend=backend)
        summary = run_extract(inputs, output_dir, embedder, options, progress=False if quiet else None)
    except MAEASTError as err:
        raise click.ClickException(str(err)) from err
    if not quiet:
        for line in summary.lines():
            click.echo(line, err=True)
    if not summary.ok:
        if quiet:
            click.echo(f"{len(summary.failed)} file(s) failed; see {summary.manifest}", err=True)
        raise SystemExit(1)
