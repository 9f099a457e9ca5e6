"""Input checks at the public boundary of `spreadcon.losses`, and where positives come from.

Positives are given in one of three ways (never two at once):
    labels [B] integer class indices: P(i) = same class (the paper, SPEC.md);
    labels [B, L] multi-hot (bool, or 0/1 integers with L >= 2): P(i) = shares at least one label,
        i.e. mask = (labels @ labels.T > 0);
    mask [B, B] (SupContrast's `mask=`): mask[i, j] != 0 when image j is a positive of anchor i;
        may be asymmetric; soft (non-negative) weights only for the terms that allow them.
B counts images for features [B, V, D] and rows for features [M, D]. Checks that need values on
the host (finiteness, 0/1 entries) run for CPU tensors only, so a GPU step never synchronises.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from spreadcon.losses.core import compact_codes


def _number(value, name: str, hint: str) -> float:
    """A finite real number from a Python / numpy scalar or a 0-d tensor; bools refused."""
    if isinstance(value, Tensor):
        if value.ndim != 0 or value.dtype == torch.bool or value.is_complex():
            raise ValueError(f"{name} must be a number or a 0-d real tensor ({hint}), got a tensor "
                             f"of shape {tuple(value.shape)} and dtype {value.dtype}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number ({hint}), got {value!r}")
    return float(value)


def check_temperature(temperature) -> float:
    """temperature as a float > 0 (numpy scalars and 0-d tensors accepted)."""
    t = _number(temperature, "temperature", "> 0; the paper uses 0.1..0.9, default 0.5")
    if t <= 0:
        raise ValueError(f"temperature must be a number > 0 (the paper uses 0.1..0.9, default 0.5), "
                         f"got {temperature!r}")
    return t


def check_alpha(alpha) -> float:
    """alpha of L_spread as a float in [0, 1]."""
    a = _number(alpha, "alpha", "in [0, 1]; 1 = L_attract, 0 = L_repel")
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (1 = L_attract, 0 = L_repel), got {alpha!r}")
    return a


def check_choice(value, name: str, choices: tuple, what: str) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices} ({what}), got {value!r}")


def check_features(features: Tensor, rank: int) -> None:
    """features [B, V, D] (rank 3) or [M, D] (rank 2): float, non-empty, finite (CPU)."""
    shape = "[B, V, D] (images, views, dim)" if rank == 3 else "[M, D] (rows, dim)"
    if not isinstance(features, Tensor):
        raise ValueError(f"features must be a torch.Tensor of shape {shape}, got {type(features).__name__}")
    if features.ndim != rank:
        hint = " (one view per image: use features.unsqueeze(1))" if rank == 3 and features.ndim == 2 else ""
        raise ValueError(f"features must have shape {shape}, got {tuple(features.shape)}{hint}")
    if not features.is_floating_point():
        raise ValueError(f"features must be a float tensor, got dtype {features.dtype}")
    if features.shape[-1] == 0 or features.numel() == 0:
        raise ValueError(f"features must be non-empty, got shape {tuple(features.shape)}")
    # A finiteness check needs the values on the host: done for CPU tensors only, so that a
    # GPU training step never synchronises (non-finite GPU input gives a non-finite loss).
    if features.device.type == "cpu" and not bool(torch.isfinite(features).all()):
        raise ValueError("features contain NaN or inf; check the encoder output (e.g. lower the learning rate)")


def check_int_vector(t: Tensor, name: str, n: int, what: str) -> None:
    """t is an integer tensor of shape [n]."""
    if not isinstance(t, Tensor):
        raise ValueError(f"{name} must be an integer torch.Tensor of shape [{n}], got {type(t).__name__}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        hint = "; multi-hot labels [B, L]: bool or 0/1 integers" if name == "labels" else ""
        raise ValueError(f"{name} must hold integers (e.g. torch.long class indices{hint}), got dtype {t.dtype}")
    if t.ndim != 1 or t.shape[0] != n:
        raise ValueError(f"{name} must have shape [{n}] ({what}), got {tuple(t.shape)}")


def check_ids_agree(labels: Tensor, ids: Tensor) -> None:
    """Rows sharing an instance id are views of one image and must share its label (CPU only:
    it needs the values on the host, and a GPU step must not synchronise)."""
    if labels.device.type != "cpu" or labels.numel() == 0:
        return
    code = compact_codes(ids)
    lo = torch.full_like(labels, torch.iinfo(torch.long).max).scatter_reduce(0, code, labels, "amin")
    hi = torch.full_like(labels, torch.iinfo(torch.long).min).scatter_reduce(0, code, labels, "amax")
    bad = (lo != hi)[code]
    if bool(bad.any()):
        row = int(bad.nonzero()[0])
        raise ValueError(f"rows sharing an id must share a label (they are views of one image): id "
                         f"{int(ids[row])} has labels {int(lo[code[row]])} and {int(hi[code[row]])}; "
                         f"pass one id per image, or ids=None")


# ----------------------------------------------------------------------------- positives
def multi_hot_mask(labels: Tensor, n: int) -> Tensor:
    """mask [n, n] bool, True where two samples share a label; labels [n, L] multi-hot."""
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"labels [B, L] (multi-hot) must be bool or 0/1 integers, got dtype {labels.dtype} "
                         f"(a float second tensor beside [B, D] embeddings is lightly's out1)")
    if labels.shape[0] != n or (labels.dtype != torch.bool and labels.shape[1] < 2):
        raise ValueError(f"labels must have shape [{n}] (class indices) or [{n}, L] (multi-hot: bool, or 0/1 "
                         f"integers with L >= 2), got {tuple(labels.shape)}; class indices in a column: "
                         f"labels.squeeze(1)")
    if labels.device.type == "cpu" and labels.dtype != torch.bool and bool(((labels != 0) & (labels != 1)).any()):
        raise ValueError("labels [B, L] (multi-hot) must hold only 0 and 1; class indices go in labels [B]")
    y = labels.float()
    return (y @ y.T) > 0


def check_mask(mask: Tensor, n: int, *, binary: bool, per: str) -> Tensor:
    """mask [n, n] (mask[i, j] != 0: j is a positive of anchor i), checked; returned as given."""
    if not isinstance(mask, Tensor):
        raise ValueError(f"mask must be a torch.Tensor [{n}, {n}] (SupContrast's mask: 1 where sample j is a "
                         f"positive of anchor i), got {type(mask).__name__}")
    if mask.is_complex() or mask.shape != (n, n):
        raise ValueError(f"mask must be a real tensor of shape [{n}, {n}] (one row and column per {per}), got "
                         f"{tuple(mask.shape)} {mask.dtype}")
    if mask.device.type != "cpu" or mask.dtype == torch.bool:
        return mask
    if not bool(torch.isfinite(mask).all()) or bool((mask < 0).any()):
        raise ValueError("mask must be finite and >= 0 (1 = positive, 0 = not a positive)")
    if binary and bool(((mask != 0) & (mask != 1)).any()):
        raise ValueError("mask must hold only 0 and 1 for L_attract, L_repel and L_spread (they split the "
                         "batch into positives and negatives); soft weights: SupConLoss / SimCLRLoss only")
    return mask


def positives(labels: Tensor | None, mask: Tensor | None, n: int, *, binary: bool,
              per: str) -> tuple[Tensor | None, Tensor | None]:
    """(labels [n] long, None), (None, mask [n, n]) or (None, None): the one source of positives.

    labels [n] or [n, L] (multi-hot, turned into a mask), or SupContrast's mask [n, n];
    binary: the mask must be 0/1 (the terms that split the batch into P(i) and N(i)).
    """
    if labels is not None and mask is not None:
        raise ValueError("give labels or mask, not both (as SupContrast's SupConLoss): mask=[B, B] says "
                         "which samples are positives, labels say it by class")
    if mask is not None:
        return None, check_mask(mask, n, binary=binary, per=per)
    if isinstance(labels, Tensor) and labels.ndim == 2:
        return None, multi_hot_mask(labels, n)
    if labels is not None:
        check_int_vector(labels, "labels", n, f"one class label per {per}, or [{n}, L] multi-hot")
        labels = labels.long()
    return labels, None
