"""The losses as nn.Modules that hold hyperparameters only, and the LOSSES registry.

Each module takes the calling conventions of the libraries its users come from (the dispatch
rules of `_Loss.forward`): spreadcon's / SupContrast's features [B, V, D] with labels [B],
multi-hot labels [B, L] or `mask=[B, B]`; pytorch-metric-learning's embeddings [M, D] with
labels [M]; lightly's two views `loss(out0, out1)` / `loss(out0, out1, labels)`.
The maths is in `spreadcon.losses.functional`.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor, nn

from spreadcon import distributed
from spreadcon.losses.authors import NORMALIZE, check_clamp
from spreadcon.losses.checks import check_alpha, check_choice, check_temperature
from spreadcon.losses.functional import (VARIANTS, Anchors, Backend, Options, Path, Variant, authors, batch_parts,
                                         check_memory, combine, flat_parts, make_options)
from spreadcon.losses.memory_bank import MemoryBank


def _two_views(out0: Tensor, out1: Tensor) -> Tensor:
    """lightly's (out0 [B, D], out1 [B, D]) -> features [B, 2, D]."""
    if out1.shape != out0.shape or out1.dtype != out0.dtype or out1.device != out0.device:
        raise ValueError(f"out1 must match out0 (lightly's loss(out0, out1): [B, D] embeddings of two views of "
                         f"B images), got out0 {tuple(out0.shape)} {out0.dtype} and out1 {tuple(out1.shape)} "
                         f"{out1.dtype} on {out1.device}; labels must be integer (multi-hot: bool or 0/1 int)")
    return torch.stack([out0, out1], dim=1)


def split_call(features: Tensor, args: tuple, labels: Tensor | None,
               ids: Tensor | None) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """(features, labels, ids) of a module call: forward(features, *args, labels=, ids=).

    A float tensor right after [B, D] embeddings is lightly's second view (labels are never
    float); the positional tensors after the embedding(s) are labels, then ids.
    """
    if args and isinstance(features, Tensor) and features.ndim == 2 and isinstance(args[0], Tensor) \
            and args[0].is_floating_point():
        features, args = _two_views(features, args[0]), args[1:]
    if len(args) > 2:
        raise ValueError(f"a loss takes (features, labels, ids) or lightly's (out0, out1, labels), got "
                         f"{len(args)} tensors after the embeddings")
    for name, value in zip(("labels", "ids"), args):
        if (labels if name == "labels" else ids) is not None:
            raise ValueError(f"{name} given twice (positionally and by keyword)")
        labels, ids = (value, ids) if name == "labels" else (labels, value)
    return features, labels, ids


