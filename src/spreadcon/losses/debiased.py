"""EXPERIMENTAL: noise-aware ("expectation-based") debiased contrastive losses, Appendix F.3.1.

The paper reports these as unstable and without strong empirical results; they are here to
reproduce that appendix, not as a recommended loss.

Noise model (stated, and checked by Monte Carlo in tests/losses/test_debiased.py): two
balanced classes, symmetric label noise, p = Pr(a noisy label is correct) > 1/2, independently per point.
A "noisy positive" of anchor x is drawn among points whose noisy label equals x's noisy label, a
"noisy negative" among the others. With `anchor_noisy=True` (model B, the paper's Lemma 5) the
anchor's own label may be wrong too, so one noisy positive is truly positive with probability
q = p^2 + (1 - p)^2 and draws for one anchor are correlated through the anchor's flip; with
`anchor_noisy=False` (model A: the anchor's label is trusted) each draw is of its intended true
type with probability p, independently.

Clean target, with m = n + 1 (one positive, n negatives; m = 2 is the triplet loss):
    L = E[ -s(x, x+) + log( e^{s(x, x+)} + sum_{j=1..n} e^{s(x, x_j-)} ) ]
Unbiased estimate from noisy draws x~+_1..m and x~-_1..m (Lemma 6 for m = 2, Lemma 7 for m > 2):
    L~ = -w+ s(x, x~+_1) + w- s(x, x~-_1)
         + sum_{j=0..m} w_j log( sum_{a<=j} e^{s(x, x~+_a)} + sum_{b<=m-j} e^{s(x, x~-_b)} )
The set with j noisy positives holds k true positives with probability P[j, k]; w solves
P^T w = e_1 (the clean log term has exactly one positive). Model A: P[j, k] = Pr(Bin(j, p) +
Bin(m - j, 1 - p) = k); model B mixes it with the anchor flipped: p P_A[j, k] + (1 - p) P_A[m - j, k].
w+ = r / (2r - 1), w- = (1 - r) / (2r - 1) with r = q (model B) or p (model A). For m = 2 and
model B these are SPEC.md's Lemma 6 weights: w+ = w_1 = (p^2 + (1-p)^2) / (2p-1)^2,
w- = 2p(1-p) / (2p-1)^2, w_0 = w_2 = -p(1-p) / (2p-1)^2. The system grows ill-conditioned with
m and as p -> 1/2, which is the instability the paper reports.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_p(p: float) -> None:
    if not (isinstance(p, (int, float)) and 0.5 < p <= 1.0):
        raise ValueError(f"p = Pr(noisy label is correct) must be in (0.5, 1], got {p!r} "
                         f"(at 0.5 labels carry no information and no unbiased estimate exists)")


def linear_weights(p: float, anchor_noisy: bool = True) -> tuple[float, float]:
    """(w+, w-) of the similarity terms."""
    _check_p(p)
    r = p * p + (1 - p) ** 2 if anchor_noisy else p
    return r / (2 * r - 1), (1 - r) / (2 * r - 1)


def set_weights(p: float, m: int, anchor_noisy: bool = True) -> Tensor:
    """w [m + 1] (float64): weight of the log-sum-exp over j noisy positives and m - j negatives."""
    _check_p(p)
    if m < 2:
        raise ValueError(f"m = 1 + number of negatives must be >= 2, got {m}")

    def binom(n, k, r):
        return math.comb(n, k) * r**k * (1 - r) ** (n - k) if 0 <= k <= n else 0.0

    def composition(j, k, r):  # Pr(Bin(j, r) + Bin(m - j, 1 - r) = k)
        return sum(binom(j, a, r) * binom(m - j, k - a, 1 - r) for a in range(j + 1))

    P = torch.tensor([[composition(j, k, p) for k in range(m + 1)] for j in range(m + 1)], dtype=torch.float64)
    if anchor_noisy:
        P = p * P + (1 - p) * P.flip(0)
    e1 = torch.zeros(m + 1, dtype=torch.float64)
    e1[1] = 1.0
    return torch.linalg.solve(P.T, e1)


def debiased_attract_tuples(anchors: Tensor, positives: Tensor, negatives: Tensor, p: float,
                            temperature: float = 0.5, *, normalize: bool = True,
                            anchor_noisy: bool = True, reduction: str = "mean") -> Tensor:
    """EXPERIMENTAL L~ for explicit noisy draws (Lemma 6 when m = 2, Lemma 7 when m > 2).

    anchors [K, D], positives [K, m, D] (noisy positives), negatives [K, m, D] (noisy negatives);
    the clean target has one positive and m - 1 negatives. Returns the mean over anchors
    (reduction="none": [K]). Its expectation under the noise model equals the clean loss; a single
    value may be negative.
    """
    if anchors.ndim != 2 or positives.ndim != 3 or positives.shape != negatives.shape \
            or positives.shape[0] != anchors.shape[0] or positives.shape[2] != anchors.shape[1]:
        raise ValueError(f"need anchors [K, D], positives and negatives [K, m, D]; got {tuple(anchors.shape)}, "
                         f"{tuple(positives.shape)}, {tuple(negatives.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    m = positives.shape[1]
    w_pos, w_neg = linear_weights(p, anchor_noisy)
    w = set_weights(p, m, anchor_noisy).to(anchors.dtype if anchors.dtype == torch.float64 else torch.float32)
    x, xp, xn = (t if t.dtype == torch.float64 else t.float() for t in (anchors, positives, negatives))
    if normalize:
        x, xp, xn = F.normalize(x, dim=-1), F.normalize(xp, dim=-1), F.normalize(xn, dim=-1)
    sp = torch.einsum("kd,kmd->km", x, xp) / temperature  # [K, m]
    sn = torch.einsum("kd,kmd->km", x, xn) / temperature
    # log-sum-exp of the set j: positives 1..j and negatives 1..m-j, for j = 0..m: [K, m + 1]
    fill = torch.finfo(sp.dtype).min / 4
    j = torch.arange(m + 1, device=sp.device)
    col = torch.arange(m, device=sp.device)
    take_pos = col[None, :] < j[:, None]  # [m + 1, m]
    take_neg = col[None, :] < (m - j)[:, None]
    logits = torch.cat([torch.where(take_pos, sp[:, None, :], fill), torch.where(take_neg, sn[:, None, :], fill)], 2)
    lse = torch.logsumexp(logits, dim=2)  # [K, m + 1]
    loss = -w_pos * sp[:, 0] + w_neg * sn[:, 0] + lse @ w.to(lse.dtype)
    return loss.mean() if reduction == "mean" else loss


def debiased_triplet_tuples(anchors: Tensor, positives: Tensor, negatives: Tensor, p: float,
                            temperature: float = 0.5, **kw) -> Tensor:
    """EXPERIMENTAL Lemma 6: the triplet case, positives and negatives [K, 2, D] (two draws each)."""
    if positives.ndim != 3 or positives.shape[1] != 2:
        raise ValueError("the triplet estimate takes two noisy positives and two noisy negatives, "
                         f"[K, 2, D] each; got {tuple(positives.shape)}")
    return debiased_attract_tuples(anchors, positives, negatives, p, temperature, **kw)


def debiased_attract_loss(features: Tensor, labels: Tensor, p: float, temperature: float = 0.5, *,
                          negatives: int = 1, normalize: bool = True, anchor_noisy: bool = True,
                          generator: torch.Generator | None = None) -> Tensor:
    """EXPERIMENTAL batch form: every view is an anchor; m = negatives + 1 noisy positives and
    noisy negatives are drawn (with replacement, by `generator`) from the rest of the batch by the
    (noisy) labels. features [B, V, D], labels [B] -> scalar. Anchors without a same-label or an
    other-label point are left out (0 when none is left)."""
    if features.ndim != 3 or labels.shape != (features.shape[0],):
        raise ValueError(f"need features [B, V, D] and labels [B]; got {tuple(features.shape)}, {tuple(labels.shape)}")
    B, V, D = features.shape
    z = features.reshape(B * V, D)
    y = labels.repeat_interleave(V)
    same = (y[:, None] == y[None, :]) & ~torch.eye(B * V, dtype=torch.bool, device=z.device)
    other = y[:, None] != y[None, :]
    valid = same.any(1) & other.any(1)
    m = negatives + 1

    def draw(mask):  # [B*V, m] indices; rows with no candidate draw uniformly (then ignored)
        weights = torch.where(mask.any(1, keepdim=True), mask.float(), torch.ones_like(mask, dtype=torch.float))
        return torch.multinomial(weights, m, replacement=True, generator=generator)

    pos, neg = z[draw(same)], z[draw(other)]
    per = debiased_attract_tuples(z, pos, neg, p, temperature, normalize=normalize,
                                  anchor_noisy=anchor_noisy, reduction="none")
    per = torch.where(valid, per, 0.0)
    return per.sum() / valid.sum().clamp_min(1)
