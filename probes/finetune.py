"""Fine-tuning: the encoder plus a linear head on mean-pooled last-layer tokens, trained end to
end with AdamW (optional layer-wise lr decay), linear warm-up then cosine decay, early stopping
on the validation score, mixed precision, and batches of clips of similar length."""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maeast_embed.errors import ConfigError
from maeast_embed.frontend import SAMPLE_RATE, kaldi_fbank, min_samples_for_tokens
from maeast_embed.model import MAEAST

from .choices import PRECISIONS
from .datasets import Split
from .metrics import headline, scores


@dataclass(frozen=True)
class FinetuneConfig:
    epochs: int = 20
    batch_size: int = 16
    lr: float = 5e-5  # encoder (top layer); lower layers get lr * layer_decay ** depth
    head_lr: float = 1e-3
    layer_decay: float = 1.0  # 1.0 = no layer-wise decay; 0.75 is a common choice
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    patience: int = 3  # epochs without validation improvement before stopping
    precision: str = "auto"  # auto: bf16 autocast on CUDA with bf16 support, else fp32
    max_seconds: float = 10.24  # longer clips: random crop in training, centre crop in evaluation
    grad_clip: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ConfigError("epochs, batch_size and patience must be at least 1")
        if not 0 < self.layer_decay <= 1:
            raise ConfigError(f"layer_decay must be in (0, 1], got {self.layer_decay}")


class Classifier(nn.Module):
    """MAE-AST encoder + linear head on the last layer's features pooled like the frozen probe's
    (the tokens of a time step concatenated, then the mean over valid time steps)."""

    def __init__(self, encoder: MAEAST, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.cfg.embed_dim * encoder.cfg.tokens_per_step, num_classes)

    def forward(self, waves: Tensor, lengths: Tensor) -> Tensor:
        with torch.autocast(waves.device.type, enabled=False):  # the fbank stays float32
            fbank, frames = kaldi_fbank(waves.float(), lengths)
        tokens, mask = self.encoder.tokenize(fbank, frames)
        hidden = self.encoder(tokens, mask)[-1]
        batch, length, dim = hidden.shape
        per_step = self.encoder.cfg.tokens_per_step
        steps = hidden.reshape(batch, length // per_step, per_step * dim)
        if mask is None:
            return self.head(steps.mean(1))
        keep = (~mask[:, ::per_step]).unsqueeze(-1).to(steps.dtype)
        return self.head((steps * keep).sum(1) / keep.sum(1))

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        self.encoder.batch_norm.eval()  # keep the checkpoint's fbank statistics
        return self


def param_groups(clf: Classifier, cfg: FinetuneConfig) -> list[dict[str, Any]]:
    """AdamW groups: head at head_lr; encoder layer i (of L) at lr * decay^(L-1-i); the patch
    projection and input LayerNorm at lr * decay^L. Biases and norms get no weight decay.
    Parameters the inference path never uses (decoder, pretraining heads) are frozen."""
    model = clf.encoder
    depth = len(model.encoder.layers)
    scale: dict[str, float] = {}
    for name, _ in model.named_parameters():
        if name.startswith("encoder.layers."):
            scale[name] = cfg.layer_decay ** (depth - 1 - int(name.split(".")[2]))
        elif name.startswith(("post_extract_proj.", "encoder.layer_norm.")):
            scale[name] = cfg.layer_decay**depth
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if name not in scale:
            param.requires_grad_(False)
            continue
        decay = 0.0 if param.dim() == 1 else cfg.weight_decay
        groups.setdefault((cfg.lr * scale[name], decay), []).append(param)
    result = [{"params": p, "lr": lr, "weight_decay": wd} for (lr, wd), p in groups.items()]
    result.append({"params": [clf.head.weight], "lr": cfg.head_lr, "weight_decay": cfg.weight_decay})
    result.append({"params": [clf.head.bias], "lr": cfg.head_lr, "weight_decay": 0.0})
    return result


def length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    """Positions grouped into batches of similar length; shuffled (within ties and across batches)
    when `rng` is given."""
    jitter = rng.random(len(lengths)) if rng is not None else np.zeros(len(lengths))
    order = np.lexsort((jitter, lengths))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def make_batch(
    waves: list[np.ndarray], max_samples: int, min_samples: int, rng: np.random.Generator | None
) -> tuple[Tensor, Tensor]:
    """Crop (random with `rng`, else centred) to max_samples, zero-pad short clips to min_samples,
    then pad to a batch."""
    pieces = []
    for wave in waves:
        if wave.size > max_samples:
            extra = wave.size - max_samples
            start = int(rng.integers(0, extra + 1)) if rng is not None else extra // 2
            wave = wave[start : start + max_samples]
        pieces.append(torch.from_numpy(wave))
    lengths = torch.tensor([max(p.numel(), min_samples) for p in pieces])
    batch = nn.utils.rnn.pad_sequence(pieces, batch_first=True)
    return F.pad(batch, (0, int(lengths.max()) - batch.shape[1])), lengths


def _autocast(device: torch.device, precision: str):
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext(), precision
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype), precision


