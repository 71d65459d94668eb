"""Vectorised mask samplers for MAE-AST pretraining (REFERENCE.md section 4).

Every sampler returns `(kept [B, K], masked [B, M])` token indices, each row sorted, with
exactly K = max(1, int((1 - mask_prob) * L)) kept and M = L - K masked tokens per clip. The
randomness comes from an optional `torch.Generator`, so a seed reproduces the masks; the
work happens on the generator's device and the result is moved to `device`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .config import MASK_TYPES
from .errors import ConfigError

CHUNK_SIZES = (3, 5)  # square chunk side, drawn uniformly per clip (inclusive), as SSAST


def num_kept(length: int, mask_prob: float) -> int:
    """Tokens the encoder sees: max(1, int((1 - mask_prob) * length))."""
    return max(1, int((1.0 - mask_prob) * length))


def _check(length: int, mask_prob: float) -> tuple[int, int]:
    if not 0.0 < mask_prob < 1.0:
        raise ConfigError(f"mask_prob must be in (0, 1), got {mask_prob}")
    kept = num_kept(length, mask_prob)
    if length - kept < 1:
        raise ConfigError(f"a clip of {length} tokens leaves nothing to mask at mask_prob={mask_prob}")
    return kept, length - kept


def _gen_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _split(order: Tensor, kept: int, device) -> tuple[Tensor, Tensor]:
    """First `kept` columns of a per-row token order are kept, the rest masked (rows sorted)."""
    return (
        order[:, :kept].sort(dim=1).values.to(device),
        order[:, kept:].sort(dim=1).values.to(device),
    )


def random_mask(
    batch: int,
    length: int,
    mask_prob: float = 0.75,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """An independent random permutation per clip (the released frame model's masking)."""
    kept, _ = _check(length, mask_prob)
    keys = torch.rand(batch, length, generator=generator, device=_gen_device(generator))
    return _split(keys.argsort(dim=1), kept, device or keys.device)


def random_mask_batched(
    batch: int,
    length: int,
    mask_prob: float = 0.75,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """One random permutation shared by every clip of the batch."""
    kept, _ = _check(length, mask_prob)
    keys = torch.rand(1, length, generator=generator, device=_gen_device(generator))
    order = keys.argsort(dim=1).expand(batch, length)
    return _split(order, kept, device or keys.device)


def chunk_mask(
    batch: int,
    length: int,
    mask_prob: float = 0.75,
    *,
    tokens_per_step: int = 8,
    chunk_sizes: tuple[int, int] = CHUNK_SIZES,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """SSAST-style chunks: c x c squares in each clip's (time step, frequency patch) grid.

    Per clip a side c is drawn from `chunk_sizes` (inclusive) and square origins uniformly
    over the grid (squares are clipped at the far edges). Squares are added in order until M
    tokens are masked; the last square is cut at random so the count is exact. Unlike the
    reference (one mask per batch, frequency wrapping into the next step), every clip gets
    its own mask and squares never wrap.
    """
    if length % tokens_per_step:
        raise ConfigError(f"{length} tokens are not whole time steps of {tokens_per_step} patches")
    lo, hi = chunk_sizes
    if not 1 <= lo <= hi:
        raise ConfigError(f"chunk_sizes must satisfy 1 <= lo <= hi, got {chunk_sizes}")
    kept, masked = _check(length, mask_prob)
    gen_device = _gen_device(generator)
    steps, chans = length // tokens_per_step, tokens_per_step
    # Enough squares that their union covers M tokens with overwhelming probability; any
    # token still uncovered is ordered after all covered ones, so the count stays exact.
    smallest = lo * min(lo, chans)
    count = math.ceil(4 * masked / smallest) + 4
    side = torch.randint(lo, hi + 1, (batch, 1, 1, 1), generator=generator, device=gen_device)
    t0 = torch.randint(0, steps, (batch, count, 1, 1), generator=generator, device=gen_device)
    f0 = torch.randint(0, chans, (batch, count, 1, 1), generator=generator, device=gen_device)
    dt = torch.arange(steps, device=gen_device).view(1, 1, steps, 1) - t0
    df = torch.arange(chans, device=gen_device).view(1, 1, 1, chans) - f0
    covered = (dt >= 0) & (dt < side) & (df >= 0) & (df < side)  # [B, count, steps, chans]
    chunk_id = torch.arange(count, device=gen_device).view(1, count, 1, 1)
    first = torch.where(covered, chunk_id, count).amin(dim=1).reshape(batch, length)
    keys = first + torch.rand(batch, length, generator=generator, device=gen_device)
    order = keys.argsort(dim=1)  # masked tokens first: earliest squares, then the rest
    return _split(order.flip(1), kept, device or gen_device)


def sample_mask(
    mask_type: str,
    batch: int,
    length: int,
    mask_prob: float = 0.75,
    *,
    tokens_per_step: int = 8,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Dispatch on the official `mask_type` name."""
    if mask_type == "random_mask":
        return random_mask(batch, length, mask_prob, generator=generator, device=device)
    if mask_type == "random_mask_batched":
        return random_mask_batched(batch, length, mask_prob, generator=generator, device=device)
    if mask_type == "chunk_mask":
        return chunk_mask(
            batch, length, mask_prob, tokens_per_step=tokens_per_step, generator=generator, device=device
        )
    raise ConfigError(f"mask_type must be one of {MASK_TYPES}, got {mask_type!r}")
