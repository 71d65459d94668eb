"""Mask samplers: exact counts, kept/masked partition, chunk shapes, seeds, no batch loop."""

import pytest
import torch

from maeast_embed.errors import ConfigError
from maeast_embed.masking import chunk_mask, num_kept, random_mask, random_mask_batched, sample_mask

SAMPLERS = {
    "random_mask": lambda b, n, p, g: random_mask(b, n, p, generator=g),
    "random_mask_batched": lambda b, n, p, g: random_mask_batched(b, n, p, generator=g),
    "chunk_mask": lambda b, n, p, g: chunk_mask(b, n, p, tokens_per_step=8, generator=g),
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
    assert len({tuple(row.tolist()) for row in per_clip}) == 6
    assert len({tuple(row.tolist()) for row in chunks}) == 6
    assert len({tuple(row.tolist()) for row in batched}) == 1


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
