"""`maeast-embed status`: a summary of every shard manifest of an extraction output folder."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click


def _cell(value, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


@click.command(short_help="Summarise the shards of an extraction output folder.")
@click.argument("output_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def status(output_dir: Path, as_json: bool) -> None:
    """Summarise every shard manifest of OUTPUT_DIR (written by `maeast-embed extract`): files
    done, failed and pending, hours of audio embedded, files/s of the last run, and whether a
    run holds the shard now."""
    from .extract.status import folder_status

    shards = folder_status(output_dir)
    if not shards:
        raise click.ClickException(f"{output_dir} holds no extraction manifest")
    if as_json:
        click.echo(json.dumps({"output_dir": str(output_dir), "shards": [asdict(s) for s in shards]}))
        return
    click.echo(f"{'shard':<8} {'done':>8} {'failed':>7} {'pending':>8} {'hours':>8} {'files/s':>8}  state")
    for s in shards:
        state = f"running ({s.running})" if s.running else ("finished" if s.pending == 0 else "stopped")
        click.echo(f"{s.shard:<8} {s.done:>8} {s.failed:>7} {_cell(s.pending):>8} {s.audio_hours:>8.3f} "
                   f"{_cell(s.files_per_second, '{:.2f}'):>8}  {state}")
    pending = [s.pending for s in shards]
    click.echo(f"{'total':<8} {sum(s.done for s in shards):>8} {sum(s.failed for s in shards):>7} "
               f"{_cell(None if None in pending else sum(pending)):>8} "
               f"{sum(s.audio_hours for s in shards):>8.3f}")
