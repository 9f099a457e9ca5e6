"""The paper's contrastive losses as functions: L_SC, L_SS, L_attract, L_repel and L_spread.

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
instance ids [M] (rows with one id are views of one image; needed only by the terms that use
aug(i): L_SS, L_repel, L_spread) plus an optional `anchor_index` [K]: the loss of those anchors
against all M rows, e.g. a process's local anchors against a gathered global batch.

Positives given directly (the callers' conventions, `checks.positives`): labels [B, L]
multi-hot, or SupContrast's `mask=[B, B]` (mask[i, j] != 0: image j is a positive of anchor i),
tiled over the views with each row's own entry removed, as SupContrast does. The mask replaces
the label-equality matrix wherever labels are used: P(i) of L_SC and L_attract (N(i) = the rest),
the same-class set in L_repel's denominator. Augmentation positives aug(i) still come from the
views (and ids). L_attract / L_repel / L_spread count an anchor's own other views in P(i) whatever
mask[b, b] says (with labels they always are, and L_repel's aug(i) must lie in its P(i)); L_SC
reads the mask as SupContrast does (soft weights allowed: a weighted mean over P(i)), and L_SS
given a mask is SupContrast's SimCLR case generalised: P(i) from the mask instead of aug(i).
labels=None and mask=None: each image its own class (SupContrast's SimCLR case).

Hyperparameters are keyword-only. temperature defaults to 0.5 everywhere (the paper's value;
pytorch-metric-learning's SupConLoss uses 0.1, its NTXentLoss 0.07: pass theirs explicitly).

`anchors="cross_view"`: view-1 anchors against view-0 points only (V must be 2), the anchor
set of the authors' code, with the paper's equations. `variant="authors"` is that code's forward
exactly: see `spreadcon.losses.authors`. `memory=MemoryBank(...)`: rows of past batches join
every contrast set (never anchors; labels [B] only).

Speed and memory: no Python loop over anchors, no host synchronisation on CUDA (the finiteness
and label/id checks run only for CPU tensors), logits in float32 under autocast (float64 stays
float64). Rows are processed by `core.RowStats` with a closed-form backward; `path="lean"`
recomputes logits in backward (O(block_size * M) extra memory), `path="dense"` keeps them;
`"auto"` is dense up to `DENSE_LIMIT` logits. `backend="triton"` (or "auto" on CUDA with triton
installed) computes the row statistics with `spreadcon.losses.kernels.triton_row_stats` (class
labels only: a mask or multi-hot labels take the torch path). A mask costs a dense [K, M] matrix.

Example:
    >>> z = torch.randn(128, 2, 64, requires_grad=True)   # 128 images, 2 views
    >>> y = torch.randint(0, 10, (128,))
    >>> loss = spread_loss(z, y, alpha=0.5, temperature=0.5)
    >>> loss.backward()
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from spreadcon.losses import kernels
from spreadcon.losses.authors import NORMALIZE, authors_loss, check_clamp, positives as authors_positives
from spreadcon.losses.checks import (check_alpha, check_choice, check_features, check_ids_agree, check_int_vector,
                                     check_temperature, positives)
from spreadcon.losses.core import MAX_UNSHIFTED_LOGIT, STATS, RowStats, compact_codes, no_autocast
from spreadcon.losses.memory_bank import MemoryBank

TERMS = ("supcon", "simclr", "attract", "repel")

Anchors = Literal["all", "cross_view"]
Path = Literal["auto", "dense", "lean"]
Backend = Literal["auto", "triton", "torch"]
Variant = Literal["paper", "authors"]
PATHS, BACKENDS, VARIANTS = ("auto", "dense", "lean"), ("auto", "triton", "torch"), ("paper", "authors")

# An anchor contributes to a term only when the sets the term is built from are non-empty.
VALID_RULES = {
    "supcon": "|P(i)| > 0",
    "simclr": "|aug(i)| > 0 (with mask=: |P(i)| > 0)",
    "attract": "|P(i)| > 0 and |N(i)| > 0",
    "repel": "|aug(i)| > 0",
}
SPLIT_TERMS = {"attract", "repel"}  # built on P(i) and N(i): a mask must be 0/1 for them
DENSE_LIMIT = 2**26  # K * M logits above which path="auto" takes the lean path (256 MiB fp32)
BLOCK_ELEMENTS = 2**21  # default rows per block: BLOCK_ELEMENTS // M (8 MiB of fp32 logits)
NORM_EPS = 1e-12  # rows shorter than this are left unscaled (a zero row: bounded gradient)


# ----------------------------------------------------------------------------- options
@dataclass(frozen=True)
class Options:
    """Hyperparameters and execution choices shared by every entry point (checked once)."""

    temperature: float = 0.5
    normalize: bool = True
    anchors: str = "all"
    path: str = "auto"
    block_size: int | None = None
    backend: str = "auto"
    bank: MemoryBank | None = None


def check_memory(memory) -> MemoryBank | None:
    if memory is not None and not isinstance(memory, MemoryBank):
        raise ValueError(f"memory must be a spreadcon.losses.MemoryBank or None, got {type(memory).__name__} "
                         f"(the dense / lean choice is path=)")
    return memory


def make_options(*, temperature=0.5, normalize=True, anchors="all", path="auto", block_size=None,
                 backend="auto", memory=None) -> Options:
    """Checked Options. memory: a MemoryBank or None."""
    check_choice(anchors, "anchors", ("all", "cross_view"), "'all' = the paper, 'cross_view' = authors' anchors")
    check_choice(path, "path", PATHS, "'lean' recomputes logits in backward, 'dense' keeps them")
    check_choice(backend, "backend", BACKENDS, "'triton' needs spreadcon.losses.kernels and CUDA")
    if block_size is not None and (isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1):
        raise ValueError(f"block_size must be a positive int (anchor rows per block) or None, got {block_size!r}")
    if normalize not in (True, False):
        raise ValueError(f"normalize must be True or False, got {normalize!r}")
    return Options(check_temperature(temperature), bool(normalize), anchors, path, block_size, backend,
                   check_memory(memory))


# ----------------------------------------------------------------------------- the flat core
def _embed(features: Tensor, opts: Options) -> tuple[Tensor, bool]:
    """float32 (float64 kept) and optionally unit-norm rows; whether logits need shifting."""
    z = features if features.dtype == torch.float64 else features.float()
    if opts.normalize:
        # rows shorter than NORM_EPS keep their length (not / 1e-12): a zero row's gradient
        # stays the size of the others' instead of ~1e11 (issue 15)
        norm = torch.linalg.vector_norm(z, dim=-1, keepdim=True)
        z = z / torch.where(norm > NORM_EPS, norm, torch.ones_like(norm))
    return z, not (opts.normalize and 1.0 / opts.temperature <= MAX_UNSHIFTED_LOGIT)


def _triton_wanted(backend: str, t: Tensor) -> bool:
    if backend == "torch":
        return False
    if backend == "triton":
        return True
    return t.device.type == "cuda" and kernels.available()


def row_stats(args: tuple, *, block: int, keep: bool, stabilize: bool, backend: str,
              pos: Tensor | None = None) -> Tensor:
    """[4, K] statistics of core.RowStats, or of kernels.triton_row_stats when the backend asks.
    args = (q, k, q_codes, k_codes, self_col, n_pos, n_neg, need): the first eight arguments of
    RowStats.apply and all of triton_row_stats (same output, same autograd). pos [K, M]: positives
    given directly (RowStats only; the kernel reads label codes)."""
    if pos is not None:
        if backend == "triton":
            raise ValueError("backend='triton' reads class labels [B]; mask= and multi-hot labels take the torch "
                             "path: pass backend='torch' or 'auto'")
        return RowStats.apply(*args, block, keep, stabilize, pos)
    if _triton_wanted(backend, args[0]):
        if kernels.available():
            return kernels.triton_row_stats(*args)
        if backend == "triton":
            raise ValueError("backend='triton' needs triton (spreadcon.losses.kernels.triton_row_stats); install "
                             "triton on a CUDA machine or pass backend='torch'")
    return RowStats.apply(*args, block, keep, stabilize)


# statistics of core.RowStats each term needs
_NEEDS = {"supcon": {"all"}, "simclr": {"all"}, "attract": {"neg", "sp"}, "repel": {"pos"}}


class Pairing(NamedTuple):
    """Anchors q [K, D] against points k [M, D], with their labels and instance ids; self_col [K]:
    each anchor's row among the points (None when anchors are not points); pos [K, M]: positives
    given directly (a mask), or None (P(i) from the labels)."""

    q: Tensor
    k: Tensor
    q_labels: Tensor
    k_labels: Tensor
    q_ids: Tensor
    k_ids: Tensor
    self_col: Tensor | None
    pos: Tensor | None = None


def _group_mean(qs: Tensor, k: Tensor, codes: tuple[Tensor, Tensor], self_dot, has_self: int):
    """(mean of S_ij over the anchor's group minus itself [K], that group's size [K]) from
    per-group sums of k (O(M D)); codes = (k_code [M], q_code [K])."""
    k_code, q_code = codes
    n = k.shape[0] + qs.shape[0]
    sums = torch.zeros(n, k.shape[1], dtype=k.dtype, device=k.device).index_add(0, k_code, k)
    size = torch.zeros(n, dtype=torch.long, device=k.device).index_add_(
        0, k_code, torch.ones_like(k_code))[q_code] - has_self
    total = (qs * sums.index_select(0, q_code)).sum(1) - self_dot
    return total / size.clamp_min(1).to(qs.dtype), size


def _mask_mean(qs: Tensor, k: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """(weighted mean of S_ij over P(i) [K], |P(i)| [K]); weights [K, M] >= 0, self entries 0."""
    w = weights.to(k.dtype)
    total = (qs * (w @ k)).sum(1)
    return total / w.sum(1).clamp_min(torch.finfo(w.dtype).tiny), (weights != 0).sum(1)


def _mask_positives(pos: Tensor, terms, q_inst: Tensor, k_inst: Tensor, self_col: Tensor | None) -> Tensor:
    """P(i) weights [K, M] from a mask: for L_attract / L_repel 0/1 with the anchor's own views
    always in (aug(i) within P(i), as with labels); the anchor's own entry 0."""
    if SPLIT_TERMS & set(terms):
        pos = (pos != 0) | (q_inst[:, None] == k_inst[None, :])
    if self_col is None:
        return pos
    return pos.index_put((torch.arange(pos.shape[0], device=pos.device), self_col),
                         torch.zeros((), dtype=pos.dtype, device=pos.device))