class _Loss(nn.Module):
    """Holds hyperparameters only (`options`); temperature default 0.5.

    forward(features, *args, labels=None, ids=None, mask=None, memory=None, return_terms=False)
    -> scalar; the call is read as the first rule that fits:
      1. features [B, D] float and a *float* second tensor: lightly's two views,
         loss(out0 [B, D], out1 [B, D]) or loss(out0, out1, labels [B]), the same as
         features = torch.stack([out0, out1], dim=1) [B, 2, D] (out1 must match out0);
      2. features [B, V, D]: labels [B] (or [B, L] multi-hot, or mask=[B, B] as SupContrast's),
         ids [B] (instance ids, e.g. dataset indices);
      3. features [M, D]: pytorch-metric-learning's loss(embeddings, labels [M]), each row its own
         instance unless ids=[M] says which rows are views of one image (mask=[M, M] allowed).
    Positional tensors after the embedding(s) are labels, then ids; labels and mask together are
    a ValueError (as SupContrast); labels=None and mask=None: each image its own class.

    The distributed protocol (`spreadcon.distributed`): `term_weights` ({SPEC.md term: weight},
    None for the authors' variant) and `per_anchor(features [M, D], labels [M], ids [M],
    anchor_index=[K], memory=None)` -> {term: (value [K], valid [K])}. gather_distributed=True (as
    in lightly): under torch.distributed, forward contrasts local anchors against the gathered
    global batch (and memory=, a bank every process holds identically: see spreadcon.distributed).
    """

    variant = "paper"
    terms: tuple[str, ...] = ()

    def __init__(self, temperature: float = 0.5, *, normalize=True, anchors: Anchors = "all",
                 path: Path = "auto", block_size: int | None = None, backend: Backend = "auto",
                 memory: MemoryBank | None = None, gather_distributed: bool = False,
                 variant: Variant | None = None, clamp_positive: float | None = 1.0):
        super().__init__()
        variant = self.variant if variant is None else variant
        check_choice(variant, "variant", VARIANTS, "'paper' or 'authors'")
        if variant == "authors" and not hasattr(type(self), "term_weights_authors"):
            raise ValueError(f"variant='authors' exists for SupConLoss and SpreadLoss only, not {type(self).__name__}")
        self.variant = variant
        if variant == "authors":
            self.options, self.clamp_positive = self._authors_options(temperature, normalize, anchors, memory,
                                                                      clamp_positive)
        else:
            self.options = make_options(temperature=temperature, normalize=normalize, anchors=anchors, path=path,
                                        block_size=block_size, backend=backend, memory=memory)
        if not isinstance(gather_distributed, bool):
            raise ValueError(f"gather_distributed must be True or False, got {gather_distributed!r}")
        self.gather_distributed = gather_distributed

    @staticmethod
    def _authors_options(temperature, normalize, anchors, memory, clamp_positive) -> tuple[Options, float | None]:
        t = check_temperature(temperature)
        if normalize not in NORMALIZE or anchors != "all" or memory is not None:
            raise ValueError("variant='authors' takes normalize in (True, False, 'released') and no "
                             "anchors= / memory= (it fixes view 1 vs view 0)")
        return Options(temperature=t, normalize=normalize), check_clamp(clamp_positive, t)

    @property
    def term_weights(self) -> dict[str, float] | None:
        return None if self.variant == "authors" else {t: 1.0 for t in self.terms}

    def per_anchor(self, features: Tensor, labels: Tensor, ids: Tensor, *, anchor_index: Tensor | None = None,
                   memory: MemoryBank | None = None):
        """Flat per-anchor terms of this loss: see `functional.per_anchor_losses`. memory: a MemoryBank
        whose rows join every contrast set as in forward (detached, never anchors; None: the bank
        given at construction, if any). Bank rows are instances of their own here: `ids` are the
        batch's (e.g. a gathered global batch's positions), not ids the bank was pushed with."""
        if self.term_weights is None:
            raise ValueError(f"{type(self).__name__}(variant='authors') has no per-anchor form (single process only)")
        opts = self.options if memory is None else replace(self.options, bank=check_memory(memory))
        return flat_parts(features, labels, ids, tuple(self.term_weights), opts, anchor_index, bank_ids=False)

    def forward(self, features: Tensor, *args: Tensor, labels: Tensor | None = None, ids: Tensor | None = None,
                mask: Tensor | None = None, memory: MemoryBank | None = None, return_terms: bool = False):
        features, labels, ids = split_call(features, args, labels, ids)
        if self.gather_distributed and distributed.get_world_size() > 1:
            if ids is not None or mask is not None or getattr(labels, "ndim", 1) != 1:
                raise ValueError("gather_distributed=True takes labels [B] and no ids= / mask= (the global "
                                 "batch's ids are its positions; masks and multi-hot labels are single-process)")
            return distributed.global_batch_forward(self, features, labels, memory=memory,
                                                    return_terms=return_terms)
        if self.variant == "authors":
            if memory is not None or ids is not None or return_terms:
                raise ValueError("variant='authors' takes no ids= / memory= / return_terms")
            return authors(features, labels, mask=mask, alpha=self.term_weights_authors,
                           temperature=self.options.temperature, clamp_positive=self.clamp_positive,
                           normalize=self.options.normalize, anchors="all", memory=None)
        opts = self.options if memory is None else replace(self.options, bank=check_memory(memory))
        return combine(self._parts(features, labels, ids, mask, opts), self.term_weights, return_terms)

    def _parts(self, features, labels, ids, mask, opts: Options):
        """Per-anchor terms of a flat [M, D] or a [B, V, D] call."""
        if not (isinstance(features, Tensor) and features.ndim == 2):
            return batch_parts(features, labels, ids, self.terms, opts, mask)
        if self.terms == ("simclr",) and ids is None and mask is None:
            ids = labels  # pml's NTXentLoss convention: labels are instance labels
        if labels is None and mask is None:
            labels = torch.arange(features.shape[0], device=features.device)
        return flat_parts(features, labels, ids, self.terms, opts, None, ids_required=False, mask=mask)

    def extra_repr(self) -> str:
        o = self.options
        extra = f", variant='authors', clamp_positive={self.clamp_positive}" if self.variant == "authors" else ""
        return f"temperature={o.temperature}, normalize={o.normalize}, anchors={o.anchors!r}{extra}"


