"""Scores: accuracy, macro-F1, mAP (multilabel), confusion matrices, mean +- std over folds."""

from __future__ import annotations

import warnings

import numpy as np


def scores(probs: np.ndarray, truth: np.ndarray, multilabel: bool) -> dict[str, float]:
    """probs [N, C]; truth [N] class indices (multiclass) or [N, C] 0/1 (multilabel).

    Multiclass: accuracy and macro-F1 over the classes present in truth or predictions.
    Multilabel: mAP (macro average precision over classes with a positive), subset accuracy
    and macro-F1 at threshold 0.5.
    """
    from sklearn.exceptions import UndefinedMetricWarning
    from sklearn.metrics import average_precision_score, f1_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        if not multilabel:
            pred = probs.argmax(1)
            return {
                "accuracy": float((pred == truth).mean()),
                "macro_f1": float(f1_score(truth, pred, average="macro")),
            }
        pred = probs >= 0.5
        present = truth.sum(0) > 0
        return {
            "mAP": float(average_precision_score(truth[:, present], probs[:, present], average="macro")),
            "accuracy": float((pred == truth.astype(bool)).all(1).mean()),
            "macro_f1": float(
                f1_score(truth[:, present].astype(int), pred[:, present].astype(int), average="macro")
            ),
        }


def headline(multilabel: bool) -> str:
    """The metric that picks hyper-parameters and leads the table."""
    return "mAP" if multilabel else "accuracy"


def confusion(probs: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """[C, C] counts, true class per row."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (truth, probs.argmax(1)), 1)
    return matrix


def summarise(per_fold: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """{metric: {'mean', 'std'}} over folds (population std; 0 for a single split)."""
    return {
        key: {
            "mean": float(np.mean([f[key] for f in per_fold])),
            "std": float(np.std([f[key] for f in per_fold])),
        }
        for key in per_fold[0]
    }