@torch.no_grad()
def predict(
    clf: Classifier,
    waves: list[np.ndarray],
    cfg: FinetuneConfig,
    multilabel: bool,
    device: torch.device,
    autocast,
) -> np.ndarray:
    clf.eval()
    lengths = np.array([w.size for w in waves])
    out = np.zeros((len(waves), clf.head.out_features), dtype=np.float32)
    max_samples = int(cfg.max_seconds * SAMPLE_RATE)
    min_samples = min_samples_for_tokens(clf.encoder.cfg.kernel_time)
    for batch_idx in length_batches(lengths, cfg.batch_size, None):
        batch, lens = make_batch([waves[i] for i in batch_idx], max_samples, min_samples, None)
        with autocast:
            logits = clf(batch.to(device), lens.to(device)).float()
        out[batch_idx] = (logits.sigmoid() if multilabel else logits.softmax(-1)).cpu().numpy()
    return out


def finetune_split(
    base: MAEAST,
    waves: list[np.ndarray],
    targets: np.ndarray,
    split: Split,
    *,
    num_classes: int,
    multilabel: bool,
    cfg: FinetuneConfig,
    device: torch.device,
    log=None,
) -> dict[str, Any]:
    """Train a fresh copy of `base` on split.train, stop early on split.valid, score split.test.

    `waves` holds the clips by dataset index (None for unreadable ones, never in the split)."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    clf = Classifier(copy.deepcopy(base), num_classes).to(device)
    clf.encoder.encoder.layerdrop = 0.0  # every layer runs: the head always sees the last one
    optimizer = torch.optim.AdamW(param_groups(clf, cfg))
    autocast, precision = _autocast(device, cfg.precision)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    train_lengths = np.array([waves[i].size for i in split.train])
    steps_per_epoch = math.ceil(len(split.train) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    warmup = max(1, round(cfg.warmup_fraction * total))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    y = torch.as_tensor(targets)
    metric = headline(multilabel)
    max_samples = int(cfg.max_seconds * SAMPLE_RATE)
    min_samples = min_samples_for_tokens(base.cfg.kernel_time)
    valid_waves = [waves[i] for i in split.valid]
    best_score, best_epoch, best_state, stale, history = -math.inf, 0, None, 0, []
    for epoch in range(1, cfg.epochs + 1):
        clf.train()
        losses = []
        for batch_pos in length_batches(train_lengths, cfg.batch_size, rng):
            idx = split.train[batch_pos]
            batch, lens = make_batch([waves[i] for i in idx], max_samples, min_samples, rng)
            with autocast:
                logits = clf(batch.to(device), lens.to(device)).float()
            target = y[idx].to(device)
            loss = (
                F.binary_cross_entropy_with_logits(logits, target)
                if multilabel
                else F.cross_entropy(logits, target)
            )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(clf.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            losses.append(loss.item())
        probs = predict(clf, valid_waves, cfg, multilabel, device, autocast)
        valid = scores(probs, targets[split.valid], multilabel)
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "valid": valid})
        if log is not None:
            log(
                f"  {split.name} epoch {epoch}: loss {np.mean(losses):.4f}, "
                f"valid {metric} {valid[metric]:.4f}"
            )
        if valid[metric] > best_score:
            best_score, best_epoch, stale = valid[metric], epoch, 0
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in clf.state_dict().items()}
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    clf.load_state_dict(best_state)
    probs = predict(clf, [waves[i] for i in split.test], cfg, multilabel, device, autocast)
    return {
        "split": split.name,
        "n_train": len(split.train),
        "n_valid": len(split.valid),
        "n_test": len(split.test),
        "layer": "last",
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "precision": precision,
        "valid": history[best_epoch - 1]["valid"],
        "test": scores(probs, targets[split.test], multilabel),
        "history": history,
        "hyperparameters": asdict(cfg),
        "test_probs": probs,
    }