class SupConLoss(_Loss):
    """L_SC, SupCon's "outside" form (paper Section 2); temperature 0.5 by default.

    Calls: see `_Loss` (SupContrast's mask=[B, B] may hold soft weights here: a weighted mean over
    the positives, as SupContrast's). variant="authors": the released code's "sup_con". pml's
    SupConLoss defaults to 0.1. On pml's (embeddings [M, D], labels [M]) values and gradients
    equal pml's SupConLoss, except that pml returns 0 for a one-class batch where this is the
    paper's L_SC (log(M - 1) minus the mean positive similarity). Equal to SupContrast's
    SupConLoss(temperature=t, base_temperature=t) on unit-norm features, where every anchor has a
    positive (SupContrast averages a 0 for an anchor without one; here it is left out)."""

    terms = ("supcon",)
    term_weights_authors = 1.0


class SimCLRLoss(_Loss):
    """L_SS, SimCLR / NT-Xent; temperature 0.5 by default (pml's NTXentLoss: 0.07, lightly's: 0.5).

    Calls: see `_Loss`. [B, V, D]: labels ignored; lightly's loss(out0, out1) equals lightly's
    NTXentLoss(out0, out1); [M, D]: labels are instance labels (pml's NTXentLoss convention)
    unless ids=[M] is given; equal to pml's NTXentLoss with two views per instance (with more, pml
    averages over positive pairs and keeps the other positives out of each denominator).
    mask=[B, B]: positives given directly, as SupContrast's SupConLoss(features, mask=mask) (its
    SimCLR case is mask = eye)."""

    terms = ("simclr",)


class AttractLoss(_Loss):
    """L_attract: each positive competes only with the negatives (paper Eq. 2); temperature 0.5.

    Calls: see `_Loss`; a mask must be 0/1 (P(i) = mask's positives plus the anchor's own views,
    N(i) = the rest)."""

    terms = ("attract",)


class RepelLoss(_Loss):
    """L_repel, class-conditional InfoNCE (paper Eq. 3); temperature 0.5 by default.

    Calls: see `_Loss`; a 0/1 mask replaces "same class" in the denominator, aug(i) still comes
    from the views. On [M, D] input without ids every row is its own instance, so aug(i) is empty
    and the loss is 0: pass ids=[M]."""

    terms = ("repel",)


class SpreadLoss(_Loss):
    """L_spread = alpha * L_attract + (1 - alpha) * L_repel (paper Eq. 1); alpha, temperature 0.5.

    Calls: see `_Loss`; a 0/1 mask gives the class positives of both terms (aug(i) from the views).
    variant="authors": the released code's l_spread (alpha 0.5 there by its defaults)."""

    terms = ("attract", "repel")

    def __init__(self, alpha: float = 0.5, temperature: float = 0.5, **kw):
        super().__init__(temperature, **kw)
        self.alpha = check_alpha(alpha)

    @property
    def term_weights(self) -> dict[str, float] | None:
        return None if self.variant == "authors" else {"attract": self.alpha, "repel": 1.0 - self.alpha}

    @property
    def term_weights_authors(self) -> float:
        return self.alpha

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, " + super().extra_repr()


class SupConAuthorsLoss(SupConLoss):
    """The authors' released "sup_con" forward: L_attract form, view 1 vs view 0, clamped positives."""

    variant = "authors"


class SpreadAuthorsLoss(SpreadLoss):
    """The authors' released "l_spread" forward: view 1 vs view 0, clamped positives, alpha 0.5."""

    variant = "authors"


LOSSES: dict[str, type[nn.Module]] = {
    "supcon": SupConLoss,
    "simclr": SimCLRLoss,
    "attract": AttractLoss,
    "repel": RepelLoss,
    "spread": SpreadLoss,
    "supcon-authors": SupConAuthorsLoss,
    "spread-authors": SpreadAuthorsLoss,
}
