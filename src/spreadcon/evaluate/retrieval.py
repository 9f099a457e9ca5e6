"""Neighbour-based evaluation on frozen embeddings: DINO's weighted kNN probe and retrieval metrics.

- `knn_probe`: the weighted k-nearest-neighbour classifier of DINO (Caron et al. 2021,
  facebookresearch/dino `eval_knn.py`, `knn_classifier`): embeddings L2-normalised, cosine
  similarity of each test row to every train row, the k most similar train rows vote for their
  label with weight exp(similarity / T); the class with the largest summed vote wins. k = 20,
  T = 0.07 as DINO's defaults. Written here rather than imported because it is a dozen tensor
  ops and DINO ships it as a script, not a library. Test rows go in chunks of `batch_size`, so
  memory is O(batch_size x N_train).
- `retrieval_metrics`: precision@1 and MAP@R (Musgrave et al. 2020, "A Metric Learning Reality
  Check") through pytorch-metric-learning's `AccuracyCalculator`, not written again, with cosine
  similarity through its torch `CustomKNN` (faiss is not needed).

Both are pure functions of tensors (or numpy arrays); no run folder is read.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["knn_votes", "knn_probe", "retrieval_metrics"]


def _xy(name: str, x: Any, y: Any) -> tuple[Tensor, Tensor]:
    """x [N, D] float, y [N] int as tensors; ValueError saying what is wrong otherwise."""
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    if x.dim() != 2 or y.dim() != 1 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"{name}: expected embeddings [N, D] and labels [N] with N > 0, "
                         f"got {list(x.shape)} and {list(y.shape)}")
    if not x.is_floating_point() or not torch.isfinite(x).all():
        raise ValueError(f"{name}: embeddings must be finite floats (got dtype {x.dtype})")
    if y.is_floating_point() or y.dtype == torch.bool or (y < 0).any():
        raise ValueError(f"{name}: labels must be non-negative integer class indices (got dtype {y.dtype})")
    return x, y.long()


def _check_width(a: Tensor, b: Tensor) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"the two sets of embeddings differ in width: {a.shape[1]} vs {b.shape[1]}")


def knn_votes(train_x: Tensor, train_y: Tensor, test_x: Tensor, *, num_classes: int, k: int = 20,
              temperature: float = 0.07, batch_size: int = 128) -> Tensor:
    """DINO's weighted kNN votes [M, num_classes] for test_x [M, D] from train_x [N, D], train_y [N].

    votes[m, c] = sum over the k train rows most cosine-similar to test row m with label c of
    exp((sim - s_m) / temperature), s_m the row's largest similarity: DINO's exp(sim / T) times
    exp(-s_m / T), one factor per row, so the argmax is DINO's and a small temperature cannot
    overflow (exp(1 / 0.01) is past float32's range). Inputs are assumed checked (see
    `knn_probe`); k <= N. Computed in the inputs' dtype (at least float32) on train_x's device.
    """
    dtype = torch.promote_types(train_x.dtype, torch.float32)
    train = F.normalize(train_x.to(dtype), dim=1)                       # [N, D]
    labels = train_y.to(train.device)
    votes = []
    for chunk in test_x.split(batch_size):
        sim = F.normalize(chunk.to(train.device, dtype), dim=1) @ train.T   # [b, N]
        top_sim, top_idx = sim.topk(k, dim=1)                             # [b, k]
        weights = ((top_sim - top_sim[:, :1]) / temperature).exp()       # [b, k], in (0, 1]
        v = sim.new_zeros(len(chunk), num_classes)                       # [b, C]
        votes.append(v.scatter_add_(1, labels[top_idx], weights))
    return torch.cat(votes)


def knn_probe(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, *, k: int = 20,
              temperature: float = 0.07, num_classes: int | None = None, batch_size: int = 128) -> dict[str, Any]:
    """Weighted kNN classification accuracy of frozen embeddings (DINO's kNN evaluation).

    train_x [N, D], train_y [N] int, test_x [M, D], test_y [M] int (tensors or numpy arrays).
    k > N is clipped to N (a small labelled set still gets a probe; the k used is reported).
    Ties: equal votes go to the lowest class index (argmax); equal similarities at the k-th place
    are broken by torch.topk.
    Returns {"accuracy": top-1 accuracy in [0, 1], "k": k used, "temperature", "num_classes",
    "n_train": N, "n_test": M}.
    """
    train_x, train_y = _xy("knn_probe (train)", train_x, train_y)
    test_x, test_y = _xy("knn_probe (test)", test_x, test_y)
    _check_width(train_x, test_x)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"knn_probe needs an integer k >= 1 (DINO uses 20), got {k!r}")
    if not temperature > 0:
        raise ValueError(f"knn_probe needs temperature > 0 (DINO uses 0.07), got {temperature}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    top = int(max(train_y.max(), test_y.max())) + 1
    c = top if num_classes is None else int(num_classes)
    if c < top:
        raise ValueError(f"num_classes={num_classes} but the labels go up to {top - 1}")
    k_used = min(k, train_x.shape[0])
    votes = knn_votes(train_x, train_y, test_x, num_classes=c, k=k_used, temperature=temperature,
                      batch_size=batch_size)
    correct = votes.argmax(1).cpu() == test_y.cpu()
    return {"accuracy": correct.double().mean().item(), "k": k_used, "temperature": float(temperature),
            "num_classes": c, "n_train": int(train_x.shape[0]), "n_test": int(test_x.shape[0])}


def retrieval_metrics(query_x: Tensor, query_y: Tensor, reference_x: Tensor | None = None,
                      reference_y: Tensor | None = None, *, batch_size: int = 1024) -> dict[str, float]:
    """precision@1 and MAP@R by cosine similarity, via pytorch-metric-learning's AccuracyCalculator.

    query_x [M, D], query_y [M] int; reference_x [N, D], reference_y [N] int, both or neither.
    Without a reference set the queries are their own reference, each query left out of its own
    neighbours (leave-one-out; pytorch-metric-learning's `ref_includes_query=True`): R for a
    query is the number of *other* rows of its class. With a reference set (e.g. test queries
    against train references) the two are taken as disjoint: R is the number of references of
    the query's class. Queries with no relevant reference (a class of one row when leave-one-out)
    are left out of both means, as pytorch-metric-learning does; if that is every query, NaN.
    Neighbours are searched in chunks of `batch_size` queries; the calculator keeps the
    R_max = largest class count nearest neighbours of every query.
    Returns {"precision_at_1", "mean_average_precision_at_r"}, floats in [0, 1].
    """
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    query_x, query_y = _xy("retrieval_metrics (query)", query_x, query_y)
    if (reference_x is None) != (reference_y is None):
        raise ValueError("give both reference_x and reference_y, or neither (the queries are then their own reference)")
    if reference_x is not None:
        reference_x, reference_y = _xy("retrieval_metrics (reference)", reference_x, reference_y)
        _check_width(query_x, reference_x)
    calculator = AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r"), k="max_bin_count",
        device=query_x.device, knn_func=CustomKNN(CosineSimilarity(), batch_size=batch_size))
    result = calculator.get_accuracy(query_x.float(), query_y, None if reference_x is None else reference_x.float(),
                                     reference_y, ref_includes_query=False)
    return {key: float(value) for key, value in result.items()}
