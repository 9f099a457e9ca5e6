"""The authors' released loss (HazyResearch/thanos-code, `ContrastiveLoss`), by name, exactly.

The paper's L_SC and L_spread numbers came from that code, which differs from the paper's
equations (SPEC.md). With V = 2 views, each anchor is a view-1 row i and the points are the
view-0 rows only; P'(i) = view-0 rows of i's class *including* i's own view 0; N(i) = view-0
rows of other classes; s_ij = z_i^(1) . z_j^(0) / tau; c = clamp_positive:

    A(i) = 1/|P'(i)| sum_{p in P'(i)} [ log( e^{s_ip} + sum_{n in N(i)} e^{s_in} ) - min(s_ip, c) ]
    R(i) = log sum_{p in P'(i)} e^{s_ip} - s_ii
    supcon-authors = mean_i A(i)      (its type="sup_con": pos_in_denom=False, i.e. L_attract's form)
    spread-authors = mean_i [ alpha A(i) + (1 - alpha) R(i) ]   (alpha = a_lc / (a_lc + a_spread) = 0.5)

The clamp: the released code tests `if clip_pos != 1.0` the wrong way round, so with its default
clip_pos = 1.0 every positive logit in the numerator (not in the denominator) is clamped at 1.0.
`clamp_positive=1.0` reproduces that; `None` turns it off. normalize: True (unit vectors, our
default), False (raw dot products, its lc_norm=False), "released" (its lc_norm=True, which divides
column j by |z_j^(1)| |z_j^(0)| instead of row i and column j by their own norms).

Positives given directly (`mask=` [B, B] or multi-hot labels, spreadcon's callers'
conventions): P'(i) = view-0 rows j with mask[i, j] != 0, plus i's own view 0 (which the released
code always counts as a positive), so a mask equal to the label-equality matrix is the labels'
result.

Dense: the B x B logits are formed at once (O(B^2) memory), as in the released code; it is a
baseline for comparisons, not a training path for large batches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

NORMALIZE = (True, False, "released")


def check_clamp(clamp_positive, temperature: float):
    """None, or a number in (0, 1 / temperature] (logits of unit vectors lie in [-1/tau, 1/tau])."""
    if clamp_positive is None:
        return None
    bad = isinstance(clamp_positive, bool) or not isinstance(clamp_positive, (int, float))
    if bad or not (0 < clamp_positive <= 1.0 / temperature):
        raise ValueError(f"clamp_positive must be None (no clamp) or a number in (0, 1/temperature] = "
                         f"(0, {1.0 / temperature:g}] (the released default is 1.0), got {clamp_positive!r}")
    return float(clamp_positive)


def _logits(features: Tensor, temperature: float, normalize) -> Tensor:
    """s [B, B]: view-1 anchors (rows) against view-0 points (columns), float32 or float64."""
    z = features if features.dtype == torch.float64 else features.float()
    v1, v0 = z[:, 1], z[:, 0]
    if normalize is True:
        return F.normalize(v1, dim=-1) @ F.normalize(v0, dim=-1).T / temperature
    S = v1 @ v0.T / temperature
    if normalize == "released":  # [B] * [B] broadcast over columns: the released code's norms
        S = S / (v1.norm(dim=1) * v0.norm(dim=1)).clamp_min(torch.finfo(S.dtype).tiny)
    return S


def positives(labels: Tensor | None, mask: Tensor | None) -> Tensor:
    """P' as a bool matrix [B, B]: same label (labels [B]) or mask != 0 (mask [B, B]), and always
    the diagonal (i's own view 0)."""
    if mask is None:
        return labels[:, None] == labels[None, :]
    eye = torch.eye(mask.shape[0], dtype=torch.bool, device=mask.device)
    return (mask != 0) | eye


def authors_terms(features: Tensor, pos: Tensor, *, temperature: float, clamp_positive,
                  normalize) -> tuple[Tensor, Tensor]:
    """Per-anchor (A [B], R [B]) of the released forward; features [B, 2, D], pos [B, B] bool
    (`positives`: P'(i), the diagonal included)."""
    S = _logits(features, temperature, normalize)
    fill = torch.finfo(S.dtype).min
    lse_neg = torch.logsumexp(S.masked_fill(pos, fill), 1)  # fill keeps empty N(i) finite
    has_neg = (~pos).any(1)
    per_pos = torch.where(has_neg[:, None], torch.logaddexp(S, lse_neg[:, None]), S)
    top = S if clamp_positive is None else S.clamp(max=clamp_positive)
    n_pos = pos.sum(1).to(S.dtype)
    A = ((per_pos - top) * pos).sum(1) / n_pos
    R = torch.logsumexp(S.masked_fill(~pos, fill), 1) - S.diagonal()
    return A, R


def authors_loss(features: Tensor, pos: Tensor, *, alpha: float, temperature: float,
                 clamp_positive, normalize) -> Tensor:
    """mean_i [alpha A(i) + (1 - alpha) R(i)]; alpha = 1 is supcon-authors. Checked inputs;
    pos [B, B] bool from `positives`."""
    A, R = authors_terms(features, pos, temperature=temperature, clamp_positive=clamp_positive,
                         normalize=normalize)
    if alpha == 1.0:
        return A.mean()
    return (alpha * A + (1.0 - alpha) * R).mean()
