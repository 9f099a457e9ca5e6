"""Scores from predictions: accuracy, binary AUROC, per-group and worst-group accuracy."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def _np(t: Tensor | np.ndarray) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, Tensor) else np.asarray(t)


def _predictions(pred: Tensor | np.ndarray) -> np.ndarray:
    """Class indices [N] from indices [N] or scores/logits [N, K]."""
    p = _np(pred)
    return p.argmax(axis=1) if p.ndim == 2 else p


def accuracy(pred: Tensor | np.ndarray, target: Tensor | np.ndarray) -> float:
    """Fraction of correct predictions. pred: class indices [N] or logits [N, K]; target [N]."""
    p, y = _predictions(pred), _np(target)
    if p.shape != y.shape or y.size == 0:
        raise ValueError(f"accuracy needs predictions and targets of the same non-empty shape [N], got {p.shape} and {y.shape}")
    return float((p == y).mean())


def auroc(scores: Tensor | np.ndarray, target: Tensor | np.ndarray) -> float:
    """Binary AUROC. scores: [N] score of class 1, or [N, 2] logits/probabilities; target [N] in {0, 1}."""
    from sklearn.metrics import roc_auc_score

    s, y = _np(scores).astype(np.float64), _np(target)
    if s.ndim == 2:
        if s.shape[1] != 2:
            raise ValueError(f"auroc is for binary tasks: scores must be [N] or [N, 2], got {s.shape}")
        s = torch.log_softmax(torch.from_numpy(s), dim=1).numpy()[:, 1]  # monotone in p(class 1)
    classes = np.unique(y)
    if not set(classes.tolist()) <= {0, 1} or classes.size != 2:
        raise ValueError(f"auroc needs binary targets containing both 0 and 1, got classes {classes.tolist()}")
    return float(roc_auc_score(y, s))


def group_accuracy(pred: Tensor | np.ndarray, target: Tensor | np.ndarray, group: Tensor | np.ndarray) -> dict[int, float]:
    """Accuracy within each group id present in `group` [N]: {group: accuracy}."""
    p, y, g = _predictions(pred), _np(target), _np(group)
    if not p.shape == y.shape == g.shape:
        raise ValueError(f"pred, target and group must all be [N], got {p.shape}, {y.shape}, {g.shape}")
    return {int(k): float((p[g == k] == y[g == k]).mean()) for k in np.unique(g)}


def worst_group_accuracy(pred: Tensor | np.ndarray, target: Tensor | np.ndarray, group: Tensor | np.ndarray) -> float:
    """The lowest per-group accuracy (Sagawa et al. 2019)."""
    return min(group_accuracy(pred, target, group).values())
