"""Mask samplers: exact counts, kept/masked partition, chunk shapes, seeds, no batch loop, and
the official samplers' statistics (s3prl's copy of the official code run on the same shapes)."""

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from maeast_embed.config import preset
from maeast_embed.errors import ConfigError
from maeast_embed.masking import (
    chunk_mask,
    chunk_mask_batched,
    num_kept,
    official_chunks,
    random_mask,
    random_mask_batched,
    retain_spans,
    sample_mask,
)

SAMPLERS = {
    "random_mask": lambda b, n, p, g: random_mask(b, n, p, generator=g),
    "random_mask_batched": lambda b, n, p, g: random_mask_batched(b, n, p, generator=g),
    "chunk_mask": lambda b, n, p, g: chunk_mask(b, n, p, tokens_per_step=8, generator=g),
    "chunk_mask_batched": lambda b, n, p, g: chunk_mask_batched(b, n, p, tokens_per_step=8, generator=g),
}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("length,prob", [(496, 0.75), (64, 0.75), (8, 0.75), (160, 0.5), (24, 0.9)])
def test_exact_counts_and_partition(name, length, prob):
    kept, masked = SAMPLERS[name](5, length, prob, _gen(3))
    k = max(1, int((1 - prob) * length))
    assert kept.shape == (5, k) and masked.shape == (5, length - k)
    assert kept.dtype == masked.dtype == torch.int64
    both = torch.cat([kept, masked], dim=1).sort(dim=1).values
    assert torch.equal(both, torch.arange(length).expand(5, length))  # disjoint and complete
    assert bool((kept.diff(dim=1) > 0).all()) and bool((masked.diff(dim=1) > 0).all())


