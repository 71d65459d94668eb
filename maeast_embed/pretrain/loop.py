"""The pretraining loop: DDP, autocast, gradient accumulation, checkpoints/resume, metrics."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..atomic import append_line, atomic_open, writing
from ..checkpoint import atomic_torch_save, load_model, save_official
from ..errors import ConfigError, MAEASTError
from ..frontend import SAMPLE_RATE, kaldi_fbank
from ..losses import pretrain_loss
from ..model import MAEAST
from .config import TrainConfig
from .data import Batch, epoch_loader, load_dataset_index, plan_epoch, timed

log = logging.getLogger(__name__)
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
STATE_PREFIX = "state_"


class TrainingError(MAEASTError):
    """A run that cannot go on (out of memory, no checkpoint to resume, diverged)."""


class PretrainStep(nn.Module):
    """waveforms [B, N] + masks -> (loss, reconstruction MSE, InfoNCE); what DDP wraps."""

    def __init__(self, model: MAEAST, cfg: TrainConfig, amp_dtype: torch.dtype | None) -> None:
        super().__init__()
        self.model, self.cfg, self.amp_dtype = model, cfg, amp_dtype

    def forward(self, wave: Tensor, kept: Tensor, masked: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        device_type = wave.device.type
        with torch.autocast(device_type, enabled=False):  # features stay exactly float32
            fbank, _ = kaldi_fbank(wave)
            tokens, _ = self.model.tokenize(fbank)
        amp = self.amp_dtype
        with torch.autocast(device_type, dtype=amp or torch.float32, enabled=amp is not None):
            out = self.model.forward_pretrain(tokens, kept, masked, mode=self.cfg.mode)
        loss = pretrain_loss(
            out.reconstruction, out.classification, out.target,
            reconstruction_weight=self.cfg.reconstruction_weight,
            classification_weight=self.cfg.classification_weight,
        )
        return loss.total, loss.reconstruction.detach(), loss.info_nce.detach()


@dataclass
class Dist:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    owns_group: bool = False  # this run created the process group and tears it down

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> Dist:
    """Join the process group torchrun describes in the environment (gloo on CPU, nccl on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    owns = not dist.is_initialized()
    if owns:
        cuda = device != "cpu" and torch.cuda.is_available()
        dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_world_size(), owns)


def resolve_device(name: str, env: Dist) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device cuda requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    return device


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    if name == "auto":
        name = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    return DTYPES[name]


def lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    """Linear warm-up to 1 over `warmup` updates, then linear decay to 0 at `total`."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def state_files(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "checkpoints").glob(f"{STATE_PREFIX}*.pt"))


def _rng_state(device: torch.device) -> dict[str, Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class MetricsLog:
    """metrics.jsonl (one JSON object per line) plus optional TensorBoard."""

    def __init__(self, run_dir: Path, resume_step: int, tensorboard: bool) -> None:
        self.path = run_dir / "metrics.jsonl"
        if self.path.exists():  # drop records a killed run wrote after its last checkpoint
            kept = [line for line in self.path.read_text().splitlines() if _step_of(line) <= resume_step]
            with atomic_open(self.path, "w") as handle:
                handle.write("".join(line + "\n" for line in kept))
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                try:
                    from tensorboardX import SummaryWriter
                except ImportError as err:
                    raise ConfigError("tensorboard=true needs `pip install tensorboard`") from err
            # a resumed run re-logs the steps after its checkpoint: TensorBoard drops the killed
            # run's events from purge_step on
            purge = resume_step + 1 if resume_step else None
            self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge)

    def write(self, record: dict[str, Any]) -> None:
        append_line(self.path, json.dumps(record))  # a full disk: an OutputError naming the file
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"train/{key}", value, record["step"])

    def flush(self) -> None:
        """Put TensorBoard's buffered events on disk (done with each checkpoint, so a killed
        run keeps its curves up to the step it resumes from)."""
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _step_of(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf  # a line cut short by a kill: drop it


def _find_resume(resume: bool | str | Path, run_dir: Path) -> Path | None:
    if resume is False or resume is None:
        if state_files(run_dir):
            raise TrainingError(
                f"{run_dir} already holds training states: pass --resume to continue, or a new -o"
            )
        return None
    if resume is True:
        files = state_files(run_dir)
        if not files:
            raise TrainingError(f"--resume: no training state in {run_dir / 'checkpoints'}")
        return files[-1]
    path = Path(resume)
    if not path.is_file():
        raise TrainingError(f"--resume: {path} is not a file")
    return path


def train(
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool | str | Path = False,
    on_step: Callable[[int, MAEAST], None] | None = None,
) -> Path:
    """Pretrain per `cfg` into `run_dir`; returns the final official-layout checkpoint path.

    `resume=True` continues from the newest training state in run_dir/checkpoints (or give a
    state file): model, optimizer, scheduler, scaler, step, RNG states and data position.
    `on_step(step, model)` runs after every update has been logged and checkpointed.
    """
    cfg.validate()  # a config changed after it was built gets the same checks before training
    run_dir = Path(run_dir)
    env = setup_distributed(cfg.device)
    device = resolve_device(cfg.device, env)
    amp_dtype = resolve_precision(cfg.precision, device)
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # denormal floats slow CPU training steps several-fold
    if cfg.precision == "fp16" and device.type == "cpu":
        raise ConfigError("fp16 autocast needs a GPU; use precision=bf16 or fp32 on CPU")
    state_path = _find_resume(resume, run_dir)

    min_samples = int(round(cfg.min_seconds * SAMPLE_RATE))
    max_samples = int(round(cfg.max_seconds * SAMPLE_RATE)) if cfg.max_seconds else None
    clips = load_dataset_index(cfg.data, min_samples, max_samples)
    lengths = np.array([c.num_samples for c in clips])
    batches_per_epoch = len(plan_epoch(lengths, cfg.batch_size, cfg.seed, 0, env.rank, env.world_size))

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = MAEAST(cfg.model).to(device).train()
    if cfg.init and state_path is None:  # a resumed run takes its weights from the training state
        try:
            model.load_state_dict(load_model(cfg.init).state_dict())
        except RuntimeError as err:
            raise ConfigError(f"init={cfg.init} does not fit the model config: {err}") from err
    model.encoder.checkpoint_activations = cfg.activation_checkpointing
    model.decoder.checkpoint_activations = cfg.activation_checkpointing
    optimizer = torch.optim.AdamW(  # fused: one pass per tensor (the for-loop takes ~8 on CPU)
        model.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay,
        fused=device.type in ("cpu", "cuda"),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.warmup_steps, cfg.max_steps))
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    step, skipped_total = 0, 0
    torch.manual_seed(cfg.seed * 1000 + env.rank)  # dropout/layerdrop differ per rank
    if state_path is not None:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        step, skipped_total = int(state["step"]), int(state.get("skipped", 0))
        rngs = state["rng"]
        if len(rngs) == env.world_size:
            _set_rng_state(rngs[env.rank], device)
        elif env.main:
            log.warning("resuming with %d processes instead of %d: RNG streams restart",
                        env.world_size, len(rngs))
        if env.main:
            log.info("resumed from %s at step %d", state_path, step)

    step_module: nn.Module = PretrainStep(model, cfg, amp_dtype)
    if env.world_size > 1:
        step_module = nn.parallel.DistributedDataParallel(
            step_module, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,  # layerdrop, and the heads/embeddings each mode skips
        )
    if cfg.compile:  # per layer: state-dict names stay, layerdrop/checkpointing stay eager
        for layer in [*model.encoder.layers, *model.decoder.layers]:
            layer.compile(dynamic=True)

    metrics = None
    if env.main:
        with writing(run_dir):
            run_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(run_dir / "config.yaml")
        metrics = MetricsLog(run_dir, step, cfg.tensorboard)
    bar = None
    if env.main and cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.max_steps, initial=step, desc="pretrain", dynamic_ncols=True)

    def save_state() -> None:
        rngs = [_rng_state(device)]
        if env.world_size > 1:
            gathered: list[Any] = [None] * env.world_size
            dist.all_gather_object(gathered, {k: v.cpu() for k, v in rngs[0].items()})
            rngs = gathered
        if not env.main:
            return
        state = {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "step": step, "skipped": skipped_total, "rng": rngs, "config": cfg.to_dict(),
            "world_size": env.world_size,
        }
        atomic_torch_save(state, run_dir / "checkpoints" / f"{STATE_PREFIX}{step:08d}.pt")
        for old in state_files(run_dir)[: -cfg.keep_last]:
            old.unlink(missing_ok=True)
        metrics.flush()

    micro = step * cfg.accum_steps
    epoch, offset = divmod(micro, batches_per_epoch)
    window = {"loss": 0.0, "recon": 0.0, "nce": 0.0, "n": 0, "t": time.perf_counter(), "steps": 0,
              "wait": 0.0}
    last_good: Batch | None = None
    pending = 0  # micro-batches accumulated toward the next update
    try:
        while step < cfg.max_steps:
            plan = plan_epoch(lengths, cfg.batch_size, cfg.seed, epoch, env.rank, env.world_size)[offset:]
            loader = epoch_loader(
                clips, plan, cfg.model, seed=cfg.seed, epoch=epoch, min_samples=min_samples,
                max_samples=max_samples, num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
            )
            good = 0
            for batch in timed(loader, window):  # adds the time spent waiting to window['wait']
                skipped_total += len(batch.skipped)
                good += batch.wave is not None
                weight = 1.0
                if batch.wave is None:  # every clip failed: keep collectives in step, learn nothing
                    if last_good is None:
                        continue
                    batch, weight = last_good, 0.0
                last_good = batch
                wave = batch.wave.to(device, non_blocking=True)
                kept = batch.kept.to(device, non_blocking=True)
                masked = batch.masked.to(device, non_blocking=True)
                pending += 1
                sync = pending == cfg.accum_steps
                no_sync = contextlib.nullcontext()
                if env.world_size > 1 and not sync:
                    no_sync = step_module.no_sync()
                try:
                    with no_sync:
                        loss, recon, nce = step_module(wave, kept, masked)
                        scaler.scale(loss * (weight / cfg.accum_steps)).backward()
                except torch._dynamo.exc.BackendCompilerFailed as err:
                    raise TrainingError(
                        f"torch.compile failed on {device} ({str(err).splitlines()[-1][:200]}); "
                        "run without compile=true"
                    ) from err
                except torch.OutOfMemoryError as err:
                    raise TrainingError(
                        f"out of memory on {device} with batch_size={wave.shape[0]} clips of "
                        f"{wave.shape[1] / SAMPLE_RATE:.2f} s ({cfg.precision}, mode {cfg.mode}): lower "
                        "batch_size (raise accum_steps to keep the effective batch), cap max_seconds, "
                        "or enable activation_checkpointing / bf16"
                    ) from err
                if weight:
                    window["loss"] += loss.item()
                    window["recon"] += recon.item()
                    window["nce"] += nce.item()
                    window["n"] += 1
                if not sync:
                    continue
                pending = 0
                scaler.unscale_(optimizer)
                grad_norm = nn.utils.clip_grad_norm_(
                    model.parameters(), cfg.clip_norm if cfg.clip_norm > 0 else math.inf
                )
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                lr = scheduler.get_last_lr()[0]  # the rate this update used
                scheduler.step()
                step += 1
                window["steps"] += 1
                if step % cfg.log_every == 0 or step == cfg.max_steps:
                    record = _log_record(window, step, lr, grad_norm, skipped_total)
                    if metrics is not None:
                        metrics.write(record)
                    if bar is not None:
                        bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}",
                                        steps_s=f"{record['steps_per_s']:.2f}")
                if bar is not None:
                    bar.update(1)
                if step % cfg.save_every == 0 and step < cfg.max_steps:
                    save_state()
                if on_step is not None:
                    on_step(step, model)
                if step >= cfg.max_steps:
                    break
            if not good and last_good is None:
                raise TrainingError(
                    f"no clip of the data could be decoded ({skipped_total} unreadable): check the paths"
                )
            epoch, offset = epoch + 1, 0
        save_state()
        final = run_dir / "final.pt"
        if env.main:
            save_official(model, final, extra={"step": step, "train_config": cfg.to_dict()})
            if skipped_total:
                log.warning("skipped %d unreadable or too-short clips during training", skipped_total)
        if env.world_size > 1:
            dist.barrier()
        return final
    finally:
        if bar is not None:
            bar.close()
        if metrics is not None:
            metrics.close()
        if env.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _log_record(window: dict[str, Any], step: int, lr: float, grad_norm: Tensor, skipped: int) -> dict:
    now = time.perf_counter()
    n = max(1, window["n"])
    record = {
        "step": step,
        "loss": window["loss"] / n,
        "loss_recon": window["recon"] / n,
        "loss_info_nce": window["nce"] / n,
        "lr": lr,
        "grad_norm": float(grad_norm),
        "steps_per_s": window["steps"] / max(now - window["t"], 1e-9),
        "data_wait": window["wait"] / max(now - window["t"], 1e-9),  # share of the time spent waiting on data
        "skipped": skipped,
    }
    window.update(loss=0.0, recon=0.0, nce=0.0, n=0, t=now, steps=0, wait=0.0)
    return record
