"""Vectorised mask samplers for MAE-AST pretraining (REFERENCE.md section 4).

Every sampler returns `(kept [B, K], masked [B, M])` token indices, each row sorted, with the
same K kept and M = L - K masked tokens for every clip of the batch: K = max(1, int((1 -
mask_prob) * L)), except for `retain_spans`, whose K is random (the official code's). The
randomness comes from an optional `torch.Generator`, so a seed reproduces the masks; the work
happens on the generator's device and the result is moved to `device`.

The official code's samplers: `random_mask`, `random_mask_batched`, `chunk_mask_batched` (its
`chunk_mask`, exactly) and `retain_spans`. `chunk_mask` is this port's per-clip variant.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import MASK_TYPES, SPAN_LENGTH, mask_prob_error
from .errors import ConfigError

CHUNK_SIZES = (3, 5)  # square chunk side, drawn uniformly (inclusive): per clip or per call
MIN_SPANS = 2  # retain_spans: fairseq min_masks as the official code passes it


def num_kept(length: int, mask_prob: float) -> int:
    """Tokens the encoder sees: max(1, int((1 - mask_prob) * length))."""
    return max(1, int((1.0 - mask_prob) * length))


def _check(length: int, mask_prob: float) -> tuple[int, int]:
    if problem := mask_prob_error("random_mask", mask_prob):  # any sampler but retain_spans
        raise ConfigError(problem)
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
    official sampler (`chunk_mask_batched`: one mask per batch, frequency wrapping into the
    next step), every clip gets its own mask and squares never wrap.
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


def official_chunks(
    origins: Tensor, side: int, length: int, masked: int, tokens_per_step: int
) -> Tensor | None:
    """The official chunk rule on given chunk origins: [L] bool, True = masked (None when the
    origins run out before the rule stops).

    Chunk j holds `origins[j] + t_off + tokens_per_step * c_off` for t_off, c_off in [0, side)
    where < length: tokens are time-major, so `+t_off` steps in frequency, wrapping into the
    next time step past the last band, and the other offset steps in time. Chunks are added in
    order until more than `masked` tokens are covered; the `masked` lowest of them are masked.
    """
    steps = torch.arange(side, device=origins.device)
    tokens = origins.view(-1, 1) + (steps.view(-1, 1) + tokens_per_step * steps).flatten()
    chunk_id = torch.arange(len(origins), device=origins.device).view(-1, 1).expand_as(tokens)
    inside = tokens < length
    first = torch.full((length,), len(origins), dtype=torch.long, device=origins.device)
    first.scatter_reduce_(0, tokens[inside], chunk_id[inside], "amin")  # first chunk covering a token
    covered = torch.bincount(first, minlength=len(origins) + 1)[:-1].cumsum(0)  # after chunks 0..j
    if len(covered) == 0 or covered[-1] <= masked:
        return None
    in_union = first <= torch.searchsorted(covered, masked, right=True)
    return in_union & (in_union.cumsum(0) <= masked)


def chunk_mask_batched(
    batch: int,
    length: int,
    mask_prob: float = 0.75,
    *,
    tokens_per_step: int = 8,
    chunk_sizes: tuple[int, int] = CHUNK_SIZES,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """The official `chunk_mask`, exactly: one mask for the whole batch.

    A side c is drawn once per call from `chunk_sizes` (inclusive), chunk origins uniformly
    from [0, L), and `official_chunks` applied. Masking the lowest covered tokens is the order
    of the official `list(set)[:M]` whenever M + 1 >= 0.6 L (CPython's set table is then larger
    than L, so it iterates in ascending order; at the official 75% it always is); below that,
    Python's order is a hash-table artefact, which this sampler does not reproduce.
    """
    lo, hi = chunk_sizes
    if not 1 <= lo <= hi:
        raise ConfigError(f"chunk_sizes must satisfy 1 <= lo <= hi, got {chunk_sizes}")
    kept, masked = _check(length, mask_prob)
    gen_device = _gen_device(generator)
    side = int(torch.randint(lo, hi + 1, (1,), generator=generator, device=gen_device))
    draws = math.ceil(4 * masked / (side * side)) + 4  # usually enough; more are drawn if not
    origins = torch.empty(0, dtype=torch.long, device=gen_device)
    is_masked = None
    while is_masked is None:
        more = torch.randint(0, length, (draws,), generator=generator, device=gen_device)
        origins = torch.cat([origins, more])
        is_masked = official_chunks(origins, side, length, masked, tokens_per_step)
    order = torch.cat([(~is_masked).nonzero().flatten(), is_masked.nonzero().flatten()])
    return _split(order.expand(batch, length), kept, device or gen_device)


def retain_spans(
    batch: int,
    length: int,
    mask_prob: float = 0.75,
    *,
    span: int = SPAN_LENGTH,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    max_tries: int = 100,
) -> tuple[Tensor, Tensor]:
    """wav2vec2-style spans, read the way the official code reads them: the spans are KEPT.

    fairseq `compute_mask_indices` as the official code calls it (static spans of `span`
    tokens, at least 2, overlaps allowed, the same count for every clip): per clip n =
    max(2, int(mask_prob * L / span + U[0, 1))) span starts drawn without replacement from
    [0, L - span) (from [0, n + 1) when that is too few), then every clip's covered tokens
    subsampled at random to the batch's smallest count. The official code keeps those tokens
    (True = retained); its README reads mask_prob as the masked share instead: mask_prob=1.45
    keeps about 72% of the tokens (B=32, L=499), not 25%. A draw that keeps nothing (redrawn
    by the official code too) or everything (nothing to learn from) is redrawn.
    """
    if problem := mask_prob_error("retain_spans", mask_prob):
        raise ConfigError(problem)
    if length < 2:
        raise ConfigError(f"a clip of {length} tokens leaves nothing to mask")
    gen_device = _gen_device(generator)
    for _ in range(max_tries):
        spans = (mask_prob * length / span + torch.rand(batch, 1, generator=generator, device=gen_device))
        spans = spans.long().clamp(min=MIN_SPANS)
        starts_from = torch.where(length - span <= spans, spans + 1, torch.full_like(spans, length - span))
        width = max(length, int(starts_from.max()))
        keys = torch.rand(batch, width, generator=generator, device=gen_device)
        keys = keys.masked_fill(torch.arange(width, device=gen_device) >= starts_from, 2.0)
        first_n = torch.arange(width, device=gen_device) < spans  # the n lowest keys are the starts
        chosen = torch.zeros_like(first_n).scatter_(1, keys.argsort(dim=1), first_n)
        count = F.pad(chosen.long().cumsum(1), (span, 0))  # count[:, i + span] = starts <= i
        covered = count[:, span : span + length] > count[:, :length]  # a start in (t - span, t]
        kept = int(covered.sum(1).min())
        if 0 < kept < length:
            break
    else:
        raise ConfigError(
            f"retain_spans at mask_prob={mask_prob} kept no token or every token of {length} "
            f"in {max_tries} draws"
        )
    keys = torch.rand(batch, length, generator=generator, device=gen_device) + (~covered)
    return _split(keys.argsort(dim=1), kept, device or gen_device)


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
    if mask_type in ("chunk_mask", "chunk_mask_batched"):
        sampler = chunk_mask if mask_type == "chunk_mask" else chunk_mask_batched
        return sampler(
            batch, length, mask_prob, tokens_per_step=tokens_per_step, generator=generator, device=device
        )
    if mask_type == "retain_spans":
        return retain_spans(batch, length, mask_prob, generator=generator, device=device)
    raise ConfigError(f"mask_type must be one of {MASK_TYPES}, got {mask_type!r}")