def _term(term: str, stats, means: dict, sizes: dict, masked: bool) -> tuple[Tensor, Tensor]:
    """(value [K], valid [K]) of one term from the row statistics and the linear parts."""
    lse_all, lse_pos, _, sp = stats
    if term == "supcon" or (term == "simclr" and masked):  # a mask gives SimCLR's positives
        value, valid = lse_all - means["pos"], sizes["pos"] > 0
    elif term == "attract":
        value, valid = sp / sizes["pos"].clamp_min(1).to(sp.dtype), (sizes["pos"] > 0) & (sizes["neg"] > 0)
    else:
        value = (lse_all if term == "simclr" else lse_pos) - means["aug"]
        valid = sizes["aug"] > 0
    return torch.where(valid, value, 0.0), valid


def _run_core(pairing: Pairing, terms, opts: Options, stabilize: bool) -> dict[str, tuple[Tensor, Tensor]]:
    """Per-anchor (value [K], valid [K]) of each term for anchors q [K, D] against points k [M, D].

    The parts linear in the logits (means over P(i) and aug(i)) come from per-class and
    per-instance sums of k (O(M D)), or from the mask; the rest from `row_stats`.
    """
    q, k, q_labels, k_labels, q_ids, k_ids, self_col, pos = pairing
    K, M = q.shape[0], k.shape[0]
    qs = q / opts.temperature
    inst = compact_codes(torch.cat([k_ids, q_ids]))
    lab = compact_codes(torch.cat([k_labels, q_labels]))
    has_self = int(self_col is not None)
    self_dot = (qs * k.index_select(0, self_col)).sum(1) if has_self else 0.0
    means, sizes = {}, {}
    if pos is None:
        means["pos"], sizes["pos"] = _group_mean(qs, k, (lab[:M], lab[M:]), self_dot, has_self)
    else:
        pos = _mask_positives(pos, terms, inst[M:], inst[:M], self_col)
        means["pos"], sizes["pos"] = _mask_mean(qs, k, pos)
    if {"simclr", "repel"} & set(terms):
        means["aug"], sizes["aug"] = _group_mean(qs, k, (inst[:M], inst[M:]), self_dot, has_self)
    sizes["neg"] = (M - has_self) - sizes["pos"]
    need = tuple(sorted(set().union(*(_NEEDS[t] for t in terms)), key=STATS.index))
    lean = opts.path == "lean" or (opts.path == "auto" and K * M > DENSE_LIMIT)
    block = opts.block_size or max(1, BLOCK_ELEMENTS // max(M, 1))
    args = (qs, k, lab[M:].int(), lab[:M].int(), self_col, sizes["pos"], sizes["neg"], need)
    with no_autocast(q.device):
        stats = row_stats(args, block=block, keep=not lean, stabilize=stabilize, backend=opts.backend,
                          pos=None if pos is None or need == ("all",) else pos)
    return {term: _term(term, stats, means, sizes, pos is not None) for term in terms}


def _with_bank(k, k_labels, k_ids, opts: Options, ids_explicit: bool):
    """Points k [M, D] (+ the bank's rows, detached, never anchors), their labels and ids."""
    rows = None if opts.bank is None else opts.bank.contents(k.shape[1], k)
    if rows is None:
        return k, k_labels, k_ids
    emb, lab, ids, has_id = rows
    if opts.normalize:
        norm = torch.linalg.vector_norm(emb, dim=-1, keepdim=True)
        emb = emb / torch.where(norm > NORM_EPS, norm, torch.ones_like(norm))
    # bank rows without an id (or a call without explicit ids) are instances of their own
    fresh = k_ids.max() + 1 + torch.arange(emb.shape[0], device=k.device)
    ids = torch.where(has_id & ids_explicit, ids, fresh)
    return torch.cat([k, emb]), torch.cat([k_labels, lab]), torch.cat([k_ids, ids])


def _parts(q, k, labels, ids, self_col, terms, *, opts, stabilize, ids_explicit: bool, q_rows=None, pos=None,
           bank_ids: bool = True):
    """Join the bank, check label/id agreement, run the core. q_rows: anchors' rows of k (or all);
    pos [K, M]: positives from a mask (then labels are unread placeholders); bank_ids=False: the
    bank's ids are not matched against explicit `ids` (its rows are instances of their own)."""
    q_labels = labels if q_rows is None else labels.index_select(0, q_rows)
    q_ids = ids if q_rows is None else ids.index_select(0, q_rows)
    k, k_labels, k_ids = _with_bank(k, labels, ids, opts, ids_explicit and bank_ids)
    if ids_explicit and terms != ("simclr",) and pos is None:  # SimCLR reads no labels
        check_ids_agree(k_labels, k_ids)
    return _run_core(Pairing(q, k, q_labels, k_labels, q_ids, k_ids, self_col, pos), terms, opts, stabilize)


def _source(labels, mask, n: int, terms, opts: Options, per: str, device: torch.device):
    """(labels [n] long, mask [n, n] or None) of a call; labels = arange(n) when absent."""
    if terms == ("simclr",):  # SimCLR reads no labels (unless they come with a mask: refused)
        labels = None if mask is None else labels
    labels, mask = positives(labels, mask, n, binary=bool(SPLIT_TERMS & set(terms)), per=per)
    if mask is not None and opts.bank is not None:
        raise ValueError("memory= takes class labels [B]: the bank's rows have no mask entries; pass labels, "
                         "or drop memory=")
    if labels is None:
        labels = torch.arange(n, device=device)
    return labels, mask


def per_anchor_losses(
    features: Tensor,
    labels: Tensor,
    ids: Tensor | None = None,
    terms: tuple[str, ...] = ("attract", "repel"),
    *,
    temperature: float = 0.5,
    normalize: bool = True,
    anchor_index: Tensor | None = None,
    memory: MemoryBank | None = None,
    path: Path = "auto",
    block_size: int | None = None,
    backend: Backend = "auto",
) -> dict[str, tuple[Tensor, Tensor]]:
    """Per-anchor values of the requested terms, for anchors among the rows of a flat batch.

    features [M, D] float, labels [M] int, ids [M] int (instance ids: rows sharing an id are views
    of one image and must share its label; required by "simclr" and "repel"), anchor_index [K] long
    (default: all M rows; every row is always a contrast point). terms: any of "supcon", "simclr",
    "attract", "repel". temperature default 0.5 (the paper's). Returns {term: (value [K], valid
    [K] bool)}, value 0 where not valid; a term's loss is value.sum() / valid.sum() (summed across
    processes first, for a distributed mean).
    """
    opts = make_options(temperature=temperature, normalize=normalize, path=path, block_size=block_size,
                        backend=backend, memory=memory)
    return flat_parts(features, labels, ids, terms, opts, anchor_index)


def _check_flat(features, terms, ids, ids_required: bool) -> Tensor:
    """ids [M] long (arange when absent and allowed) of a flat call; checks features and terms."""
    check_features(features, 2)
    M = features.shape[0]
    unknown = [t for t in terms if t not in TERMS]
    if unknown or not terms or not isinstance(terms, tuple):
        raise ValueError(f"terms must be a non-empty tuple of {TERMS}, got {terms!r}")
    if ids is None:
        uses = [t for t in terms if t in ("simclr", "repel")]
        if uses and ids_required:
            raise ValueError(f"{'/'.join(uses)} needs ids=[{M}] (instance ids: rows sharing an id are views "
                             f"of one image); pass ids, e.g. torch.arange(B).repeat_interleave(V)")
        return torch.arange(M, device=features.device)
    check_int_vector(ids, "ids", M, "one instance id per row")
    return ids.long()


def flat_parts(features, labels, ids, terms, opts: Options, anchor_index=None, *, ids_required: bool = True,
               mask: Tensor | None = None, bank_ids: bool = True):
    """Per-anchor terms of a flat batch: features [M, D], labels [M] or [M, L] (or mask [M, M]).
    bank_ids=False: opts.bank's rows never join aug(i), whatever ids they were pushed with (for
    `ids` that are batch positions, such as a gathered global batch's, not the bank's ids)."""
    explicit = ids is not None
    ids = _check_flat(features, terms, ids, ids_required)
    M = features.shape[0]
    if labels is None and mask is None:
        raise ValueError(f"labels must be an integer tensor [{M}] (or [{M}, L] multi-hot, or mask=[{M}, {M}])")
    labels, mask = _source(labels, mask, M, terms, opts, "row", features.device)
    if anchor_index is None:
        anchor_index = torch.arange(M, device=features.device)
    elif not isinstance(anchor_index, Tensor) or anchor_index.dtype != torch.long or anchor_index.ndim != 1:
        raise ValueError(f"anchor_index must be a 1-D torch.long tensor of row indices, got "
                         f"{getattr(anchor_index, 'dtype', type(anchor_index).__name__)} "
                         f"{tuple(getattr(anchor_index, 'shape', ()))} "
                         f"(for a boolean mask use mask.nonzero().squeeze(1))")
    elif anchor_index.device.type == "cpu" and len(anchor_index) and not (0 <= int(anchor_index.min()) and
                                                                          int(anchor_index.max()) < M):
        raise ValueError(f"anchor_index holds rows {int(anchor_index.min())}..{int(anchor_index.max())}, outside "
                         f"the {M} rows of features; pass row numbers in [0, {M})")  # CUDA: no host sync
    z, stabilize = _embed(features, opts)
    pos = None if mask is None else mask.index_select(0, anchor_index)
    return _parts(z.index_select(0, anchor_index), z, labels, ids, anchor_index, terms, opts=opts,
                  stabilize=stabilize, ids_explicit=explicit, q_rows=anchor_index, pos=pos, bank_ids=bank_ids)


def _mean(value: Tensor, valid: Tensor) -> Tensor:
    """Mean over valid anchors; 0 (attached to the graph) when none is valid."""
    return value.sum() / valid.sum().clamp_min(1).to(value.dtype)


def combine(parts: dict[str, tuple[Tensor, Tensor]], weights: dict[str, float], return_terms: bool):
    """sum_t weight_t * (mean of term t over its valid anchors); with return_terms, (loss, means)."""
    means = {t: _mean(*parts[t]) for t in weights}
    loss = sum(w * means[t] for t, w in weights.items())
    if return_terms:
        return loss, {t: m.detach() for t, m in means.items()}
    return loss


# ----------------------------------------------------------------------------- [B, V, D] batches
def batch_parts(features, labels, ids, terms, opts: Options, mask: Tensor | None = None):
    """Per-anchor terms of features [B, V, D] with labels [B] / [B, L] (or mask [B, B]), ids [B]."""
    check_features(features, 3)
    B, V, _ = features.shape
    labels, mask = _source(labels, mask, B, terms, opts, "image", features.device)
    explicit = ids is not None
    if explicit:
        check_int_vector(ids, "ids", B, "one instance id per image, e.g. dataset indices")
    ids = ids.long() if explicit else torch.arange(B, device=features.device)
    z, stabilize = _embed(features, opts)
    if opts.anchors == "cross_view":
        if V != 2:
            raise ValueError(f"anchors='cross_view' needs exactly V = 2 views, got V = {V}; use anchors='all'")
        return _parts(z[:, 1], z[:, 0], labels, ids, None, terms, opts=opts, stabilize=stabilize,
                      ids_explicit=explicit, pos=mask)
    flat = z.reshape(B * V, -1)  # row b * V + v is view v of image b
    rows = torch.arange(B * V, device=features.device)
    pos = None if mask is None else mask.repeat_interleave(V, 0).repeat_interleave(V, 1)  # SupContrast's tiling
    return _parts(flat, flat, labels.repeat_interleave(V), ids.repeat_interleave(V), rows, terms, opts=opts,
                  stabilize=stabilize, ids_explicit=explicit, pos=pos)


def authors(features, labels, *, mask=None, alpha, temperature, clamp_positive, normalize, anchors, memory):
    """The released forward (`authors.authors_loss`), with its own checks. features [B, 2, D]."""
    check_features(features, 3)
    B, V, _ = features.shape
    if V != 2:
        raise ValueError(f"variant='authors' needs exactly V = 2 views (view-1 anchors, view-0 points), got V = {V}")
    labels, mask = positives(labels, mask, B, binary=True, per="image")
    if labels is None and mask is None:
        raise ValueError(f"variant='authors' needs labels [{B}] (or [{B}, L] multi-hot, or mask=[{B}, {B}])")
    t = check_temperature(temperature)
    if normalize not in NORMALIZE:
        raise ValueError(f"normalize for variant='authors' must be True, False or 'released', got {normalize!r}")
    if memory is not None or anchors != "all":
        raise ValueError("variant='authors' fixes its own anchors (view 1 vs view 0) and takes no memory bank; "
                         "drop anchors= / memory=, or use variant='paper'")
    return authors_loss(features, authors_positives(labels, mask), alpha=alpha, temperature=t,
                        clamp_positive=check_clamp(clamp_positive, t), normalize=normalize)


# ----------------------------------------------------------------------------- the losses
def supcon_loss(features: Tensor, labels: Tensor | None = None, *, mask: Tensor | None = None,
                temperature: float = 0.5, normalize: bool = True, anchors: Anchors = "all",
                variant: Variant = "paper", clamp_positive: float | None = 1.0, ids: Tensor | None = None,
                memory: MemoryBank | None = None, path: Path = "auto", block_size: int | None = None,
                backend: Backend = "auto") -> Tensor:
    """L_SC, SupCon "outside" form (Khosla et al. 2020; paper Section 2). features [B, V, D], labels [B]
    (or [B, L] multi-hot, or mask=[B, B] as SupContrast's, soft weights allowed) -> scalar.
    temperature default 0.5 (the paper's; pml uses 0.1). variant="authors": the released code's
    "sup_con" (view 1 vs view 0, positive out of the denominator, clamp_positive)."""
    check_choice(variant, "variant", VARIANTS, "'paper' = SPEC.md's L_SC, 'authors' = the released code")
    if variant == "authors":
        return authors(features, labels, mask=mask, alpha=1.0, temperature=temperature,
                       clamp_positive=clamp_positive, normalize=normalize, anchors=anchors, memory=memory)
    opts = make_options(temperature=temperature, normalize=normalize, anchors=anchors, path=path,
                        block_size=block_size, backend=backend, memory=memory)
    return combine(batch_parts(features, labels, ids, ("supcon",), opts, mask), {"supcon": 1.0}, False)


def simclr_loss(features: Tensor, labels: Tensor | None = None, *, mask: Tensor | None = None,
                temperature: float = 0.5, normalize: bool = True, anchors: Anchors = "all",
                ids: Tensor | None = None, memory: MemoryBank | None = None, path: Path = "auto",
                block_size: int | None = None, backend: Backend = "auto") -> Tensor:
    """L_SS, SimCLR / NT-Xent (Chen et al. 2020). features [B, V, D] -> scalar (0 when V = 1).
    labels are ignored (positives are the other views); mask=[B, B]: positives given directly, as
    SupContrast's SupConLoss(features, mask=mask). temperature default 0.5 (pml: 0.07)."""
    if labels is not None and not isinstance(labels, Tensor):
        raise ValueError(f"simclr_loss takes hyperparameters by keyword (temperature=...), got labels={labels!r}")
    opts = make_options(temperature=temperature, normalize=normalize, anchors=anchors, path=path,
                        block_size=block_size, backend=backend, memory=memory)
    return combine(batch_parts(features, labels, ids, ("simclr",), opts, mask), {"simclr": 1.0}, False)


def attract_loss(features: Tensor, labels: Tensor | None = None, *, mask: Tensor | None = None,
                 temperature: float = 0.5, normalize: bool = True, anchors: Anchors = "all",
                 ids: Tensor | None = None, memory: MemoryBank | None = None, path: Path = "auto",
                 block_size: int | None = None, backend: Backend = "auto") -> Tensor:
    """L_attract: each positive competes only with the negatives. [B, V, D], labels [B] (or [B, L],
    or a 0/1 mask=[B, B]) -> scalar. temperature default 0.5 (the paper's)."""
    opts = make_options(temperature=temperature, normalize=normalize, anchors=anchors, path=path,
                        block_size=block_size, backend=backend, memory=memory)
    return combine(batch_parts(features, labels, ids, ("attract",), opts, mask), {"attract": 1.0}, False)


def repel_loss(features: Tensor, labels: Tensor | None = None, *, mask: Tensor | None = None,
               temperature: float = 0.5, normalize: bool = True, anchors: Anchors = "all",
               ids: Tensor | None = None, memory: MemoryBank | None = None, path: Path = "auto",
               block_size: int | None = None, backend: Backend = "auto") -> Tensor:
    """L_repel: class-conditional InfoNCE, the other views against same-class points. [B, V, D],
    labels [B] (or [B, L], or a 0/1 mask=[B, B]) -> scalar. temperature default 0.5 (the paper's)."""
    opts = make_options(temperature=temperature, normalize=normalize, anchors=anchors, path=path,
                        block_size=block_size, backend=backend, memory=memory)
    return combine(batch_parts(features, labels, ids, ("repel",), opts, mask), {"repel": 1.0}, False)


def spread_loss(features: Tensor, labels: Tensor | None = None, *, mask: Tensor | None = None,
                alpha: float = 0.5, temperature: float = 0.5, normalize: bool = True,
                anchors: Anchors = "all", variant: Variant = "paper", clamp_positive: float | None = 1.0,
                ids: Tensor | None = None, memory: MemoryBank | None = None, path: Path = "auto",
                block_size: int | None = None, backend: Backend = "auto", return_terms: bool = False):
    """L_spread = alpha * L_attract + (1 - alpha) * L_repel (paper Eq. 1). [B, V, D], labels [B]
    (or [B, L], or a 0/1 mask=[B, B]: class positives; aug(i) still from the views) -> scalar.

    alpha default 0.5, temperature default 0.5 (the paper's). return_terms=True returns
    (loss, {"attract": t, "repel": t}) with detached term means. variant="authors": the released
    code's l_spread (view 1 vs view 0, clamp_positive on L_attract's positives).
    """
    a = check_alpha(alpha)
    check_choice(variant, "variant", VARIANTS, "'paper' = SPEC.md's L_spread, 'authors' = the released code")
    if variant == "authors":
        if return_terms:
            raise ValueError("return_terms is not available for variant='authors'")
        return authors(features, labels, mask=mask, alpha=a, temperature=temperature,
                       clamp_positive=clamp_positive, normalize=normalize, anchors=anchors, memory=memory)
    opts = make_options(temperature=temperature, normalize=normalize, anchors=anchors, path=path,
                        block_size=block_size, backend=backend, memory=memory)
    parts = batch_parts(features, labels, ids, ("attract", "repel"), opts, mask)
    return combine(parts, {"attract": a, "repel": 1.0 - a}, return_terms)


# ----------------------------------------------------------------------------- flat wrappers
def _flat(features, labels, ids, weights, kw, return_terms=False):
    anchor_index = kw.pop("anchor_index", None)
    opts = make_options(**kw)
    parts = flat_parts(features, labels, ids, tuple(weights), opts, anchor_index)
    return combine(parts, weights, return_terms)


def supcon_loss_flat(features: Tensor, labels: Tensor, ids: Tensor | None = None, **kw) -> Tensor:
    """L_SC over a flat batch: features [M, D], labels [M] (ids [M] optional, only checked against
    the labels; anchor_index [K]); keywords as `per_anchor_losses` (temperature default 0.5)."""
    return _flat(features, labels, ids, {"supcon": 1.0}, kw)


def simclr_loss_flat(features: Tensor, ids: Tensor, **kw) -> Tensor:
    """L_SS over a flat batch: features [M, D], ids [M] (+ anchor_index [K]) -> scalar; temperature 0.5."""
    if not isinstance(ids, Tensor):
        raise ValueError(f"simclr_loss_flat(features, ids, *, temperature=...): ids must be an integer "
                         f"tensor [M], got {ids!r}")
    return _flat(features, ids, ids, {"simclr": 1.0}, kw)


def attract_loss_flat(features: Tensor, labels: Tensor, ids: Tensor | None = None, **kw) -> Tensor:
    """L_attract over a flat batch: features [M, D], labels [M] (ids optional) -> scalar; temperature 0.5."""
    return _flat(features, labels, ids, {"attract": 1.0}, kw)


def repel_loss_flat(features: Tensor, labels: Tensor, ids: Tensor, **kw) -> Tensor:
    """L_repel over a flat batch: features [M, D], labels [M], ids [M] -> scalar; temperature 0.5."""
    return _flat(features, labels, ids, {"repel": 1.0}, kw)


def spread_loss_flat(features: Tensor, labels: Tensor, ids: Tensor, *, alpha: float = 0.5,
                     return_terms: bool = False, **kw):
    """L_spread over a flat batch: features [M, D], labels [M], ids [M] (+ anchor_index [K]);
    alpha default 0.5, temperature default 0.5."""
    a = check_alpha(alpha)
    return _flat(features, labels, ids, {"attract": a, "repel": 1.0 - a}, kw, return_terms)
