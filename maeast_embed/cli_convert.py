"""`maeast-embed convert`: an extraction output folder rewritten in another format."""

from __future__ import annotations

from pathlib import Path

import click

from .errors import MAEASTError


@click.command(short_help="Rewrite an extraction output folder in another format.")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--format", "out_format", type=click.Choice(["npz", "parquet", "webdataset"]), required=True)
@click.option("-o", "--output-dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--part-size", type=click.IntRange(min=1), default=None,
              help="Clips per part (parquet, webdataset) [default: about 256 MB per part].")
@click.option("--storage-dtype", type=click.Choice(["float32", "float16"]), default=None,
              help="Dtype of the stored embeddings [default: the source's].")
@click.option("--overwrite", is_flag=True, help="Redo what the target holds (default: keep it, resume).")
def convert(source: Path, out_format: str, output_dir: Path, part_size: int | None, storage_dtype: str | None,
            overwrite: bool) -> None:
    """Rewrite the embeddings of SOURCE (written by `maeast-embed extract`, any --format) into
    OUTPUT_DIR as --format, with a manifest carrying the source's model and options."""
    from .extract.convert import convert as run

    try:
        done = run(source, output_dir, out_format, part_size=part_size, storage_dtype=storage_dtype,
                   overwrite=overwrite)
    except MAEASTError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"{done.written} converted, {done.skipped} skipped (already there); manifest: {done.manifest}",
               err=True)
