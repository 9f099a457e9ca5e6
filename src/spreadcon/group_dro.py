"""The online Group DRO objective (Sagawa et al. 2020, "Distributionally Robust Neural Networks"),
as pure functions of per-example losses and group ids, for any training loop.

With L_g the mean loss of group g in the batch (0 for a group absent from it), n_g the size of
group g in the training set and q the group weights carried from step to step:

    q_g <- q_g * exp(eta * (L_g + C / sqrt(n_g)))      then q <- q / sum(q)
    loss = sum_g q_g L_g

C / sqrt(n_g) is the group-size adjustment (`size_adjustment`); C = 0 turns it off, Sagawa et al.
use C = 2 on Waterbirds. The weight update is detached (exponentiated gradient on q, ordinary
gradient on the model). As in their `loss.py`, absent groups still get the adjustment.

    weights = torch.full((G,), 1 / G)
    adjust = size_adjustment(train_group_counts, c=2.0)          # [G]
    loss, weights = group_dro_loss(per_example_losses, groups, weights, eta=0.01, adjustment=adjust)

No import of `spreadcon.apps`: the trainer can import this module on its own.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

ETA_MAX = 10.0  # beyond this exp(eta * L) overflows float32 within a few steps


def check_eta(eta: float) -> float:
    """eta as a float in (0, ETA_MAX]; a ValueError naming the value otherwise."""
    if isinstance(eta, bool):
        raise ValueError(f"eta must be a number in (0, {ETA_MAX:g}], got {eta!r}")
    eta = float(eta)
    if not math.isfinite(eta) or not 0.0 < eta <= ETA_MAX:
        raise ValueError(f"eta (the Group DRO step size) must be finite and in (0, {ETA_MAX:g}], got {eta}; "
                         f"Sagawa et al. use 0.01")
    return eta


def size_adjustment(group_counts: Tensor, c: float) -> Tensor:
    """C / sqrt(n_g) [G] from the training-set group sizes n_g [G] (all > 0) and C >= 0 (finite)."""
    c = float(c)
    if not math.isfinite(c) or c < 0:
        raise ValueError(f"the group-size adjustment C must be finite and >= 0, got {c}; Sagawa et al. use 2")
    counts = torch.as_tensor(group_counts, dtype=torch.float64)
    if counts.dim() != 1 or (counts <= 0).any():
        raise ValueError(f"group_counts must be [G] positive training-set group sizes, got {counts.tolist()}")
    return c / counts.sqrt()


def group_mean_losses(losses: Tensor, groups: Tensor, n_groups: int) -> tuple[Tensor, Tensor]:
    """Mean loss per group [G] (0 where a group has no example in the batch) and the counts [G].

    losses [B] float, groups [B] int64 in 0..n_groups-1. Differentiable in `losses`."""
    if losses.dim() != 1 or groups.shape != losses.shape:
        raise ValueError(f"losses and groups must both be [B], got {tuple(losses.shape)} and {tuple(groups.shape)}")
    if groups.numel() and (int(groups.min()) < 0 or int(groups.max()) >= n_groups):
        raise ValueError(f"group ids must lie in 0..{n_groups - 1}, got {int(groups.min())}..{int(groups.max())}")
    counts = torch.bincount(groups, minlength=n_groups).to(losses.dtype)
    sums = torch.zeros(n_groups, dtype=losses.dtype, device=losses.device).index_add(0, groups, losses)
    return sums / counts.clamp(min=1), counts


def group_dro_loss(losses: Tensor, groups: Tensor, weights: Tensor, *, eta: float,
                   adjustment: Tensor | float = 0.0) -> tuple[Tensor, Tensor]:
    """One online Group DRO step: (robust loss sum_g q'_g L_g, the new weights q' [G]).

    losses [N] per-example losses (with grad), groups [N] int64 in 0..G-1, weights q [G] on the
    simplex (the previous step's output; uniform at the start), eta in (0, 10], adjustment [G]
    (`size_adjustment`) or a scalar added to every group. The new weights carry no gradient.
    """
    eta = check_eta(eta)
    if weights.dim() != 1:
        raise ValueError(f"weights must be [G], got {tuple(weights.shape)}")
    mean_loss, _ = group_mean_losses(losses, groups, weights.shape[0])
    adjust = torch.as_tensor(adjustment, dtype=mean_loss.dtype, device=mean_loss.device)
    step = eta * (mean_loss.detach() + adjust)
    # q * exp(step) normalised, computed as a softmax of log q + step so large losses cannot overflow
    new_weights = torch.softmax(torch.log(weights.to(mean_loss.dtype)) + step, dim=0)
    return (new_weights * mean_loss).sum(), new_weights
