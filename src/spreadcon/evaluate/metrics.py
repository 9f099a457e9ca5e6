"""Scores from predictions, one vocabulary for the project: accuracy, binary AUROC, per-group and
worst-group accuracy, the training-proportion weighted average accuracy, per-group and worst-group
AUROC (Sagawa et al. 2020; GEORGE, Sohoni et al. 2020), and `group_metrics`, all of them at once."""

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


def weighted_average_accuracy(pred: Tensor | np.ndarray, target: Tensor | np.ndarray, group: Tensor | np.ndarray,
                              *, train_group: Tensor | np.ndarray) -> float:
    """Per-group accuracies weighted by the groups' proportions in the training set [N_train].

    Sagawa et al.'s and GEORGE's "average accuracy" on Waterbirds: the test set is group-balanced,
    so its plain accuracy overweights rare groups; training proportions estimate accuracy on the
    training distribution. Groups of the evaluation set absent from `train_group` are named in
    the error; training groups absent from the evaluation set are dropped and weights renormalised.
    """
    accs = group_accuracy(pred, target, group)
    ids, counts = np.unique(_np(train_group), return_counts=True)
    unknown = sorted(set(accs) - {int(g) for g in ids})
    if unknown:
        raise ValueError(f"groups {unknown} of the evaluation set have no members in train_group; "
                         f"pass the training groups with the same ids")
    weight = {int(g): int(c) for g, c in zip(ids, counts) if int(g) in accs}
    total = sum(weight.values())
    return float(sum(accs[g] * w for g, w in weight.items()) / total)


def _class1_scores(scores: Tensor | np.ndarray) -> np.ndarray:
    s = _np(scores).astype(np.float64)
    if s.ndim == 2:
        if s.shape[1] != 2:
            raise ValueError(f"binary scores must be [N] or [N, 2], got {s.shape}")
        s = torch.log_softmax(torch.from_numpy(s), dim=1).numpy()[:, 1]
    return s


def group_auroc(scores: Tensor | np.ndarray, target: Tensor | np.ndarray, group: Tensor | np.ndarray) -> dict[int, float]:
    """Binary tasks (ISIC): per group g, the AUROC of g's points against every point of the other
    class. scores: [N] score of class 1 or [N, 2]; target [N] in {0, 1}; group [N] nested in the
    classes (a group holding both classes is scored on its own points plus none added). Groups
    whose rows hold a single class after that (no pair to order) are left out."""
    from sklearn.metrics import roc_auc_score

    s, y, g = _class1_scores(scores), _np(target), _np(group)
    if not s.shape == y.shape == g.shape:
        raise ValueError(f"scores, target and group must all be [N], got {s.shape}, {y.shape}, {g.shape}")
    if set(np.unique(y).tolist()) != {0, 1}:
        raise ValueError(f"group_auroc is for binary tasks with targets 0 and 1, got {np.unique(y).tolist()}")
    out = {}
    for k in np.unique(g):
        in_g = g == k
        others = np.setdiff1d([0, 1], np.unique(y[in_g]))
        rows = in_g | np.isin(y, others)
        if len(np.unique(y[rows])) == 2:
            out[int(k)] = float(roc_auc_score(y[rows], s[rows]))
    return out


def worst_group_auroc(scores: Tensor | np.ndarray, target: Tensor | np.ndarray, group: Tensor | np.ndarray) -> float:
    """The lowest per-group AUROC (`group_auroc`)."""
    aucs = group_auroc(scores, target, group)
    if not aucs:
        raise ValueError("no group has points of both classes to compare; worst_group_auroc is undefined")
    return min(aucs.values())


def group_metrics(scores: Tensor | np.ndarray, target: Tensor | np.ndarray, group: Tensor | np.ndarray, *,
                  train_group: Tensor | np.ndarray | None = None) -> dict:
    """The metrics Sagawa et al. and GEORGE report, from class scores [N, K] (logits or
    probabilities), targets [N] and (true or pseudo) groups [N]:
    accuracy, group_accuracy {g: acc}, worst_group_accuracy, with train_group [N_train] the
    average_accuracy (`weighted_average_accuracy`), and for two classes auroc, group_auroc,
    worst_group_auroc."""
    s, y = _np(scores), _np(target)
    if s.ndim != 2:
        raise ValueError(f"group_metrics needs class scores [N, K], got shape {s.shape}")
    out: dict = {
        "accuracy": accuracy(s, y),
        "group_accuracy": group_accuracy(s, y, group),
        "worst_group_accuracy": worst_group_accuracy(s, y, group),
    }
    if train_group is not None:
        out["average_accuracy"] = weighted_average_accuracy(s, y, group, train_group=train_group)
    if s.shape[1] == 2 and set(np.unique(y).tolist()) == {0, 1}:
        out["auroc"] = auroc(s, y)
        out["group_auroc"] = group_auroc(s, y, group)
        out["worst_group_auroc"] = min(out["group_auroc"].values()) if out["group_auroc"] else None
    return out
