"""Linear probes on frozen embeddings, and the paper's coarse-to-fine transfer (Figure 4, right).

The default recipe is the authors' (thanos-code, `*_xfer` configs): a linear layer trained with
AdamW (lr 1e-3) for 100 epochs in mini-batches of 128, reporting the final epoch. Two named
differences: the embeddings are computed once in eval mode (the authors' frozen encoder still
ran augmented views with dropout on), and no model selection happens on the test set.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from spreadcon.evaluate.metrics import accuracy, auroc


def _check_xy(name: str, x: Tensor, y: Tensor) -> None:
    if x.dim() != 2 or y.dim() != 1 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"{name}: expected embeddings [N, D] and labels [N] with N > 0, got {list(x.shape)} and {list(y.shape)}")


def fit_linear(x: Tensor, y: Tensor, num_classes: int, *, epochs: int = 100, lr: float = 1e-3,
               weight_decay: float = 0.01, batch_size: int | None = 128, seed: int = 0,
               betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> nn.Linear:
    """A Linear(D, num_classes) fit to x [N, D] float, y [N] int64 by cross-entropy with AdamW.

    The same updates as torch.optim.AdamW on an nn.Linear (weight decay on weight and bias), with
    the softmax-regression gradient written out, (softmax(logits) - onehot)^T [x, 1] / B, so one
    step is a handful of tensor ops instead of an autograd pass (about 10x faster on a CPU).
    batch_size None means full batch (one step per epoch). Deterministic given `seed`: zero
    initial weights (the problem is convex) and a seeded shuffle.
    """
    _check_xy("fit_linear", x, y)
    if epochs < 1 or lr <= 0:
        raise ValueError(f"fit_linear needs epochs >= 1 and lr > 0, got epochs={epochs}, lr={lr}")
    n, d = x.shape
    xa = torch.cat([x.detach().float(), x.new_ones(n, 1, dtype=torch.float32)], dim=1)  # [N, D+1]
    y = y.long().to(x.device)
    theta = xa.new_zeros(num_classes, d + 1)  # [K, D+1] = [weight | bias]
    m, v = torch.zeros_like(theta), torch.zeros_like(theta)
    (b1, b2), step = betas, 0
    gen = torch.Generator().manual_seed(seed)
    bs = n if batch_size is None else int(batch_size)
    with torch.no_grad():
        for _ in range(epochs):
            order = torch.randperm(n, generator=gen).to(x.device)
            for start in range(0, n, bs):
                idx = order[start:start + bs]
                xb = xa[idx]
                p = torch.softmax(xb @ theta.T, dim=1)  # [b, K]
                p[torch.arange(len(idx), device=x.device), y[idx]] -= 1.0
                grad = p.T @ xb / len(idx)  # [K, D+1]
                step += 1
                theta.mul_(1 - lr * weight_decay)
                m.lerp_(grad, 1 - b1)
                v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
                denom = (v.sqrt() / math.sqrt(1 - b2 ** step)).add_(eps)
                theta.addcdiv_(m, denom, value=-lr / (1 - b1 ** step))
    layer = nn.Linear(d, num_classes).to(x.device)
    with torch.no_grad():
        layer.weight.copy_(theta[:, :d])
        layer.bias.copy_(theta[:, d])
    return layer.eval()


def linear_probe(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, *, epochs: int = 100,
                 lr: float = 1e-3, weight_decay: float = 0.01, batch_size: int | None = 128, seed: int = 0,
                 method: str = "torch", normalize: bool = False, num_classes: int | None = None) -> dict[str, Any]:
    """Train a linear classifier on frozen train embeddings [N, D] and score it on the test ones.

    method "torch": `fit_linear` (the authors' recipe); "logreg": scikit-learn's
    LogisticRegression (L-BFGS, C=1, to convergence; epochs/lr/batch_size are ignored).
    normalize: L2-normalise the embeddings first.
    Returns {"accuracy", "train_accuracy", "num_classes", "method"} and, for two classes, "auroc".
    """
    _check_xy("linear_probe (train)", train_x, train_y)
    _check_xy("linear_probe (test)", test_x, test_y)
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"train and test embeddings differ in width: {train_x.shape[1]} vs {test_x.shape[1]}")
    if normalize:
        train_x, test_x = nn.functional.normalize(train_x.float(), dim=1), nn.functional.normalize(test_x.float(), dim=1)
    k = num_classes or int(max(train_y.max(), test_y.max())) + 1
    if method == "torch":
        layer = fit_linear(train_x, train_y, k, epochs=epochs, lr=lr, weight_decay=weight_decay,
                           batch_size=batch_size, seed=seed)
        with torch.no_grad():
            train_scores, test_scores = layer(train_x.float()).cpu(), layer(test_x.float().to(train_x.device)).cpu()
    elif method == "logreg":
        from sklearn.linear_model import LogisticRegression

        clf = LogisticRegression(max_iter=2000, random_state=seed)
        clf.fit(train_x.cpu().double().numpy(), train_y.cpu().numpy())
        test_scores = torch.zeros(test_x.shape[0], k, dtype=torch.float64)  # class probabilities
        test_scores[:, clf.classes_] = torch.from_numpy(clf.predict_proba(test_x.cpu().double().numpy()))
        train_scores = torch.as_tensor(clf.predict(train_x.cpu().double().numpy()))
    else:
        raise ValueError(f"unknown probe method {method!r}; choose 'torch' or 'logreg'")
    out: dict[str, Any] = {
        "accuracy": accuracy(test_scores, test_y.cpu()),
        "train_accuracy": accuracy(train_scores, train_y.cpu()),
        "num_classes": k,
        "method": method,
    }
    if k == 2 and len(torch.unique(test_y)) == 2:
        out["auroc"] = auroc(test_scores, test_y.cpu())
    return out


def coarse_to_fine(train_x: Tensor, train_fine: Tensor, test_x: Tensor, test_fine: Tensor, *,
                   test_coarse: Tensor | None = None, **probe_options: Any) -> dict[str, Any]:
    """Coarse-to-fine transfer (SPEC.md): embeddings of an encoder trained on coarse labels, frozen;
    a linear classifier trained on the fine labels (strata); fine accuracy on the test split.

    train_x [N, D], train_fine [N], test_x [M, D], test_fine [M]. With test_coarse [M] given, also
    reports "chance_within_coarse": the accuracy of guessing uniformly among the fine classes of
    each point's coarse class, the level that fully collapsed classes fall to.
    probe_options go to `linear_probe`.
    """
    result = linear_probe(train_x, train_fine, test_x, test_fine, **probe_options)
    result["fine_accuracy"] = result["accuracy"]
    if test_coarse is not None:
        if test_coarse.shape != test_fine.shape:
            raise ValueError(f"test_coarse must be [M] like test_fine, got {list(test_coarse.shape)}")
        fine_per_coarse = {int(c): len(torch.unique(test_fine[test_coarse == c])) for c in torch.unique(test_coarse)}
        result["chance_within_coarse"] = float(np.mean([1.0 / fine_per_coarse[int(c)] for c in test_coarse]))
    return result
