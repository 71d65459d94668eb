"""Linear probe on frozen clip embeddings: standardisation, L2-regularised logistic regression
(full-batch L-BFGS in torch) with the penalty picked on validation data only, one layer, a sweep
over every layer, or a learned softmax-weighted sum of layers."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from maeast_embed.errors import ConfigError

from .datasets import Split
from .metrics import headline, scores

LAYER_MODES = ("last", "all", "weighted")


@dataclass(frozen=True)
class ProbeConfig:
    """L2 penalties to try (strongest first: each fit warm-starts the next) and solver limits."""

    l2_grid: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)
    max_iter: int = 100
    seed: int = 0


def parse_layer_mode(text: str | int) -> str | int:
    """'last', 'all' (sweep), 'weighted' (learned sum) or a 1-based layer number (negative from the end)."""
    text = str(text).strip()
    if text in LAYER_MODES:
        return text
    try:
        number = int(text)
    except ValueError as err:
        raise ConfigError(f"--layer must be last, all, weighted or a layer number, got {text!r}") from err
    if number == 0:
        raise ConfigError("layer numbers start at 1 (negative numbers count from the end)")
    return number


def layer_index(number: int, count: int) -> int:
    if not -count <= number <= count or number == 0:
        raise ConfigError(f"layer {number} does not exist: this model has layers 1..{count}")
    return number - 1 if number > 0 else count + number


def standardise(x: Tensor, train: Tensor) -> Tensor:
    """Zero mean, unit variance per feature using the training rows' statistics."""
    mean = x[train].mean(0)
    std = x[train].std(0, unbiased=False)
    return (x - mean) / torch.where(std > 1e-6, std, torch.ones_like(std))


def _loss(logits: Tensor, y: Tensor, multilabel: bool) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, y) if multilabel else F.cross_entropy(logits, y)


def _probs(logits: Tensor, multilabel: bool) -> np.ndarray:
    return (logits.sigmoid() if multilabel else logits.softmax(-1)).cpu().numpy()


def fit(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    multilabel: bool,
    l2: float,
    *,
    init: dict[str, Tensor] | None = None,
    max_iter: int = 100,
) -> dict[str, Tensor]:
    """Minimise mean cross-entropy + l2 * ||W||^2 with L-BFGS.

    x is [n, D] (one layer) or [n, L, D] (a softmax-weighted sum of L layers is learned too).
    Returns the parameters {'weight', 'bias'[, 'alpha']}.
    """
    dim = x.shape[-1]
    params = {
        "weight": torch.zeros(num_classes, dim, device=x.device),
        "bias": torch.zeros(num_classes, device=x.device),
    }
    if x.dim() == 3:
        params["alpha"] = torch.zeros(x.shape[1], device=x.device)
    if init is not None:
        params = {k: init[k].clone() if k in init else v for k, v in params.items()}
    for value in params.values():
        value.requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        list(params.values()),
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=1e-7,
        tolerance_change=1e-10,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = _loss(forward(params, x), y, multilabel) + l2 * params["weight"].pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return {k: v.detach() for k, v in params.items()}


def forward(params: dict[str, Tensor], x: Tensor) -> Tensor:
    if "alpha" in params:
        x = torch.einsum("l,nld->nd", params["alpha"].softmax(0), x)
    return x @ params["weight"].T + params["bias"]


@contextlib.contextmanager
def _threads_for(x: Tensor):
    """One CPU thread for small problems: thread start-up and barriers cost more than they save."""
    previous = torch.get_num_threads()
    small = x.device.type == "cpu" and x.numel() < 4_000_000
    if small:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if small:
            torch.set_num_threads(previous)


def select_and_test(
    x: Tensor, y: Tensor, split: Split, num_classes: int, multilabel: bool, cfg: ProbeConfig
) -> dict[str, Any]:
    """Fit one model per L2 value on train, keep the best on valid, score it on test."""
    metric = headline(multilabel)
    truth = y.cpu().numpy()
    tr, va, te = (torch.as_tensor(i, device=x.device) for i in (split.train, split.valid, split.test))
    best: tuple | None = None
    params = None
    for l2 in cfg.l2_grid:
        torch.manual_seed(cfg.seed)
        with _threads_for(x):
            params = fit(x[tr], y[tr], num_classes, multilabel, l2, init=params, max_iter=cfg.max_iter)
        with torch.no_grad():
            logits = forward(params, x[va])
            loss = float(_loss(logits, y[va], multilabel))
        valid = scores(_probs(logits, multilabel), truth[split.valid], multilabel)
        rank = (valid[metric], -loss)
        if best is None or rank > best[0]:
            best = (rank, l2, valid, params)
    assert best is not None
    _, l2, valid, params = best
    with torch.no_grad():
        probs = _probs(forward(params, x[te]), multilabel)
    result = {
        "l2": l2,
        "valid": valid,
        "test": scores(probs, truth[split.test], multilabel),
        "test_probs": probs,
    }
    if "alpha" in params:
        result["layer_weights"] = params["alpha"].softmax(0).cpu().tolist()
    return result


def probe_split(
    values: np.ndarray,
    targets: np.ndarray,
    split: Split,
    layer: str | int,
    *,
    num_classes: int,
    multilabel: bool,
    cfg: ProbeConfig,
    device: torch.device,
) -> dict[str, Any]:
    """Linear probe for one split. values [N, L, D]; layer 'last' | number | 'all' | 'weighted'.

    'all' fits every layer and reports each; the split's headline is the layer with the best
    validation score. Layer numbers in the result are 1-based.
    """
    count = values.shape[1]
    x = torch.as_tensor(values, device=device)
    train = torch.as_tensor(split.train, device=device)
    x = torch.stack([standardise(x[:, i], train) for i in range(count)], dim=1)
    y = torch.as_tensor(targets, device=device)
    base = {
        "split": split.name,
        "n_train": len(split.train),
        "n_valid": len(split.valid),
        "n_test": len(split.test),
    }
    if layer in ("weighted", "all") and count == 1:  # e.g. the fbank baseline
        layer = "last"
    if layer == "weighted":
        return {**base, "layer": "weighted", **select_and_test(x, y, split, num_classes, multilabel, cfg)}
    if layer == "all":
        metric = headline(multilabel)
        sweep = [
            {"layer": i + 1, **select_and_test(x[:, i], y, split, num_classes, multilabel, cfg)}
            for i in range(count)
        ]
        chosen = max(sweep, key=lambda r: r["valid"][metric])
        per_layer = [{k: v for k, v in r.items() if k != "test_probs"} for r in sweep]
        return {**base, **chosen, "per_layer": per_layer}
    index = count - 1 if layer == "last" else layer_index(int(layer), count)
    return {
        **base,
        "layer": index + 1,
        **select_and_test(x[:, index], y, split, num_classes, multilabel, cfg),
    }
