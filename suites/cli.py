"""`maeast-embed xares ...` and `maeast-embed mteb ...`: the suites with MAE-AST at chosen options."""

from __future__ import annotations

from pathlib import Path

import click

from maeast_embed.cli_common import trust_option
from maeast_embed.defaults import DEFAULT_MODEL, DTYPE_CHOICES
from maeast_embed.errors import MAEASTError


def encoder_options(command):
    """The encoder options every MAE-AST model of a suite takes (those of the HEAR module)."""
    for option in reversed([
        click.option("--layer", default="last", show_default=True,
                     help="last, a layer number (1-based, negative from the end), mean, all, or N,M,..."),
        click.option("--freq-pool", type=click.Choice(["concat", "mean"]), default="concat",
                     show_default=True,
                     help="Patch model: concatenate (as s3prl) or average the 8 frequency tokens of a step."),
        click.option("--dtype", type=click.Choice(DTYPE_CHOICES), default="float32", show_default=True,
                     help="Encoder compute dtype (float32: parity with the reference)."),
        click.option("--batch-size", type=click.IntRange(min=1), default=None,
                     help="Windows per forward pass (default 32 on CUDA, 8 on CPU)."),
        trust_option,
    ]):
        command = option(command)
    return command


def model_options(command):
    """`--model` and the encoder options: one model for a suite command."""
    return click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True,
                        help="Registered name (maeast-small packaged; mae-ast-patch, mae-ast-frame), "
                        "checkpoint file, Hub folder or id.")(encoder_options(command))


def encoder_values(layer, freq_pool, dtype, batch_size, trust_checkpoint) -> dict:
    """The encoder options as the suites' wrappers take them (unset ones left out)."""
    options = {"layer": layer, "freq_pool": freq_pool, "dtype": dtype}
    if batch_size is not None:
        options["batch_size"] = batch_size
    if trust_checkpoint:
        options["trust_checkpoint"] = True
    return options


def suite_options(model, **encoder) -> dict:
    return {"model": model, **encoder_values(**encoder)}


