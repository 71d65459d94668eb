"""`maeast-embed doctor`: the processor, what each `--dtype` does on it, and what `auto` picks."""

from __future__ import annotations

import json

import click

from .cli_common import trust_option


def doctor_record(device: str, model: str | None, trust_checkpoint: bool) -> dict:
    """The facts `doctor` prints, as one JSON-ready dict."""
    import torch

    from .checkpoint import load_model
    from .features import resolve_device
    from .precision import auto_choice, auto_dtype, cpu_report, dtype_support

    target = resolve_device(device)
    loaded = load_model(model, trust_checkpoint=trust_checkpoint) if model else None
    choice = auto_dtype(target, loaded) if loaded is not None else auto_choice(target)
    record = {
        "torch": torch.__version__,
        "device": str(target),
        "threads": torch.get_num_threads(),
        "cpu": cpu_report().summary(),
        "dtypes": {name: {"status": s.status, "note": s.note} for name, s in dtype_support(target).items()},
        "auto": {"picks": choice.dtype, "reason": choice.reason,
                 "model": loaded.checkpoint.path if loaded is not None else None},
    }
    if target.type == "cuda":
        record["gpu"] = torch.cuda.get_device_name(target)
    return record


@click.command(short_help="Show the processor, each dtype's support, and what --dtype auto picks.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1 or auto.")
@click.option("--model", default=None,
              help="Also run auto's int8 check on this checkpoint or name (default: the rule alone).")
@trust_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def doctor(device: str, model: str | None, trust_checkpoint: bool, as_json: bool) -> None:
    """Print the CPU (or GPU) and its reduced-precision units, the kernel caps set in the
    environment (ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY, FBGEMM_ENABLE_INSTRUCTIONS,
    MAEAST_CPU_FLAGS), whether each dtype runs natively, emulated or not at all, and what
    `--dtype auto` picks here and why. Nothing is timed: auto depends on the machine alone."""
    from .errors import MAEASTError

    try:
        record = doctor_record(device, model, trust_checkpoint)
    except MAEASTError as err:
        raise click.ClickException(str(err)) from err
    if as_json:
        click.echo(json.dumps(record))
        return
    cpu = record["cpu"]
    click.echo(f"torch      : {record['torch']} ({record['threads']} threads)")
    click.echo(f"device     : {record['device']}" + (f" ({record['gpu']})" if "gpu" in record else ""))
    click.echo(f"cpu        : {cpu['model']} [{cpu['class']}]")
    overridden = " (from MAEAST_CPU_FLAGS)" if cpu["flags_overridden"] else ""
    click.echo(f"units      : {' '.join(cpu['unit_flags']) or '-'}{overridden}")
    caps = {k: cpu[k] for k in ("ONEDNN_MAX_CPU_ISA", "FBGEMM_ENABLE_INSTRUCTIONS") if cpu[k]}
    click.echo(f"kernels    : ATen {cpu['aten_capability']}"
               + "".join(f", {k}={v}" for k, v in caps.items()))
    for name, support in record["dtypes"].items():
        click.echo(f"  {name:<9} {support['status']:<12} {support['note']}")
    auto = record["auto"]
    on = f" for {auto['model']}" if auto["model"] else ""
    click.echo(f"auto       : {auto['picks']}{on} ({auto['reason']})")