def test_num_kept_matches_reference_formula():
    assert num_kept(496, 0.75) == 124
    assert num_kept(3, 0.75) == 1  # int(0.75) = 0 -> at least one kept
    assert num_kept(499, 0.75) == int(0.25 * 499)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_seed_reproduces_and_varies(name):
    a = SAMPLERS[name](4, 128, 0.75, _gen(7))
    b = SAMPLERS[name](4, 128, 0.75, _gen(7))
    c = SAMPLERS[name](4, 128, 0.75, _gen(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_per_clip_vs_batched():
    per_clip = random_mask(6, 200, generator=_gen(0))[1]
    batched = random_mask_batched(6, 200, generator=_gen(0))[1]
    chunks = chunk_mask(6, 200, tokens_per_step=8, generator=_gen(0))[1]
    chunks_batched = chunk_mask_batched(6, 200, tokens_per_step=8, generator=_gen(0))[1]
    assert len({tuple(row.tolist()) for row in per_clip}) == 6
    assert len({tuple(row.tolist()) for row in chunks}) == 6
    assert len({tuple(row.tolist()) for row in batched}) == 1
    assert len({tuple(row.tolist()) for row in chunks_batched}) == 1


def test_random_mask_is_uniform_over_positions():
    masked = random_mask(4000, 20, 0.75, generator=_gen(1))[1]
    freq = torch.bincount(masked.flatten(), minlength=20).float() / 4000
    assert torch.allclose(freq, torch.full((20,), 0.75), atol=0.03)


def _clipped_square(t0, f0, side, steps, chans):
    return {
        t * chans + f
        for t in range(t0, min(t0 + side, steps))
        for f in range(f0, min(f0 + side, chans))
    }


@pytest.mark.parametrize("side", [3, 4, 5])
def test_chunk_shapes(side):
    """With M = side^2, a clip's mask is its first square when that square is whole; otherwise it
    holds a square clipped at the far time/frequency edge plus part of the next square."""
    steps, chans = 40, 8
    length = steps * chans
    prob = side * side / length  # exact in binary for these sizes, so M == side^2
    assert length - num_kept(length, prob) == side * side
    masks = chunk_mask(
        300, length, prob, tokens_per_step=chans, chunk_sizes=(side, side), generator=_gen(side)
    )[1]
    whole = 0
    for row in masks.tolist():
        row = set(row)
        candidates = [
            sq for t0 in range(steps) for f0 in range(chans)
            if (sq := _clipped_square(t0, f0, side, steps, chans)) <= row
        ]
        assert candidates, "every mask contains a (possibly clipped) square"
        if row in candidates:
            whole += 1
        else:  # the first square was clipped at an edge
            assert any(len(sq) < side * side for sq in candidates)
    # P(first square fits) = (steps - side + 1) / steps * (chans - side + 1) / chans
    expected = (steps - side + 1) / steps * (chans - side + 1) / chans
    assert abs(whole / 300 - expected) < 0.1


def test_chunk_mask_masks_contiguous_regions():
    """Chunked masks have far more masked neighbours than random masks of the same count."""
    chans, steps = 8, 62

    def neighbour_rate(masked):
        grid = torch.zeros(masked.shape[0], steps * chans, dtype=torch.bool)
        grid.scatter_(1, masked, True)
        grid = grid.view(-1, steps, chans)
        return (grid[:, 1:] & grid[:, :-1]).float().sum() / grid[:, 1:].float().sum()

    chunked = chunk_mask(64, steps * chans, tokens_per_step=chans, chunk_sizes=(3, 5), generator=_gen(2))[1]
    rand = random_mask(64, steps * chans, generator=_gen(2))[1]
    assert neighbour_rate(chunked) > neighbour_rate(rand) + 0.1


def test_chunk_mask_frame_model_and_devices():
    kept, masked = sample_mask("chunk_mask", 3, 499, tokens_per_step=1, generator=_gen(0), device="cpu")
    assert masked.shape == (3, 499 - 124)
    assert masked.device.type == "cpu"


def test_bad_arguments():
    with pytest.raises(ConfigError, match="mask_type"):
        sample_mask("spans", 2, 10)
    with pytest.raises(ConfigError, match="nothing to mask"):
        random_mask(2, 1)
    with pytest.raises(ConfigError, match="whole time steps"):
        chunk_mask(2, 30, tokens_per_step=8)
    with pytest.raises(ConfigError, match="mask_prob"):
        random_mask(2, 10, 1.0)
    with pytest.raises(ConfigError, match="mask_prob"):
        chunk_mask_batched(2, 64, 0.0)
    with pytest.raises(ConfigError, match=r"mask_prob must be in \(0, 10\) for retain_spans"):
        retain_spans(2, 100, 10.0)
    with pytest.raises(ConfigError, match="nothing to mask"):
        retain_spans(2, 1)


@pytest.mark.parametrize("length,prob", [(499, 1.45), (499, 0.74), (62, 1.45), (12, 0.5), (3, 2.0)])
def test_retain_spans_partition_and_equal_counts(length, prob):
    kept, masked = retain_spans(7, length, prob, generator=_gen(5))
    assert kept.shape[0] == masked.shape[0] == 7 and 0 < kept.shape[1] < length
    both = torch.cat([kept, masked], dim=1).sort(dim=1).values
    assert torch.equal(both, torch.arange(length).expand(7, length))
    assert bool((kept.diff(dim=1) > 0).all()) and bool((masked.diff(dim=1) > 0).all())
    again = sample_mask("retain_spans", 7, length, prob, generator=_gen(5))
    assert torch.equal(again[0], kept) and torch.equal(again[1], masked)


def test_retain_spans_kept_tokens_are_spans():
    """Unsubsampled (a batch of one), the kept tokens are unions of 10-token runs."""
    for seed in range(20):
        kept = retain_spans(1, 300, 0.5, generator=_gen(seed))[0][0]
        grid = torch.zeros(300, dtype=torch.bool)
        grid[kept] = True
        edges = torch.diff(torch.nn.functional.pad(grid.to(torch.int8), (1, 1))).nonzero().flatten()
        assert bool(((edges[1::2] - edges[::2]) >= 10).all())  # every run is at least one span
        assert not grid[-1]  # span starts lie in [0, L - 10): the last token is never covered


# ---- against the official code (s3prl 0.4.18's copy of it) ----------------------------------


def _official():
    return pytest.importorskip("s3prl.upstream.mae_ast.mae_ast")


def _official_model(mask_type: str, name: str = "tiny-patch", mask_prob: float = 0.75):
    cfg = preset(name, mask_type=mask_type, mask_prob=mask_prob).to_official()
    return _official().MAE_AST(SimpleNamespace(**cfg["model"]), SimpleNamespace(**cfg["task"]))


def _as_grid(index_rows, length: int) -> torch.Tensor:
    grid = torch.zeros(len(index_rows), length, dtype=torch.bool)
    for row, idx in zip(grid, index_rows):
        row[torch.as_tensor(np.asarray(idx), dtype=torch.long)] = True
    return grid


def _close(a: torch.Tensor, b: torch.Tensor, sigmas: float = 4.0) -> bool:
    """Means of two samples of per-draw statistics agree within `sigmas` standard errors."""
    se = (a.var() / len(a) + b.var() / len(b)).sqrt()
    return bool((a.mean() - b.mean()).abs() <= sigmas * se)


class _Scripted:
    """Stands in for the `random` module of the official code: a fixed chunk side and origins."""

    def __init__(self, side: int, origins: list[int]) -> None:
        self.side, self.origins = side, iter(origins)

    def randrange(self, start: int, stop: int | None = None) -> int:
        return self.side if stop is not None else next(self.origins)


@pytest.mark.parametrize("name,length", [("tiny-patch", 496), ("tiny-patch", 80), ("tiny-frame", 499)])
def test_chunk_mask_batched_is_the_official_rule(monkeypatch, name, length):
    """Given the same chunk side and origins, the official loop and `official_chunks` mask the
    same tokens (frequency wrap-around, clipping at the end, the stop rule, the first M)."""
    model = _official_model("chunk_mask", name)
    masked = length - num_kept(length, 0.75)
    per_step = model.task_cfg.feature_dim // model.cfg.ast_kernel_stride_chan
    rng = np.random.default_rng(0)
    pad = torch.zeros(2, length, dtype=torch.bool)
    for _ in range(40):
        side, origins = int(rng.integers(3, 6)), rng.integers(0, length, size=length).tolist()
        monkeypatch.setattr(_official(), "random", _Scripted(side, origins))
        _, official, count = model.forward_mask(torch.zeros(2, length, 64), pad)
        ours = official_chunks(torch.tensor(origins), side, length, masked, per_step)
        assert count == masked and official[0] == official[1]
        assert ours.nonzero().flatten().tolist() == official[0]  # same tokens, same (ascending) order


def _chunk_stats(masked: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-draw statistics of [N, 62 * 8] patch masks."""
    grid = masked.view(-1, 62, 8).float()
    return {
        "wrap": (grid[:, :-1, 7] * grid[:, 1:, 0]).mean(1),  # band 8 of step t with band 1 of t + 1
        "freq_pair": (grid[:, :, :-1] * grid[:, :, 1:]).mean((1, 2)),
        "time_pair": (grid[:, :-1] * grid[:, 1:]).mean((1, 2)),
        "start": grid[:, :5].mean((1, 2)),
        "end": grid[:, -5:].mean((1, 2)),
    }


def test_chunk_mask_batched_statistics_match_the_official_sampler():
    """Official chunk_mask (its own random draws) vs ours, 400 calls each on 2 x 496 tokens."""
    model = _official_model("chunk_mask")
    random.seed(0)
    pad = torch.zeros(2, 496, dtype=torch.bool)
    official = _as_grid([model.forward_mask(torch.zeros(2, 496, 64), pad)[1][0] for _ in range(400)], 496)
    gen = _gen(0)
    ours = torch.cat([_as_grid(chunk_mask_batched(2, 496, generator=gen)[1], 496)[:1] for _ in range(400)])
    per_clip = torch.cat([_as_grid(chunk_mask(1, 496, generator=gen)[1], 496) for _ in range(400)])
    assert official.sum(1).unique().tolist() == ours.sum(1).unique().tolist() == [372]
    theirs, mine, clip = _chunk_stats(official), _chunk_stats(ours), _chunk_stats(per_clip)
    for key in theirs:
        assert _close(theirs[key], mine[key]), (key, theirs[key].mean(), mine[key].mean())
    assert clip["wrap"].mean() < theirs["wrap"].mean() - 0.2  # the per-clip sampler never wraps


def _kept_runs(kept: torch.Tensor) -> torch.Tensor:
    edges = torch.diff(torch.nn.functional.pad(kept.to(torch.int8), (1, 1)), dim=1)
    return (edges == -1).nonzero()[:, 1] - (edges == 1).nonzero()[:, 1]


@pytest.mark.parametrize("prob", [1.45, 0.74])
def test_retain_spans_statistics_match_the_official_sampler(prob):
    """fairseq compute_mask_indices as the official code calls it (True = retained) vs ours,
    150 batches of 32 x 499 frame tokens each."""
    official_module = _official()
    batch, length, draws = 32, 499, 150
    pad = torch.zeros(batch, length, dtype=torch.bool)
    np.random.seed(0)
    model = _official_model("retain_spans", "tiny-frame", prob)  # the code's reading of the result:
    retained, _, masked_count = model.forward_mask(torch.zeros(batch, length, 64), pad)
    np.random.seed(0)
    again = official_module.compute_mask_indices(
        (batch, length), pad, prob, 10, "static", 0.0, min_masks=2, no_overlap=False, min_space=0
    )
    assert [list(r) for r in retained] == [list(np.where(row)[0]) for row in again]
    assert masked_count == length - again[0].sum()
    official = torch.stack([
        torch.from_numpy(official_module.compute_mask_indices(
            (batch, length), pad, prob, 10, "static", 0.0, min_masks=2, no_overlap=False, min_space=0
        ))
        for _ in range(draws)
    ])
    gen = _gen(0)
    ours = torch.stack([_as_grid(retain_spans(batch, length, prob, generator=gen)[0], length)
                        for _ in range(draws)])
    for grid in (official, ours):  # the same kept count for every clip of a batch
        counts = grid.sum(2)
        assert bool((counts == counts[:, :1]).all())
        assert not grid[..., -1].any()  # starts in [0, L - 10): the last token is never kept
    kept_o, kept_u = official.float().mean((1, 2)), ours.float().mean((1, 2))
    assert _close(kept_o, kept_u)
    count_o, count_u = official.sum(2)[:, 0].float(), ours.sum(2)[:, 0].float()
    assert abs(count_o.std() / count_u.std() - 1) < 0.3
    runs_o, runs_u = _kept_runs(official.view(-1, length)), _kept_runs(ours.view(-1, length))
    hist_o = torch.bincount(runs_o.clamp(max=30), minlength=31) / len(runs_o)
    hist_u = torch.bincount(runs_u.clamp(max=30), minlength=31) / len(runs_u)
    assert 0.5 * (hist_o - hist_u).abs().sum() < 0.04  # span (kept run) lengths
    profile_o = official.float().mean((0, 1))[:490].view(-1, 10).mean(1)
    profile_u = ours.float().mean((0, 1))[:490].view(-1, 10).mean(1)
    assert (profile_o - profile_u).abs().max() < 0.05  # where in the clip tokens are kept
    # The README's reading (True = masked) would keep ~25% (p=1.45) or ~50% (p=0.74); the code keeps:
    assert abs(kept_u.mean() - {1.45: 0.72, 0.74: 0.475}[prob]) < 0.01
