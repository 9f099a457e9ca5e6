"""The paper's contrastive losses: L_SC, L_SS, L_attract, L_repel and L_spread.

Chen et al., "The Details Matter: Preventing Class Collapse in Supervised Contrastive Learning"
(ICLR 2022 submission), Section 3 and Appendix; restated in SPEC.md. With z_i the L2-normalised
embeddings of a batch B of V views of n images, s_ij = z_i . z_j / tau,
P(i) = same-label points of B \\ {i}, N(i) = other-label points, aug(i) = other views of i's image:

    L_SC(i)      = -1/|P(i)| sum_{p in P(i)} log( e^{s_ip} / sum_{a in B\\{i}} e^{s_ia} )
    L_SS(i)      = -1/|aug(i)| sum_{a in aug(i)} log( e^{s_ia} / sum_{b in B\\{i}} e^{s_ib} )
    L_attract(i) = -1/|P(i)| sum_{p in P(i)} log( e^{s_ip} / (e^{s_ip} + sum_{a in N(i)} e^{s_ia}) )
    L_repel(i)   = -1/|aug(i)| sum_{a in aug(i)} log( e^{s_ia} / sum_{p in P(i)} e^{s_ip} )
    L_spread     = alpha * L_attract + (1 - alpha) * L_repel

Each loss is the mean over the *valid* anchors of its term (`VALID_RULES`): an anchor
with an empty P(i) (L_SC, L_attract), empty aug(i) (L_SS, L_repel; e.g. V = 1) or empty N(i)
(L_attract: then every ratio is e^{s_ip}/e^{s_ip} = 1, the term is exactly 0 and carries no
signal; N(i) is empty for all anchors at once, only in a one-class batch) is left out of that
term's mean. When no anchor is valid the term is 0, still attached to the graph, so backward
works. Values are never NaN or inf for finite input.

Shapes: features [B, V, D] (B images, V >= 1 views), labels [B] integers; result a scalar.
Flat entry points (`*_loss_flat`, `per_anchor_losses`) take features [M, D], labels [M] and
instance ids [M] (rows with one id are views of one image) plus an optional `anchor_index` [K]:
the loss of those anchors against all M rows, e.g. a process's local anchors against a
gathered global batch.

`anchors="cross_view"` is the authors' code variant: view-1 anchors against view-0 points only
(V must be 2), without that code's positive-logit clamp and wrong-norm bugs.

Speed and memory: no Python loop over anchors, no host synchronisation (the finiteness check
runs only for CPU tensors), logits in float32 under autocast (float64 stays float64). Rows are
processed by `losses_core.BlockedInfoNCE` with a closed-form backward; `memory="lean"`
recomputes logits in backward (O(block_size * M) extra memory), `memory="dense"` keeps them;
`"auto"` is dense up to `DENSE_LIMIT` logits.

Example:
    >>> z = torch.randn(128, 2, 64, requires_grad=True)   # 128 images, 2 views
    >>> y = torch.randint(0, 10, (128,))
    >>> loss = spread_loss(z, y, alpha=0.5, temperature=0.5)
    >>> loss.backward()
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spreadcon.losses_core import MAX_UNSHIFTED_LOGIT, STATS, RowStats, compact_codes, no_autocast

TERMS = ("supcon", "simclr", "attract", "repel")

Anchors = Literal["all", "cross_view"]
Memory = Literal["auto", "dense", "lean"]

# An anchor contributes to a term only when the sets the term is built from are non-empty.
VALID_RULES = {
    "supcon": "|P(i)| > 0",
    "simclr": "|aug(i)| > 0",
    "attract": "|P(i)| > 0 and |N(i)| > 0",
    "repel": "|aug(i)| > 0",
}
DENSE_LIMIT = 2**26  # K * M logits above which memory="auto" takes the lean path (256 MiB fp32)
BLOCK_ELEMENTS = 2**21  # default rows per block: BLOCK_ELEMENTS // M (8 MiB of fp32 logits)


# ----------------------------------------------------------------------------- input checks
def _check_temperature(temperature: float) -> None:
    if not (isinstance(temperature, (int, float)) and temperature > 0):
        raise ValueError(f"temperature must be a number > 0 (the paper uses 0.1..0.9), got {temperature!r}")


def _check_alpha(alpha: float) -> None:
    if not (isinstance(alpha, (int, float)) and 0.0 <= alpha <= 1.0):
        raise ValueError(f"alpha must be in [0, 1] (1 = L_attract, 0 = L_repel), got {alpha!r}")


def _check_options(anchors: str, memory: str, block_size: int | None) -> None:
    if anchors not in ("all", "cross_view"):
        raise ValueError(f"anchors must be 'all' (the paper) or 'cross_view' (authors' code), got {anchors!r}")
    if memory not in ("auto", "dense", "lean"):
        raise ValueError(f"memory must be 'auto', 'dense' or 'lean', got {memory!r}")
    if block_size is not None and not (isinstance(block_size, int) and block_size >= 1):
        raise ValueError(f"block_size must be a positive int (anchor rows per block) or None, got {block_size!r}")


def _check_features(features: Tensor, rank: int) -> None:
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


def _check_int_vector(t: Tensor, name: str, n: int, what: str) -> None:
    if not isinstance(t, Tensor):
        raise ValueError(f"{name} must be an integer torch.Tensor of shape [{n}], got {type(t).__name__}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must hold integers (e.g. torch.long class indices), got dtype {t.dtype}")
    if t.ndim != 1 or t.shape[0] != n:
        raise ValueError(f"{name} must have shape [{n}] ({what}), got {tuple(t.shape)}")


# ----------------------------------------------------------------------------- the flat core
def _embed(features: Tensor, temperature: float, normalize: bool) -> tuple[Tensor, bool]:
    """float32 (float64 kept) and optionally unit-norm rows; whether logits need shifting."""
    z = features if features.dtype == torch.float64 else features.float()
    if normalize:
        z = F.normalize(z, dim=-1)
    return z, not (normalize and 1.0 / temperature <= MAX_UNSHIFTED_LOGIT)


# statistics of losses_core.RowStats each term needs
_NEEDS = {"supcon": {"all"}, "simclr": {"all"}, "attract": {"neg", "sp"}, "repel": {"pos"}}


def _run_core(q, k, q_labels, k_labels, q_ids, k_ids, self_col, terms, temperature, stabilize,
              memory, block_size) -> dict[str, tuple[Tensor, Tensor]]:
    """Per-anchor (value [K], valid [K]) of each term for anchors q [K, D] against points k [M, D].

    self_col [K]: each anchor's row among the points (None when anchors are not points).
    The parts linear in the logits (means over P(i) and aug(i)) come from per-class and
    per-instance sums of k (O(M D)); the rest from losses_core.RowStats.
    """
    K, M = q.shape[0], k.shape[0]
    qs = q / temperature
    lab = compact_codes(torch.cat([k_labels, q_labels]))
    k_lab, q_lab = lab[:M], lab[M:]
    inst = compact_codes(torch.cat([k_ids, q_ids]))
    k_inst, q_inst = inst[:M], inst[M:]
    has_self = int(self_col is not None)
    self_dot = (qs * k.index_select(0, self_col)).sum(1) if has_self else 0.0

    def group_mean(k_code, q_code):  # (sum over the anchor's group minus itself of S, size)
        sums = torch.zeros(M + K, k.shape[1], dtype=k.dtype, device=k.device).index_add(0, k_code, k)
        size = torch.zeros(M + K, dtype=torch.long, device=k.device).index_add_(
            0, k_code, torch.ones_like(k_code))[q_code] - has_self
        total = (qs * sums.index_select(0, q_code)).sum(1) - self_dot
        return total / size.clamp_min(1).to(qs.dtype), size

    mean_pos, n_pos = group_mean(k_lab, q_lab)
    n_neg = (M - has_self) - n_pos
    need = tuple(sorted(set().union(*(_NEEDS[t] for t in terms)), key=STATS.index))
    lean = memory == "lean" or (memory == "auto" and K * M > DENSE_LIMIT)
    block = block_size or max(1, BLOCK_ELEMENTS // max(M, 1))
    with no_autocast(q.device):
        lse_all, lse_pos, lse_neg, sp = RowStats.apply(
            qs, k, q_lab.int(), k_lab.int(), self_col, n_pos, n_neg, need, block, not lean, stabilize)
    out = {}
    for term in terms:
        if term == "supcon":
            value, valid = lse_all - mean_pos, n_pos > 0
        elif term == "attract":
            value, valid = sp / n_pos.clamp_min(1).to(sp.dtype), (n_pos > 0) & (n_neg > 0)
        else:
            mean_aug, n_aug = group_mean(k_inst, q_inst)
            value = (lse_all if term == "simclr" else lse_pos) - mean_aug
            valid = n_aug > 0
        out[term] = (torch.where(valid, value, 0.0), valid)
    return out


def per_anchor_losses(
    features: Tensor,
    labels: Tensor,
    ids: Tensor,
    terms: tuple[str, ...] = ("attract", "repel"),
    temperature: float = 0.5,
    *,
    normalize: bool = True,
    anchor_index: Tensor | None = None,
    memory: Memory = "auto",
    block_size: int | None = None,
) -> dict[str, tuple[Tensor, Tensor]]:
    """Per-anchor values of the requested terms, for anchors among the rows of a flat batch.

    features [M, D] float, labels [M] int, ids [M] int (instance ids: rows sharing an id are views
    of one image and must share its label), anchor_index [K] long (default: all M rows; every row
    is always a contrast point). terms: any of "supcon", "simclr", "attract", "repel".
    Returns {term: (value [K], valid [K] bool)}, value 0 where not valid; the loss of a term is
    value.sum() / valid.sum() (summed across processes first, for a distributed mean).
    """
    _check_features(features, 2)
    M = features.shape[0]
    _check_int_vector(labels, "labels", M, "one label per row")
    _check_int_vector(ids, "ids", M, "one instance id per row")
    _check_temperature(temperature)
    _check_options("all", memory, block_size)
    unknown = [t for t in terms if t not in TERMS]
    if unknown or not terms:
        raise ValueError(f"terms must be a non-empty tuple of {TERMS}, got {terms!r}")
    if anchor_index is None:
        anchor_index = torch.arange(M, device=features.device)
    elif anchor_index.dtype != torch.long or anchor_index.ndim != 1:
        raise ValueError(f"anchor_index must be a 1-D torch.long tensor of row indices, got {anchor_index.dtype} "
                         f"{tuple(anchor_index.shape)} (for a boolean mask use mask.nonzero().squeeze(1))")
    z, stabilize = _embed(features, temperature, normalize)
    labels, ids = labels.long(), ids.long()
    return _run_core(z.index_select(0, anchor_index), z, labels.index_select(0, anchor_index), labels,
                     ids.index_select(0, anchor_index), ids, anchor_index, terms, temperature, stabilize,
                     memory, block_size)


def _mean(value: Tensor, valid: Tensor) -> Tensor:
    """Mean over valid anchors; 0 (attached to the graph) when none is valid."""
    return value.sum() / valid.sum().clamp_min(1).to(value.dtype)


def _combine(parts: dict[str, tuple[Tensor, Tensor]], weights: dict[str, float], return_terms: bool):
    means = {t: _mean(*parts[t]) for t in weights}
    loss = sum(w * means[t] for t, w in weights.items())
    if return_terms:
        return loss, {t: m.detach() for t, m in means.items()}
    return loss


# ----------------------------------------------------------------------------- [B, V, D] batches
def _batch_terms(features, labels, terms, temperature, normalize, anchors, memory, block_size):
    _check_features(features, 3)
    B, V, _ = features.shape
    if labels is None:  # SimCLR: every image is its own class
        labels = torch.arange(B, device=features.device)
    _check_int_vector(labels, "labels", B, "one class label per image, features are [B, V, D]")
    _check_temperature(temperature)
    _check_options(anchors, memory, block_size)
    ids = torch.arange(B, device=features.device)
    labels = labels.long()
    z, stabilize = _embed(features, temperature, normalize)
    if anchors == "cross_view":
        if V != 2:
            raise ValueError(f"anchors='cross_view' needs exactly V = 2 views, got V = {V}; use anchors='all'")
        return _run_core(z[:, 1], z[:, 0], labels, labels, ids, ids, None, terms, temperature, stabilize,
                         memory, block_size)
    flat = z.reshape(B * V, -1)  # row b * V + v is view v of image b
    labels, ids = labels.repeat_interleave(V), ids.repeat_interleave(V)
    rows = torch.arange(B * V, device=features.device)
    return _run_core(flat, flat, labels, labels, ids, ids, rows, terms, temperature, stabilize, memory,
                     block_size)


def supcon_loss(features: Tensor, labels: Tensor, temperature: float = 0.5, *, normalize: bool = True,
                anchors: Anchors = "all", memory: Memory = "auto", block_size: int | None = None) -> Tensor:
    """L_SC, SupCon "outside" form (Khosla et al. 2020). features [B, V, D], labels [B] -> scalar."""
    parts = _batch_terms(features, labels, ("supcon",), temperature, normalize, anchors, memory, block_size)
    return _combine(parts, {"supcon": 1.0}, False)


def simclr_loss(features: Tensor, temperature: float = 0.5, *, normalize: bool = True,
                anchors: Anchors = "all", memory: Memory = "auto", block_size: int | None = None) -> Tensor:
    """L_SS, SimCLR / NT-Xent (Chen et al. 2020). features [B, V, D] -> scalar (0 when V = 1)."""
    parts = _batch_terms(features, None, ("simclr",), temperature, normalize, anchors, memory, block_size)
    return _combine(parts, {"simclr": 1.0}, False)


def attract_loss(features: Tensor, labels: Tensor, temperature: float = 0.5, *, normalize: bool = True,
                 anchors: Anchors = "all", memory: Memory = "auto", block_size: int | None = None) -> Tensor:
    """L_attract: each positive competes only with the negatives. [B, V, D], [B] -> scalar."""
    parts = _batch_terms(features, labels, ("attract",), temperature, normalize, anchors, memory, block_size)
    return _combine(parts, {"attract": 1.0}, False)


def repel_loss(features: Tensor, labels: Tensor, temperature: float = 0.5, *, normalize: bool = True,
               anchors: Anchors = "all", memory: Memory = "auto", block_size: int | None = None) -> Tensor:
    """L_repel: class-conditional InfoNCE, the other views against same-class points. -> scalar."""
    parts = _batch_terms(features, labels, ("repel",), temperature, normalize, anchors, memory, block_size)
    return _combine(parts, {"repel": 1.0}, False)


def spread_loss(features: Tensor, labels: Tensor, alpha: float = 0.5, temperature: float = 0.5, *,
                normalize: bool = True, anchors: Anchors = "all", memory: Memory = "auto",
                block_size: int | None = None, return_terms: bool = False):
    """L_spread = alpha * L_attract + (1 - alpha) * L_repel. [B, V, D], [B] -> scalar.

    return_terms=True returns (loss, {"attract": t, "repel": t}) with detached term means.
    """
    _check_alpha(alpha)
    parts = _batch_terms(features, labels, ("attract", "repel"), temperature, normalize, anchors,
                         memory, block_size)
    return _combine(parts, {"attract": alpha, "repel": 1.0 - alpha}, return_terms)


# ----------------------------------------------------------------------------- flat wrappers
def supcon_loss_flat(features: Tensor, labels: Tensor, ids: Tensor, temperature: float = 0.5, **kw) -> Tensor:
    """L_SC over a flat batch: features [M, D], labels [M], ids [M] (+ anchor_index [K]) -> scalar."""
    return _combine(per_anchor_losses(features, labels, ids, ("supcon",), temperature, **kw), {"supcon": 1.0}, False)


def simclr_loss_flat(features: Tensor, ids: Tensor, temperature: float = 0.5, **kw) -> Tensor:
    """L_SS over a flat batch: features [M, D], ids [M] (+ anchor_index [K]) -> scalar."""
    return _combine(per_anchor_losses(features, ids, ids, ("simclr",), temperature, **kw), {"simclr": 1.0}, False)


def attract_loss_flat(features: Tensor, labels: Tensor, ids: Tensor, temperature: float = 0.5, **kw) -> Tensor:
    """L_attract over a flat batch: features [M, D], labels [M], ids [M] -> scalar."""
    return _combine(per_anchor_losses(features, labels, ids, ("attract",), temperature, **kw), {"attract": 1.0}, False)


def repel_loss_flat(features: Tensor, labels: Tensor, ids: Tensor, temperature: float = 0.5, **kw) -> Tensor:
    """L_repel over a flat batch: features [M, D], labels [M], ids [M] -> scalar."""
    return _combine(per_anchor_losses(features, labels, ids, ("repel",), temperature, **kw), {"repel": 1.0}, False)


def spread_loss_flat(features: Tensor, labels: Tensor, ids: Tensor, alpha: float = 0.5,
                     temperature: float = 0.5, *, return_terms: bool = False, **kw):
    """L_spread over a flat batch: features [M, D], labels [M], ids [M] (+ anchor_index [K])."""
    _check_alpha(alpha)
    parts = per_anchor_losses(features, labels, ids, ("attract", "repel"), temperature, **kw)
    return _combine(parts, {"attract": alpha, "repel": 1.0 - alpha}, return_terms)


# ----------------------------------------------------------------------------- modules
class _Loss(nn.Module):
    """Holds hyperparameters only; forward(features [B, V, D], labels [B]) -> scalar."""

    def __init__(self, temperature: float = 0.5, *, normalize: bool = True, anchors: Anchors = "all",
                 memory: Memory = "auto", block_size: int | None = None):
        super().__init__()
        _check_temperature(temperature)
        _check_options(anchors, memory, block_size)
        self.temperature, self.normalize, self.anchors = temperature, normalize, anchors
        self.memory, self.block_size = memory, block_size

    def _kw(self) -> dict:
        return dict(normalize=self.normalize, anchors=self.anchors, memory=self.memory, block_size=self.block_size)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, normalize={self.normalize}, anchors={self.anchors!r}"


class SupConLoss(_Loss):
    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        return supcon_loss(features, labels, self.temperature, **self._kw())


class SimCLRLoss(_Loss):
    def forward(self, features: Tensor, labels: Tensor | None = None) -> Tensor:
        """labels are ignored, so every loss module can be called as loss_fn(z, labels)."""
        return simclr_loss(features, self.temperature, **self._kw())


class AttractLoss(_Loss):
    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        return attract_loss(features, labels, self.temperature, **self._kw())


class RepelLoss(_Loss):
    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        return repel_loss(features, labels, self.temperature, **self._kw())


class SpreadLoss(_Loss):
    def __init__(self, alpha: float = 0.5, temperature: float = 0.5, **kw):
        super().__init__(temperature, **kw)
        _check_alpha(alpha)
        self.alpha = alpha

    def forward(self, features: Tensor, labels: Tensor, return_terms: bool = False):
        return spread_loss(features, labels, self.alpha, self.temperature, return_terms=return_terms, **self._kw())

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, " + super().extra_repr()


LOSSES: dict[str, type[nn.Module]] = {
    "supcon": SupConLoss,
    "simclr": SimCLRLoss,
    "attract": AttractLoss,
    "repel": RepelLoss,
    "spread": SpreadLoss,
}
