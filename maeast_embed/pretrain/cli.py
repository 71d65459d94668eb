"""`maeast-embed pretrain`: the click command (thin over `build_config` + `train`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click

from ..config import PRESETS
from ..errors import MAEASTError
from .config import build_config, read_config_file


@click.command()
@click.option("--data", "data", multiple=True, metavar="PATH",
              help="Audio folder, list file (one path per line) or fairseq .tsv manifest; repeatable.")
@click.option("-o", "--output", "run_dir", required=True, type=click.Path(file_okay=False),
              help="Run folder: config.yaml, metrics.jsonl, checkpoints/, final.pt.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="YAML/JSON training config (keys of TrainConfig; model fields under `model:`).")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), help="Model recipe (default: patch).")
@click.option("--max-steps", type=int, help="Optimizer updates to run.")
@click.option("--batch-size", type=int, help="Clips per micro-batch and process.")
@click.option("--mode", type=click.Choice(["mae", "ssast"]), help="mae (default) or the SSAST baseline.")
@click.option("--device", help="auto (default), cpu, cuda, cuda:1 ...")
@click.option("--resume", is_flag=True, help="Continue the run in -o from its newest training state.")
@click.option("--init", metavar="CHECKPOINT",
              help="Start from an official-layout checkpoint (file or registered name): its architecture "
                   "and weights; model.* overrides may change its training settings (mask, dropout).")
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level.")
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
def pretrain(data, run_dir, config_file, preset, max_steps, batch_size, mode, device, resume, init,
             verbose, overrides) -> None:
    """Pretrain MAE-AST (the official recipe by default) into RUN_DIR.

    Overrides set any config key, e.g. `lr=2e-4 accum_steps=4 precision=bf16
    model.encoder_layers=6`. With --resume the run's saved config.yaml is the base and only
    the options given now change it. Multi-GPU: `torchrun --nproc_per_node=N -m
    maeast_embed.cli pretrain ...`.
    """
    from .config import parse_overrides
    from .loop import train

    main_process = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 reports
    level = (logging.INFO if verbose else logging.WARNING) if main_process else logging.ERROR
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s")
    flags = {
        "data": list(data) or None, "preset": preset, "max_steps": max_steps,
        "batch_size": batch_size, "mode": mode, "device": device, "init": init,
    }
    try:
        given = {k: v for k, v in flags.items() if v is not None}
        given.update(parse_overrides(overrides))
        base = None
        if resume:
            saved = Path(run_dir) / "config.yaml"
            if not saved.is_file():
                raise click.UsageError(f"--resume: {saved} not found (is {run_dir} a run folder?)")
            base = read_config_file(saved)
            if config_file:
                raise click.UsageError("--resume takes the run's own config; drop --config")
        cfg = build_config(base, config_file, given)
        final = train(cfg, run_dir, resume=resume)
    except MAEASTError as err:
        raise click.ClickException(str(err)) from err
    if main_process:
        click.echo(f"final checkpoint (official layout): {final}")
