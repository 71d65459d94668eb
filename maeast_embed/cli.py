"""The `maeast-embed` command line: thin click commands over the library."""

from __future__ import annotations

import json

import click

from . import __version__
from .cli_common import trust_option
from .errors import MAEASTError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="maeast-embed")
def main() -> None:
    """MAE-AST toolkit: inspect checkpoints, extract embeddings, pretrain, evaluate."""


@main.command()
@click.argument("checkpoint")
@trust_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def info(checkpoint: str, trust_checkpoint: bool, as_json: bool) -> None:
    """Print a checkpoint's variant, config and parameter counts.

    CHECKPOINT is a file (official fairseq layout or this project's) or a registered name.
    """
    from .checkpoint import load_model

    try:
        model = load_model(checkpoint, trust_checkpoint=trust_checkpoint)
    except MAEASTError as err:
        raise click.ClickException(str(err)) from err
    cfg = model.cfg
    encoder_path = sum(
        p.numel()
        for name, p in model.named_parameters()
        if name.startswith(("encoder.", "post_extract_proj."))
    )
    record = {
        "path": model.checkpoint.path,
        "sha256": model.checkpoint.sha256,
        "variant": cfg.variant,
        "parameters": model.num_parameters,
        "encoder_parameters": encoder_path,
        "weights": "full" if model.has_decoder else "encoder only (inference)",
        "token_hop_ms": cfg.kernel_time * 10,
        "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
    }
    if as_json:
        click.echo(json.dumps(record))
        return
    click.echo(f"checkpoint : {record['path']}")
    click.echo(f"sha256     : {record['sha256']}")
    click.echo(f"variant    : {cfg.variant} ({cfg.kernel_time}x{cfg.kernel_chan} tokens, "
               f"{cfg.tokens_per_step} per {record['token_hop_ms']} ms step)")
    click.echo(f"parameters : {record['parameters']:,} ({encoder_path:,} in the encoder path)")
    click.echo(f"weights    : {record['weights']}")
    for key, value in record["config"].items():
        click.echo(f"  {key:<20} {value}")


from .pretrain.cli import pretrain  # noqa: E402

main.add_command(pretrain)

from .s3prl_hook import s3prl  # noqa: E402

main.add_command(s3prl)

from hear_module.cli import hear  # noqa: E402

main.add_command(hear)

from .cli_extract import extract  # noqa: E402

main.add_command(extract)

from probes.cli import probe  # noqa: E402

main.add_command(probe)


if __name__ == "__main__":
    main()
