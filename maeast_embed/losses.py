"""MAE-AST pretraining losses (REFERENCE.md section 5): 10 x MSE + InfoNCE.

Both are computed in float32 whatever the autocast dtype of the predictions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

RECONSTRUCTION_WEIGHT = 10.0
CLASSIFICATION_WEIGHT = 1.0


def reconstruction_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over every masked patch value ([B, M, P] each)."""
    return F.mse_loss(prediction.float(), target.float())


def info_nce_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """Per clip, each masked prediction must pick its own patch among the clip's M targets.

    logits[b] = prediction[b] @ target[b]^T (no temperature, no normalisation); the loss is the
    mean over clips and positions of the cross-entropy with the diagonal as the positive.
    """
    logits = torch.bmm(prediction.float(), target.float().transpose(1, 2))  # [B, M, M]
    return -torch.diagonal(logits.log_softmax(dim=-1), dim1=-2, dim2=-1).mean()


@dataclass
class LossOutput:
    total: Tensor
    reconstruction: Tensor
    info_nce: Tensor


def pretrain_loss(
    reconstruction: Tensor,
    classification: Tensor,
    target: Tensor,
    *,
    reconstruction_weight: float = RECONSTRUCTION_WEIGHT,
    classification_weight: float = CLASSIFICATION_WEIGHT,
) -> LossOutput:
    """The official objective: weight_r * MSE(reconstruction) + weight_c * InfoNCE(classification)."""
    recon = reconstruction_loss(reconstruction, target)
    nce = info_nce_loss(classification, target)
    return LossOutput(reconstruction_weight * recon + classification_weight * nce, recon, nce)
