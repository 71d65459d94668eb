"""`maeast-embed probe`: linear-probe or fine-tune models on a labelled dataset, with baselines."""

from __future__ import annotations

from pathlib import Path

import click

from maeast_embed.cli_common import trust_option
from maeast_embed.defaults import DEFAULT_MODEL, DTYPE_CHOICES
from maeast_embed.errors import MAEASTError

from .choices import JOINS, LAYOUTS, PRECISIONS


def _grid(text: str) -> tuple[float, ...]:
    try:
        values = tuple(sorted((float(v) for v in text.split(",")), reverse=True))
    except ValueError as err:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}") from err
    if not values or min(values) < 0:
        raise click.BadParameter("L2 penalties must be >= 0")
    return values


@click.command()
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option(
    "--model",
    "-m",
    "models",
    multiple=True,
    help="Checkpoint path or registered name (default: maeast-small, packaged); 'fbank' (log-mel "
    "mean/std baseline); 'random' "
    "(the first checkpoint's architecture at initialisation), random:PRESET or random:PATH. "
    "Repeat to compare several in one report.",
)
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Report folder (report.json, PNG plots). Default: runs/probe-<dataset name>.",
)
@click.option(
    "--layout",
    type=click.Choice(LAYOUTS),
    default="auto",
    show_default=True,
    help="Dataset layout: class folders, CSV (path,label[,fold|split]), ESC-50, Speech Commands, HEAR task, "
    "WebDataset shards.",
)
@click.option(
    "--labels",
    type=click.Path(path_type=Path),
    default=None,
    help="Labels CSV (key|input,label[,fold|split]) when DATASET is an extraction output folder "
    "(precomputed embeddings).",
)
@click.option(
    "--join",
    type=click.Choice(JOINS),
    default="auto",
    show_default=True,
    help="The --labels column naming each embedding: key (its name in the folder, e.g. dog/1.wav), "
    "input (its path as extract recorded it, or relative to the CSV), auto: key if the CSV has it.",
)
@click.option(
    "--layer",
    default="last",
    show_default=True,
    help="last, a layer number (1-based, negative from the end), all (sweep: a score per layer), "
    "or weighted (a learned softmax-weighted sum of layers).",
)
@click.option(
    "--pool",
    type=click.Choice(["mean", "meanmax"]),
    default="mean",
    show_default=True,
    help="Time pooling of frozen frame features into a clip embedding.",
)
@click.option(
    "--freq-pool",
    type=click.Choice(["concat", "mean"]),
    default="concat",
    show_default=True,
    help="Patch model: concatenate the 8 frequency tokens of a time step, or average them.",
)
@click.option(
    "--folds",
    type=int,
    default=5,
    show_default=True,
    help="Stratified folds to make when the dataset has neither folds nor splits.",
)
@click.option(
    "--l2",
    "l2_grid",
    default="0.1,0.01,0.001,0.0001,0.00001",
    show_default=True,
    help="L2 penalties tried by the linear probe; the best on validation data is kept.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option(
    "--dtype",
    type=click.Choice(DTYPE_CHOICES),
    default="auto",
    show_default=True,
    help="Encoder compute dtype for frozen embeddings (auto: what is fast here, as for extract; "
    "report.json records the one used per model).",
)
@click.option(
    "--batch-size", type=int, default=8, show_default=True, help="Windows per forward pass (frozen)."
)
@click.option(
    "--cache-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Embedding cache folder (default: $MAEAST_CACHE/probe_embeddings).",
)
@click.option("--no-cache", is_flag=True, help="Recompute embeddings and write no cache file.")
@click.option("--finetune", is_flag=True, help="Fine-tune encoder + linear head instead of a linear probe.")
@click.option("--epochs", type=int, default=20, show_default=True)
@click.option("--lr", type=float, default=5e-5, show_default=True, help="Encoder learning rate (top layer).")
@click.option("--head-lr", type=float, default=1e-3, show_default=True)
@click.option(
    "--layer-decay",
    type=float,
    default=1.0,
    show_default=True,
    help="Layer-wise lr decay (1 = none; e.g. 0.75).",
)
@click.option("--warmup", type=float, default=0.1, show_default=True, help="Warm-up fraction of all steps.")
@click.option("--patience", type=int, default=3, show_default=True, help="Early-stopping patience (epochs).")
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="auto",
    show_default=True,
    help="Fine-tuning autocast: auto = bf16 on CUDA with bf16 support, else fp32.",
)
@click.option("--ft-batch-size", type=int, default=16, show_default=True, help="Clips per fine-tuning batch.")
@click.option(
    "--max-seconds",
    type=float,
    default=10.24,
    show_default=True,
    help="Fine-tuning crop length (random crop in training, centre crop in evaluation).",
)
@trust_option
@click.option("--quiet", "-q", is_flag=True, help="Print only the final table.")
def probe(
    dataset: Path,
    models: tuple[str, ...],
    out_dir: Path | None,
    layout: str,
    labels: Path | None,
    join: str,
    layer: str,
    pool: str,
    freq_pool: str,
    folds: int,
    l2_grid: str,
    seed: int,
    device: str,
    dtype: str,
    batch_size: int,
    cache_dir: Path | None,
    no_cache: bool,
    finetune: bool,
    epochs: int,
    lr: float,
    head_lr: float,
    layer_decay: float,
    warmup: float,
    patience: int,
    precision: str,
    ft_batch_size: int,
    max_seconds: float,
    trust_checkpoint: bool,
    quiet: bool,
) -> None:
    """Evaluate frozen (linear probe) or fine-tuned representations on DATASET.

    DATASET is a folder of class folders, a CSV file, an ESC-50 folder, a Speech Commands folder,
    a HEAR task folder, or WebDataset shards (a .tar file, glob or brace range such as
    'train-{000000..000009}.tar'; labels from each sample's .cls, or its .json "label"/"labels"
    with an optional "fold" or "split"). Writes REPORT_DIR/report.json plus PNG plots and prints a table.

    DATASET may also be an output folder of `maeast-embed extract` (npz, parquet or webdataset)
    with --labels CSV: its embeddings are probed as they are (no --model, no --finetune). A
    frame-level folder is pooled over time with --pool; --layer numbers name the model's layers
    the folder holds. Every CSV row must name an embedding; embeddings without a row are left out
    with a warning.
    """
    import warnings

    from .datasets import ProbeWarning
    from .finetune import FinetuneConfig
    from .linear import ProbeConfig
    from .run import RunConfig, run_probe

    out_dir = out_dir or Path("runs") / f"probe-{dataset.stem or dataset.name}"
    try:
        config = RunConfig(
            layer=layer,
            pool=pool,
            freq_pool=freq_pool,
            layout=layout,
            labels=labels,
            join=join,
            folds=folds,
            seed=seed,
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            cache_dir=cache_dir,
            use_cache=not no_cache,
            trust_checkpoint=trust_checkpoint,
            probe=ProbeConfig(l2_grid=_grid(l2_grid), seed=seed),
            finetune=FinetuneConfig(
                epochs=epochs,
                batch_size=ft_batch_size,
                lr=lr,
                head_lr=head_lr,
                layer_decay=layer_decay,
                warmup_fraction=warmup,
                patience=patience,
                precision=precision,
                max_seconds=max_seconds,
                seed=seed,
            )
            if finetune
            else None,
            progress=not quiet,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ProbeWarning)  # printed once each from the report below
            report = run_probe(
                dataset,
                list(models) or ([] if labels else [DEFAULT_MODEL]),
                out_dir,
                config,
                log=(lambda m: None) if quiet else (lambda m: click.echo(m, err=True)),
            )
    except MAEASTError as err:
        raise click.ClickException(str(err)) from err
    for message in report["warnings"]:
        click.echo(f"warning: {message}", err=True)
    click.echo(report["table"])
    click.echo(
        f"report: {out_dir / 'report.json'}"
        + (f"; plots: {', '.join(report['plots'])}" if report["plots"] else "")
    )