def _needs(module: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise click.ClickException(f"{module} is not installed: pip install 'maeast-embed[suites]'")


@click.group("xares")
def xares() -> None:
    """X-ARES (eXtensive Audio Representation and Evaluation Suite) with MAE-AST.

    The encoder is `maeast_suites.xares.MaeAstEncoder` (one frame per token step: 160 ms patch,
    20 ms frame model).
    """


@xares.command("check")
@model_options
def xares_check(**kwargs) -> None:
    """Run X-ARES's `check_audio_encoder` on the encoder at these options."""
    _needs("xares")
    from xares.audio_encoder_checker import check_audio_encoder

    from .xares import MaeAstEncoder

    try:
        encoder = MaeAstEncoder(**suite_options(**kwargs))
    except MAEASTError as err:
        raise click.ClickException(str(err)) from err
    if not check_audio_encoder(encoder):
        raise click.ClickException("X-ARES's check_audio_encoder failed (its log says why)")
    click.echo(f"X-ARES encoder check passed: output_dim {encoder.output_dim}, "
               f"hop {encoder.hop_size_in_ms:g} ms, {encoder.sampling_rate} Hz")


@xares.command("run")
@click.argument("tasks", nargs=-1, required=True)
@model_options
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Where X-ARES keeps its data, embeddings and scores (WORKDIR/env).")
@click.option("--max-jobs", type=click.IntRange(min=0), default=0, show_default=True,
              help="Tasks run at once in worker processes (0: all in this process).")
@click.option("--from-stage", type=click.IntRange(0, 2), default=0, show_default=True,
              help="0 download, 1 encode, 2 MLP and kNN scoring.")
@click.option("--to-stage", type=click.IntRange(0, 2), default=2, show_default=True)
def xares_run(tasks, workdir, max_jobs, from_stage, to_stage, **kwargs) -> None:
    """Run X-ARES's stages on TASKS: names of its tasks (esc50, vocalsound, ...) or task files
    (`def NAME_config(encoder) -> TaskConfig`).

    Stage 0 downloads each public task's audio shards from Zenodo into WORKDIR/env/<task>
    (gigabytes for some; a task whose folder holds `.audio_tar_ready` is not downloaded), so a
    first full run needs the network; stages 1 and 2 work offline.
    """
    _needs("xares")
    from .xares_run import run

    workdir.mkdir(parents=True, exist_ok=True)
    try:
        run(list(tasks), suite_options(**kwargs), workdir=workdir, max_jobs=max_jobs,
            from_stage=from_stage, to_stage=to_stage)
    except MAEASTError as err:
        raise click.ClickException(str(err)) from err


@click.group("mteb")
def mteb() -> None:
    """MAEB / MTEB with MAE-AST (`maeast_suites.mteb_model`): clip embeddings, mean over time."""


@mteb.command("meta")
@model_options
def mteb_meta(**kwargs) -> None:
    """Print the mteb ModelMeta of the model at these options (JSON)."""
    _needs("mteb")
    from .mteb_model import model_meta

    try:
        meta = model_meta(**suite_options(**kwargs))
    except MAEASTError as err:
        raise click.ClickException(str(err)) from err
    click.echo(meta.model_dump_json(indent=2, exclude={"loader"}))


@mteb.command("run")
@click.argument("tasks", nargs=-1)
@model_options
@click.option("--benchmark", default=None,
              help="An mteb benchmark instead of TASKS, e.g. 'MAEB(v1, audio-only)'.")
@click.option("--results", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="mteb's results cache folder (default: mteb's, ~/.cache/mteb or $MTEB_CACHE).")
def mteb_run(tasks, benchmark, results, **kwargs) -> None:
    """Evaluate on mteb TASKS (names, e.g. VoxCelebSA) or a --benchmark; prints each main score.

    mteb downloads each task's data from the Hugging Face Hub on first use, and decodes its
    audio through `datasets`, which needs TorchCodec and FFmpeg.
    """
    _needs("mteb")
    import mteb as mteb_lib
    from mteb.cache import ResultCache

    from .mteb_model import model_meta, register

    if bool(tasks) == bool(benchmark):
        raise click.UsageError("give task names or --benchmark (one of them)")
    try:
        meta = register(model_meta(**suite_options(**kwargs)))
    except MAEASTError as err:
        raise click.ClickException(str(err)) from err
    chosen = mteb_lib.get_benchmark(benchmark).tasks if benchmark else mteb_lib.get_tasks(tasks=list(tasks))
    outcome = mteb_lib.evaluate(meta, chosen, cache=ResultCache(results) if results else ResultCache(),
                                raise_error=False)
    for result in outcome.task_results:
        click.echo(f"{result.task_name}\t{result.get_score():.4f}")
    for failure in outcome.exceptions or []:
        click.echo(f"failed: {failure}", err=True)
    if outcome.exceptions:
        raise SystemExit(1)


@click.command("bench")
@click.option("--suite", "suites", default="hear,xares,maeb", show_default=True,
              help="Suites, comma-separated: hear, superb, xares, maeb (SUPERB trains a downstream model "
              "per task: hours on real data).")
@click.option("--tasks", "-t", "tasks", multiple=True,
              help="Task names, SUITE:TASK, or a preset: 'toy' (small generated tasks, offline) or "
              "'full' (each suite's standard set). Repeatable. Default: full.")
@click.option("--model", "-m", "models", multiple=True,
              help="A model per column (repeatable): a registered name, checkpoint file, Hub folder or id; "
              "'random[:BASE][@SEED]' (BASE's architecture, fresh weights); 'fbank' (no encoder). "
              f"Default: {DEFAULT_MODEL}.")
@encoder_options
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="The run's folder: bench.json, bench.md, bench.csv, bench.png, and cells/ (what is done).")
@click.option("--hear-tasks-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="HEAR's tasks folder (one folder per task, 16 kHz). Default: OUT/hear/tasks.")
@click.option("--hear-grid", type=click.Choice(["default", "fast", "faster"]), default="default",
              show_default=True, help="hear-eval-kit's hyperparameter grid for its predictions.")
@click.option("--xares-workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="X-ARES's folder (its data in WORKDIR/env, as `xares run --workdir`). Default: OUT/xares.")
@click.option("--superb-data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="SUPERB's datasets (speech_commands_v0.01, ..., VoxCeleb1, IEMOCAP_full_release, as "
              "listed when missing). Default: OUT/superb/data.")
@click.option("--superb-steps", type=click.IntRange(min=1), default=None,
              help="SUPERB training steps (default: each task's config, the SUPERB protocol).")
@click.option("--superb-override", "superb_overrides", multiple=True,
              help="An s3prl -o override for every SUPERB task (repeatable), e.g. "
              "config.downstream_expert.datarc.batch_size=32.")
@click.option("--redo", is_flag=True, help="Run every cell again, even those done before.")
def bench(suites, tasks, models, layer, freq_pool, dtype, batch_size, trust_checkpoint, out, hear_tasks_dir,
          hear_grid, xares_workdir, superb_data, superb_steps, superb_overrides, redo) -> None:
    """Run several suites with several models and write one table.

    Each (suite, task, model) result is kept in OUT/cells as soon as it ends: the same command
    again resumes (failed cells are retried). Per task: the suite's own metric, mean ± std over its
    folds, the model's rank (1 = best). Tasks whose data is missing are listed with the command that
    fetches it. Exits 1 if a task failed. The encoder options apply to HEAR, X-ARES and MAEB; SUPERB
    uses s3prl's weighted sum of every layer, as its protocol does.
    """
    from .bench import BenchConfig, run_bench

    options = encoder_values(layer, freq_pool, dtype, batch_size, trust_checkpoint)
    config = BenchConfig(out=out.resolve(), suites=[s.strip() for s in suites.split(",") if s.strip()],
                         tasks=list(tasks) or ["full"], models=list(models), encoder_options=options,
                         hear_tasks_dir=hear_tasks_dir, hear_grid=hear_grid, xares_workdir=xares_workdir,
                         superb_data=superb_data, superb_steps=superb_steps,
                         superb_overrides=tuple(superb_overrides), redo=redo)
    try:
        cells, paths = run_bench(config, echo=lambda line: click.echo(line, err=True))
    except MAEASTError as err:
        raise click.ClickException(str(err)) from err
    click.echo(paths["md"].read_text(), nl=False)
    click.echo(f"wrote {', '.join(str(p) for p in paths.values() if p.exists())}", err=True)
    if any(c.status == "failed" for c in cells):
        raise SystemExit(1)
