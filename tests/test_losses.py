"""10 x MSE + InfoNCE against a plain per-clip computation."""

import torch
import torch.nn.functional as F

from maeast_embed.losses import info_nce_loss, pretrain_loss, reconstruction_loss


def _reference(recon, cls, target):
    mse = ((recon - target) ** 2).mean()
    nce = torch.stack(
        [F.cross_entropy(cls[b] @ target[b].T, torch.arange(target.shape[1])) for b in range(target.shape[0])]
    ).mean()
    return mse, nce


def test_matches_per_clip_cross_entropy():
    torch.manual_seed(0)
    recon, cls, target = (torch.randn(3, 17, 256) for _ in range(3))
    mse, nce = _reference(recon, cls, target)
    out = pretrain_loss(recon, cls, target)
    assert torch.allclose(out.reconstruction, mse, rtol=1e-6)
    assert torch.allclose(out.info_nce, nce, rtol=1e-5)
    assert torch.allclose(out.total, 10 * mse + nce, rtol=1e-5)
    weighted = pretrain_loss(recon, cls, target, reconstruction_weight=0.0, classification_weight=2.0)
    assert torch.allclose(weighted.total, 2 * nce, rtol=1e-5)


def test_negatives_are_only_within_the_clip():
    torch.manual_seed(1)
    cls, target = torch.randn(2, 9, 32), torch.randn(2, 9, 32)
    alone = info_nce_loss(cls[:1], target[:1])
    changed = target.clone()
    changed[1] = torch.randn(9, 32) * 5  # another clip's targets must not affect clip 0
    both = info_nce_loss(cls, changed)
    other = info_nce_loss(cls[1:], changed[1:])
    assert torch.allclose(both, (alone + other) / 2, rtol=1e-5)


def test_perfect_predictions_give_low_loss_and_low_precision_inputs():
    torch.manual_seed(2)
    target = torch.randn(2, 12, 64)
    assert reconstruction_loss(target, target) == 0
    assert info_nce_loss(target * 10, target) < 1e-3
    assert info_nce_loss(torch.randn(2, 12, 64), target) > 1.0
    half = pretrain_loss(target.bfloat16(), target.bfloat16(), target)
    assert half.total.dtype == torch.float32
