"""`maeast-embed export`: write a model as a Hugging Face Hub folder or an ONNX graph."""

from __future__ import annotations

import click

from .cli_common import trust_option
from .errors import MAEASTError


@click.command(short_help="Export a model as a Hub folder or an ONNX graph.")
@click.argument("model")
@click.option("--to", "target", type=click.Choice(["hub", "onnx"]), required=True,
              help="hub: a folder to push as a Hugging Face model repository (model.safetensors, "
              "config.json, README.md). onnx: one .onnx file, waveforms and lengths in, embeddings out.")
@click.argument("output", type=click.Path())
@click.option("--layer", default="all", show_default=True,
              help="onnx: the layers of the second output, `layers` ([n, B, T, D]): all, N or N,M,... "
              "(the first output, `embedding`, is the last layer).")
@trust_option
def export(model: str, target: str, output: str, layer: str, trust_checkpoint: bool) -> None:
    """Export MODEL (a file, a Hub folder, a registered or Hub name) to OUTPUT.

    \b
    maeast-embed export maeast-small --to hub maeast-small-hub/
    maeast-embed export mae-ast-patch --to onnx mae-ast-patch.onnx
    """
    try:
        if target == "hub":
            from .export.hub import export_hub

            out = export_hub(model, output, trust_checkpoint=trust_checkpoint)
        else:
            from .export.onnx import export_onnx
            from .features import parse_layer

            out = export_onnx(model, output, layers=parse_layer(layer), trust_checkpoint=trust_checkpoint)
    except MAEASTError as err:
        raise click.ClickException(str(err)) from err
    click.echo(str(out))
