"""Geometry of an embedding: the quantities behind the paper's Figures 2 and 3, and Wang & Isola's
(2020) alignment and uniformity. Pure tensor functions.

Inputs are embeddings z [N, D] and integer labels [N] (class) and strata [N] (hidden finer label).
Unless `normalize=False`, every function first L2-normalises each row, because the contrastive
losses act on the unit sphere; cosines are therefore plain dot products of unit vectors.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def _check(z: Tensor, *labels: Tensor) -> None:
    if z.dim() != 2 or z.shape[0] == 0:
        raise ValueError(f"expected embeddings [N, D] with N > 0, got {list(z.shape)}")
    for y in labels:
        if y.shape != (z.shape[0],):
            raise ValueError(f"expected labels [N={z.shape[0]}], got {list(y.shape)}")


def _unit(z: Tensor, normalize: bool) -> Tensor:
    z = z.double()
    return F.normalize(z, dim=1) if normalize else z


def class_centres(z: Tensor, labels: Tensor, *, normalize: bool = True) -> tuple[Tensor, Tensor]:
    """(ids [K], centres [K, D]): the mean embedding of each label value present, ids sorted."""
    _check(z, labels)
    u = _unit(z, normalize)
    ids, inverse = torch.unique(labels, return_inverse=True)
    sums = torch.zeros(len(ids), u.shape[1], dtype=u.dtype).index_add_(0, inverse, u)
    counts = torch.bincount(inverse, minlength=len(ids)).to(u.dtype)
    return ids, sums / counts[:, None]


def intra_class_cosine(z: Tensor, labels: Tensor, *, normalize: bool = True,
                       per_class: bool = False) -> float | dict[int, float]:
    """Mean cosine similarity between two distinct points of the same class (Figure 2).

    Per class c: mean over ordered pairs i != j in c of z_i . z_j; the result is the mean of that
    over classes with at least 2 points (or {class: value} with per_class=True). 1 means the class
    collapsed to a point. Computed as (||sum_c z||^2 - sum_c ||z||^2) / (n_c (n_c - 1)).
    """
    _check(z, labels)
    u = _unit(z, normalize)
    out = {}
    for c in torch.unique(labels):
        members = u[labels == c]
        n = members.shape[0]
        if n >= 2:
            s = members.sum(0)
            out[int(c)] = float((s @ s - members.pow(2).sum()) / (n * (n - 1)))
    if not out:
        raise ValueError("intra_class_cosine needs at least one class with 2 or more points")
    return out if per_class else sum(out.values()) / len(out)


def cosine_to_class_centre(z: Tensor, labels: Tensor, *, normalize: bool = True) -> Tensor:
    """[N] float64: cosine similarity of each point with the centre (mean of the unit embeddings,
    the point itself included) of its class (Figure 2). Near 1 everywhere means collapse."""
    ids, centres = class_centres(z, labels, normalize=normalize)
    u = _unit(z, normalize)
    own = centres[torch.searchsorted(ids, labels)]
    return F.cosine_similarity(u, own, dim=1)


def strata_centre_distances(z: Tensor, labels: Tensor, strata: Tensor, *,
                            normalize: bool = True) -> list[dict[str, Any]]:
    """delta(f, z, z') = ||E_z f(x) - E_z' f(x)|| between strata of the same class (Figure 3).

    One row per stratum, sorted by (label, stratum): {"label", "stratum", "size" (points in z),
    "mean_distance", "min_distance" (to the other strata centres of the same class; None when
    the class has a single stratum)}. A stratum's label is the majority label of its points.
    The paper's finding: with L_SC, small strata sit close to their siblings (collapse); L_spread
    keeps them apart.
    """
    _check(z, labels, strata)
    ids, centres = class_centres(z, strata, normalize=normalize)
    inverse = torch.searchsorted(ids, strata)
    sizes = torch.bincount(inverse, minlength=len(ids))
    owner = torch.stack([torch.mode(labels[inverse == k]).values for k in range(len(ids))])
    dist = torch.cdist(centres, centres)  # [S, S]
    rows = []
    for k in range(len(ids)):
        siblings = (owner == owner[k]) & (torch.arange(len(ids)) != k)
        d = dist[k, siblings]
        rows.append({
            "label": int(owner[k]), "stratum": int(ids[k]), "size": int(sizes[k]),
            "mean_distance": float(d.mean()) if len(d) else None,
            "min_distance": float(d.min()) if len(d) else None,
        })
    return sorted(rows, key=lambda r: (r["label"], r["stratum"]))


def alignment(x: Tensor, y: Tensor, *, alpha: float = 2.0, normalize: bool = True) -> float:
    """Wang & Isola (2020) alignment: E ||f(x) - f(x+)||^alpha over positive pairs (x[i], y[i]),
    x, y [N, D]. Lower is better aligned; 0 when every pair coincides."""
    if x.shape != y.shape:
        raise ValueError(f"alignment needs two [N, D] tensors of positive pairs, got {list(x.shape)} and {list(y.shape)}")
    _check(x)
    return float((_unit(x, normalize) - _unit(y, normalize)).norm(dim=1).pow(alpha).mean())


def uniformity(x: Tensor, *, t: float = 2.0, normalize: bool = True, block: int = 1024) -> float:
    """Wang & Isola (2020) uniformity: log E_{i<j} exp(-t ||f(x_i) - f(x_j)||^2), x [N, D], N >= 2.
    Lower is more uniform; 0 when every point coincides. Computed exactly with a log-sum-exp over
    blocks of `block` rows, so memory stays O(block * N) (torch.pdist would need N^2 / 2)."""
    _check(x)
    n = x.shape[0]
    if n < 2:
        raise ValueError("uniformity needs at least 2 points")
    u = _unit(x, normalize)
    parts = []
    for start in range(0, n - 1, block):
        rows = u[start:start + block]
        sq = (rows.pow(2).sum(1, keepdim=True) + u.pow(2).sum(1) - 2 * rows @ u.T).clamp_min(0)  # [b, N]
        upper = torch.arange(n)[None, :] > torch.arange(start, start + len(rows))[:, None]  # pairs i < j
        parts.append(torch.logsumexp(-t * sq[upper], dim=0))
    n_pairs = n * (n - 1) / 2
    return float(torch.logsumexp(torch.stack(parts), dim=0) - math.log(n_pairs))

def summary(z: Tensor, labels: Tensor, strata: Tensor | None = None, *, max_points: int | None = 5000,
            seed: int = 0) -> dict[str, float]:
    """The scalar geometry of an embedding, on unit vectors, for a metrics file:
    intra_class_cosine, cosine_to_class_centre (mean over points), uniformity (on a seeded subset
    of at most max_points rows: it costs O(N^2)), and with strata given, strata_centre_distance
    (mean over strata of the mean distance to sibling strata centres) and
    strata_size_distance_spearman (rank correlation of stratum size with that distance: positive
    when small strata sit closer to their siblings, i.e. collapse)."""
    _check(z, labels)
    out = {
        "intra_class_cosine": float(intra_class_cosine(z, labels)),
        "cosine_to_class_centre": float(cosine_to_class_centre(z, labels).mean()),
    }
    sub = z
    if max_points is not None and z.shape[0] > max_points:
        sub = z[torch.randperm(z.shape[0], generator=torch.Generator().manual_seed(seed))[:max_points]]
    out["uniformity"] = uniformity(sub)
    if strata is not None:
        rows = [r for r in strata_centre_distances(z, labels, strata) if r["mean_distance"] is not None]
        if rows:
            out["strata_centre_distance"] = sum(r["mean_distance"] for r in rows) / len(rows)
        if len(rows) >= 3 and len({r["size"] for r in rows}) > 1:
            from scipy.stats import spearmanr

            out["strata_size_distance_spearman"] = float(spearmanr([r["size"] for r in rows],
                                                                   [r["mean_distance"] for r in rows]).statistic)
    return out
