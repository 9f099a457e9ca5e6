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
instance ids [M] (rows with one id are views of one image; needed only by the terms that use
aug(i): L_SS, L_repel, L_spread) plus an optional `anchor_index` [K]: the loss of those anchors
against all M rows, e.g. a process's local anchors against a gathered global batch. The modules
(`LOSSES`) take either form, so pytorch-metric-learning's `loss(embeddings [M, D], labels [M])`
works unchanged (each row its own instance unless `ids=[M]` is given).

Hyperparameters are keyword-only. temperature defaults to 0.5 everywhere (the paper's value;
pytorch-metric-learning's SupConLoss uses 0.1, its NTXentLoss 0.07: pass theirs explicitly).

`anchors="cross_view"`: view-1 anchors against view-0 points only (V must be 2), the anchor
set of the authors' code, with the paper's equations. `variant="authors"` (or LOSSES
"supcon-authors" / "spread-authors") is that code's forward exactly: see `losses_authors`.
`memory=MemoryBank(...)`: rows of past batches join every contrast set (never anchors).

Speed and memory: no Python loop over anchors, no host synchronisation on CUDA (the finiteness
and label/id checks run only for CPU tensors), logits in float32 under autocast (float64 stays
float64). Rows are processed by `losses_core.RowStats` with a closed-form backward;
`path="lean"` recomputes logits in backward (O(block_size * M) extra memory), `path="dense"`
keeps them; `"auto"` is dense up to `DENSE_LIMIT` logits. `backend="triton"` (or "auto" on CUDA
with triton installed) computes the row statistics with `spreadcon.kernels.triton_row_stats`.

Example:
    >>> z = torch.randn(128, 2, 64, requires_grad=True)   # 128 images, 2 views
    >>> y = torch.randint(0, 10, (128,))
    >>> loss = spread_loss(z, y, alpha=0.5, temperature=0.5)
    >>> loss.backward()
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import numbers
from dataclasses import dataclass, replace
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from spreadcon.losses_authors import NORMALIZE, authors_loss, check_clamp
from spreadcon.losses_core import MAX_UNSHIFTED_LOGIT, STATS, RowStats, compact_codes, no_autocast
from spreadcon.memory_bank import MemoryBank

TERMS = ("supcon", "simclr", "attract", "repel")

Anchors = Literal["all", "cross_view"]
Path = Literal["auto", "dense", "lean"]
Backend = Literal["auto", "triton", "torch"]
Variant = Literal["paper", "authors"]
PATHS, BACKENDS, VARIANTS = ("auto", "dense", "lean"), ("auto", "triton", "torch"), ("paper", "authors")

# An anchor contributes to a term only when the sets the term is built from are non-empty.
VALID_RULES = {
    "supcon": "|P(i)| > 0",
    "simclr": "|aug(i)| > 0",
    "attract": "|P(i)| > 0 and |N(i)| > 0",
    "repel": "|aug(i)| > 0",
}
DENSE_LIMIT = 2**26  # K * M logits above which path="auto" takes the lean path (256 MiB fp32)
BLOCK_ELEMENTS = 2**21  # default rows per block: BLOCK_ELEMENTS // M (8 MiB of fp32 logits)
NORM_EPS = 1e-12  # rows shorter than this are left unscaled (a zero row: bounded gradient)


# ----------------------------------------------------------------------------- input checks
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
    a = _number(alpha, "alpha", "in [0, 1]; 1 = L_attract, 0 = L_repel")
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (1 = L_attract, 0 = L_repel), got {alpha!r}")
    return a


def _check_choice(value, name: str, choices: tuple, what: str) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices} ({what}), got {value!r}")


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


def _check_ids_agree(labels: Tensor, ids: Tensor) -> None:
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


def make_options(*, temperature=0.5, normalize=True, anchors="all", path="auto", block_size=None,
                 backend="auto", memory=None) -> Options:
    """Checked Options. memory: a MemoryBank or None; the strings "auto" / "dense" / "lean" are
    accepted as the older name of `path` (config files written before the bank existed)."""
    if isinstance(memory, str):
        _check_choice(memory, "memory", PATHS, "a MemoryBank, None, or the older name of path=")
        path, memory = memory, None
    if memory is not None and not isinstance(memory, MemoryBank):
        raise ValueError(f"memory must be a spreadcon.losses.MemoryBank or None, got {type(memory).__name__}")
    _check_choice(anchors, "anchors", ("all", "cross_view"), "'all' = the paper, 'cross_view' = authors' anchors")
    _check_choice(path, "path", PATHS, "'lean' recomputes logits in backward, 'dense' keeps them")
    _check_choice(backend, "backend", BACKENDS, "'triton' needs spreadcon.kernels and CUDA")
    if block_size is not None and (isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1):
        raise ValueError(f"block_size must be a positive int (anchor rows per block) or None, got {block_size!r}")
    if normalize not in (True, False):
        raise ValueError(f"normalize must be True or False, got {normalize!r}")
    return Options(check_temperature(temperature), bool(normalize), anchors, path, block_size, backend, memory)


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
    return t.device.type == "cuda" and importlib.util.find_spec("triton") is not None


def row_stats(args: tuple, *, block: int, keep: bool, stabilize: bool, backend: str) -> Tensor:
    """[4, K] statistics of losses_core.RowStats, or of spreadcon.kernels.triton_row_stats when
    the backend asks. args = (q, k, q_codes, k_codes, self_col, n_pos, n_neg, need): the first
    eight arguments of RowStats.apply and all of triton_row_stats (same output, same autograd)."""
    if _triton_wanted(backend, args[0]):
        try:
            kernels = importlib.import_module("spreadcon.kernels")
            kernel = kernels.triton_row_stats
        except (ImportError, AttributeError) as err:
            if backend == "triton":
                raise ValueError(f"backend='triton' needs spreadcon.kernels.triton_row_stats and triton "
                                 f"({err}); install triton on a CUDA machine or pass backend='torch'") from err
        else:
            return kernel(*args)
    return RowStats.apply(*args, block, keep, stabilize)


# statistics of losses_core.RowStats each term needs
_NEEDS = {"supcon": {"all"}, "simclr": {"all"}, "attract": {"neg", "sp"}, "repel": {"pos"}}


class Pairing(NamedTuple):
    """Anchors q [K, D] against points k [M, D], with their labels and instance ids; self_col [K]:
    each anchor's row among the points (None when anchors are not points)."""

    q: Tensor
    k: Tensor
    q_labels: Tensor
    k_labels: Tensor
    q_ids: Tensor
    k_ids: Tensor
    self_col: Tensor | None


def _run_core(pairing: Pairing, terms, opts: Options, stabilize: bool) -> dict[str, tuple[Tensor, Tensor]]:
    """Per-anchor (value [K], valid [K]) of each term for anchors q [K, D] against points k [M, D].

    self_col [K]: each anchor's row among the points (None when anchors are not points).
    The parts linear in the logits (means over P(i) and aug(i)) come from per-class and
    per-instance sums of k (O(M D)); the rest from `row_stats`.
    """
    q, k, q_labels, k_labels, q_ids, k_ids, self_col = pairing
    K, M = q.shape[0], k.shape[0]
    qs = q / opts.temperature
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
    lean = opts.path == "lean" or (opts.path == "auto" and K * M > DENSE_LIMIT)
    block = opts.block_size or max(1, BLOCK_ELEMENTS // max(M, 1))
    with no_autocast(q.device):
        lse_all, lse_pos, lse_neg, sp = row_stats((qs, k, q_lab.int(), k_lab.int(), self_col, n_pos, n_neg, need),
                                                  block=block, keep=not lean, stabilize=stabilize,
                                                  backend=opts.backend)
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


def _parts(q, k, labels, ids, self_col, terms, *, opts, stabilize, ids_explicit: bool, q_rows=None):
    """Join the bank, check label/id agreement, run the core. q_rows: anchors' rows of k (or all)."""
    q_labels = labels if q_rows is None else labels.index_select(0, q_rows)
    q_ids = ids if q_rows is None else ids.index_select(0, q_rows)
    k, k_labels, k_ids = _with_bank(k, labels, ids, opts, ids_explicit)
    if ids_explicit and terms != ("simclr",):  # SimCLR reads no labels
        _check_ids_agree(k_labels, k_ids)
    return _run_core(Pairing(q, k, q_labels, k_labels, q_ids, k_ids, self_col), terms, opts, stabilize)


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
    return _flat_parts(features, labels, ids, terms, opts, anchor_index)


def _flat_parts(features, labels, ids, terms, opts: Options, anchor_index=None, *, ids_required: bool = True):
    _check_features(features, 2)
    M = features.shape[0]
    unknown = [t for t in terms if t not in TERMS]
    if unknown or not terms or not isinstance(terms, tuple):
        raise ValueError(f"terms must be a non-empty tuple of {TERMS}, got {terms!r}")
    _check_int_vector(labels, "labels", M, "one label per row")
    explicit = ids is not None
    if not explicit:
        uses = [t for t in terms if t in ("simclr", "repel")]
        if uses and ids_required:
            raise ValueError(f"{'/'.join(uses)} needs ids=[{M}] (instance ids: rows sharing an id are views "
                             f"of one image); pass ids, e.g. torch.arange(B).repeat_interleave(V)")
        ids = torch.arange(M, device=features.device)
    _check_int_vector(ids, "ids", M, "one instance id per row")
    if anchor_index is None:
        anchor_index = torch.arange(M, device=features.device)
    elif not isinstance(anchor_index, Tensor) or anchor_index.dtype != torch.long or anchor_index.ndim != 1:
        raise ValueError(f"anchor_index must be a 1-D torch.long tensor of row indices, got "
                         f"{getattr(anchor_index, 'dtype', type(anchor_index).__name__)} "
                         f"{tuple(getattr(anchor_index, 'shape', ()))} "
                         f"(for a boolean mask use mask.nonzero().squeeze(1))")
    z, stabilize = _embed(features, opts)
    return _parts(z.index_select(0, anchor_index), z, labels.long(), ids.long(), anchor_index, terms, opts=opts,
                  stabilize=stabilize, ids_explicit=explicit, q_rows=anchor_index)


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
def _batch_parts(features, labels, ids, terms, opts: Options):
    _check_features(features, 3)
    B, V, _ = features.shape
    if labels is None:  # SimCLR: labels are not read
        labels = torch.arange(B, device=features.device)
    _check_int_vector(labels, "labels", B, "one class label per image, features are [B, V, D]")
    explicit = ids is not None
    if explicit:
        _check_int_vector(ids, "ids", B, "one instance id per image, e.g. dataset indices")
    ids = ids.long() if explicit else torch.arange(B, device=features.device)
    labels = labels.long()
    z, stabilize = _embed(features, opts)
    if opts.anchors == "cross_view":
        if V != 2:
            raise ValueError(f"anchors='cross_view' needs exactly V = 2 views, got V = {V}; use anchors='all'")
        return _parts(z[:, 1], z[:, 0], labels, ids, None, terms, opts=opts, stabilize=stabilize,
                      ids_explicit=explicit)
    flat = z.reshape(B * V, -1)  # row b * V + v is view v of image b
    rows = torch.arange(B * V, device=features.device)
    return _parts(flat, flat, labels.repeat_interleave(V), ids.repeat_interleave(V), rows, terms, opts=opts,
                  stabilize=stabilize, ids_explicit=explicit)


def _authors(features, labels, *, alpha, temperature, clamp_positive, normalize, anchors, memory):
    """The released forward (losses_authors), with its own checks."""
    _check_features(features, 3)
    B, V, _ = features.shape
    if V != 2:
        raise ValueError(f"variant='authors' needs exactly V = 2 views (view-1 anchors, view-0 points), got V = {V}")
    _check_int_vector(labels, "labels", B, "one class label per image, features are [B, 2, D]")
    t = check_temperature(temperature)
    if normalize not in NORMALIZE:
        raise ValueError(f"normalize for variant='authors' must be True, False or 'released', got {normalize!r}")
    if memory is not None or anchors != "all":
        raise ValueError("variant='authors' fixes its own anchors (view 1 vs view 0) and takes no memory bank; "
                         "drop anchors= / memory=, or use variant='paper'")
    return authors_loss(features, labels.long(), alpha=alpha, temperature=t,
                        clamp_positive=check_clamp(clamp_positive, t), normalize=normalize)


def supcon_loss(features: Tensor, labels: Tensor, *, temperature: float = 0.5, normalize: bool = True,
                anchors: Anchors = "all", variant: Variant = "paper", clamp_positive: float | None = 1.0,
                ids: Tensor | None = None, memory: MemoryBank | None = None, path: Path = "auto",
                block_size: int | None = None, backend: Backend = "auto") -> Tensor:
    """L_SC, SupCon "outside" form (Khosla et al. 2020; paper Section 2). features [B, V, D], labels [B]
    -> scalar. temperature default 0.5 (the paper's; pml uses 0.1). variant="authors": the released
    code's "sup_con" (view 1 vs view 0, positive out of the denominator, clamp_positive)."""
    _check_choice(variant, "variant", VARIANTS, "'paper' = SPEC.md's L_SC, 'authors' = the released code")
    if variant == "authors":
        return _authors(features, labels, alpha=1.0, temperature=temperature, clamp_positive=clamp_positive,
                        normalize=normalize, anchors=anchors, memory=memory)
    opts = make_options(temperature=temperature, normalize=normalize, anchors=anchors, path=path,
                        block_size=block_size, backend=backend, memory=memory)
    return _combine(_batch_parts(features, labels, ids, ("supcon",), opts), {"supcon": 1.0}, False)


def simclr_loss(features: Tensor, labels: Tensor | None = None, *, temperature: float = 0.5,
                normalize: bool = True, anchors: Anchors = "all", ids: Tensor | None = None,
                memory: MemoryBank | None = None, path: Path = "auto", block_size: int | None = None,
                backend: Backend = "auto") -> Tensor:
    """L_SS, SimCLR / NT-Xent (Chen et al. 2020). features [B, V, D] -> scalar (0 when V = 1).
    labels are ignored (positives are the other views); temperature default 0.5 (pml: 0.07)."""
    if labels is not None and not isinstance(labels, Tensor):
        raise ValueError(f"simclr_loss takes hyperparameters by keyword (temperature=...), got labels={labels!r}")
    opts = make_options(temperature=temperature, normalize=normalize, anchors=anchors, path=path,
                        block_size=block_size, backend=backend, memory=memory)
    return _combine(_batch_parts(features, None, ids, ("simclr",), opts), {"simclr": 1.0}, False)


def attract_loss(features: Tensor, labels: Tensor, *, temperature: float = 0.5, normalize: bool = True,
                 anchors: Anchors = "all", ids: Tensor | None = None, memory: MemoryBank | None = None,
                 path: Path = "auto", block_size: int | None = None, backend: Backend = "auto") -> Tensor:
    """L_attract: each positive competes only with the negatives. [B, V, D], [B] -> scalar.
    temperature default 0.5 (the paper's)."""
    opts = make_options(temperature=temperature, normalize=normalize, anchors=anchors, path=path,
                        block_size=block_size, backend=backend, memory=memory)
    return _combine(_batch_parts(features, labels, ids, ("attract",), opts), {"attract": 1.0}, False)


def repel_loss(features: Tensor, labels: Tensor, *, temperature: float = 0.5, normalize: bool = True,
               anchors: Anchors = "all", ids: Tensor | None = None, memory: MemoryBank | None = None,
               path: Path = "auto", block_size: int | None = None, backend: Backend = "auto") -> Tensor:
    """L_repel: class-conditional InfoNCE, the other views against same-class points. -> scalar.
    temperature default 0.5 (the paper's)."""
    opts = make_options(temperature=temperature, normalize=normalize, anchors=anchors, path=path,
                        block_size=block_size, backend=backend, memory=memory)
    return _combine(_batch_parts(features, labels, ids, ("repel",), opts), {"repel": 1.0}, False)


def spread_loss(features: Tensor, labels: Tensor, *, alpha: float = 0.5, temperature: float = 0.5,
                normalize: bool = True, anchors: Anchors = "all", variant: Variant = "paper",
                clamp_positive: float | None = 1.0, ids: Tensor | None = None,
                memory: MemoryBank | None = None, path: Path = "auto", block_size: int | None = None,
                backend: Backend = "auto", return_terms: bool = False):
    """L_spread = alpha * L_attract + (1 - alpha) * L_repel (paper Eq. 1). [B, V, D], [B] -> scalar.

    alpha default 0.5, temperature default 0.5 (the paper's). return_terms=True returns
    (loss, {"attract": t, "repel": t}) with detached term means. variant="authors": the released
    code's l_spread (view 1 vs view 0, clamp_positive on L_attract's positives).
    """
    a = check_alpha(alpha)
    _check_choice(variant, "variant", VARIANTS, "'paper' = SPEC.md's L_spread, 'authors' = the released code")
    if variant == "authors":
        if return_terms:
            raise ValueError("return_terms is not available for variant='authors'")
        return _authors(features, labels, alpha=a, temperature=temperature, clamp_positive=clamp_positive,
                        normalize=normalize, anchors=anchors, memory=memory)
    opts = make_options(temperature=temperature, normalize=normalize, anchors=anchors, path=path,
                        block_size=block_size, backend=backend, memory=memory)
    parts = _batch_parts(features, labels, ids, ("attract", "repel"), opts)
    return _combine(parts, {"attract": a, "repel": 1.0 - a}, return_terms)


# ----------------------------------------------------------------------------- flat wrappers
def _flat(features, labels, ids, weights, kw, return_terms=False):
    anchor_index = kw.pop("anchor_index", None)
    opts = make_options(**kw)
    parts = _flat_parts(features, labels, ids, tuple(weights), opts, anchor_index)
    return _combine(parts, weights, return_terms)


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


# ----------------------------------------------------------------------------- modules
class _Loss(nn.Module):
    """Holds hyperparameters only. forward(features [B, V, D], labels [B]) or, as in
    pytorch-metric-learning, forward(embeddings [M, D], labels [M]) (each row its own instance
    unless ids=[M] says which rows are views of one image) -> scalar. temperature default 0.5.

    The distributed protocol (`spreadcon.distributed`): `term_weights` ({SPEC.md term: weight},
    None for the authors' variant) and `per_anchor(features [M, D], labels [M], ids [M],
    anchor_index=[K])` -> {term: (value [K], valid [K])}. gather_distributed=True (as in lightly):
    under torch.distributed, forward contrasts local anchors against the gathered global batch.
    """

    variant = "paper"
    terms: tuple[str, ...] = ()

    def __init__(self, temperature: float = 0.5, *, normalize=True, anchors: Anchors = "all",
                 path: Path = "auto", block_size: int | None = None, backend: Backend = "auto",
                 memory=None, gather_distributed: bool = False, variant: Variant | None = None,
                 clamp_positive: float | None = 1.0):
        super().__init__()
        variant = self.variant if variant is None else variant
        _check_choice(variant, "variant", VARIANTS, "'paper' or 'authors'")
        if variant == "authors" and not hasattr(type(self), "term_weights_authors"):
            raise ValueError(f"variant='authors' exists for SupConLoss and SpreadLoss only, not {type(self).__name__}")
        self.variant = variant
        if variant == "authors":
            t = check_temperature(temperature)
            if normalize not in NORMALIZE or anchors != "all" or memory is not None:
                raise ValueError("variant='authors' takes normalize in (True, False, 'released') and no "
                                 "anchors= / memory= (it fixes view 1 vs view 0)")
            self.clamp_positive = check_clamp(clamp_positive, t)
            self.options = Options(temperature=t, normalize=normalize)
        else:
            self.options = make_options(temperature=temperature, normalize=normalize, anchors=anchors, path=path,
                                        block_size=block_size, backend=backend, memory=memory)
        if not isinstance(gather_distributed, bool):
            raise ValueError(f"gather_distributed must be True or False, got {gather_distributed!r}")
        self.gather_distributed = gather_distributed

    # hyperparameters, read by the trainer and by older callers
    temperature = property(lambda self: self.options.temperature)
    normalize = property(lambda self: self.options.normalize)
    anchors = property(lambda self: self.options.anchors)
    path = property(lambda self: self.options.path)
    block_size = property(lambda self: self.options.block_size)
    backend = property(lambda self: self.options.backend)

    @property
    def term_weights(self) -> dict[str, float] | None:
        return None if self.variant == "authors" else {t: 1.0 for t in self.terms}

    def per_anchor(self, features: Tensor, labels: Tensor, ids: Tensor, *, anchor_index: Tensor | None = None):
        """Flat per-anchor terms of this loss (no memory bank): see `per_anchor_losses`."""
        if self.term_weights is None:
            raise ValueError(f"{type(self).__name__}(variant='authors') has no per-anchor form (single process only)")
        return _flat_parts(features, labels, ids, tuple(self.term_weights), replace(self.options, bank=None),
                           anchor_index)

    def _authors_forward(self, features, labels):
        return _authors(features, labels, alpha=self.term_weights_authors, temperature=self.temperature,
                        clamp_positive=self.clamp_positive, normalize=self.normalize, anchors="all", memory=None)

    def forward(self, features: Tensor, labels: Tensor | None = None, ids: Tensor | None = None, *,
                memory: MemoryBank | None = None, return_terms: bool = False):
        if self.gather_distributed:
            from spreadcon import distributed

            if distributed.get_world_size() > 1:
                if memory is not None or ids is not None:
                    raise ValueError("gather_distributed=True takes no memory= / ids= (the gathered batch is the bank)")
                return distributed.global_batch_forward(self, features, labels, return_terms=return_terms)
        if self.variant == "authors":
            if memory is not None or ids is not None or return_terms:
                raise ValueError("variant='authors' takes no ids= / memory= / return_terms")
            return self._authors_forward(features, labels)
        opts = self.options if memory is None else replace(self.options, bank=make_options(memory=memory).bank)
        if self.terms == ("simclr",) and isinstance(features, Tensor) and features.ndim == 2 and ids is None:
            ids = labels  # pml's NTXentLoss convention: labels are instance labels
        if isinstance(features, Tensor) and features.ndim == 2:
            if labels is None:
                labels = torch.arange(features.shape[0], device=features.device)
            parts = _flat_parts(features, labels, ids, self.terms, opts, None, ids_required=False)
        else:
            parts = _batch_parts(features, None if self.terms == ("simclr",) else labels, ids, self.terms, opts)
        return _combine(parts, self.term_weights, return_terms)

    def extra_repr(self) -> str:
        extra = f", variant='authors', clamp_positive={self.clamp_positive}" if self.variant == "authors" else ""
        return f"temperature={self.temperature}, normalize={self.normalize}, anchors={self.anchors!r}{extra}"


class SupConLoss(_Loss):
    """L_SC, SupCon's "outside" form (paper Section 2); temperature 0.5 by default.

    variant="authors": the released code's "sup_con". pml's SupConLoss defaults to 0.1. On pml's (embeddings [M, D], labels [M]) values and
    gradients equal pml's SupConLoss, except that pml returns 0 for a one-class batch where this
    is the paper's L_SC (log(M - 1) minus the mean positive similarity)."""

    terms = ("supcon",)
    term_weights_authors = 1.0


class SimCLRLoss(_Loss):
    """L_SS, SimCLR / NT-Xent; temperature 0.5 by default.

    pml's NTXentLoss defaults to 0.07. [B, V, D]:
    labels ignored; [M, D]: labels are instance labels (pml's NTXentLoss convention) unless ids=[M]
    is given; equal to pml's NTXentLoss with two views per instance (with more, pml averages
    over positive pairs and keeps the other positives out of each denominator)."""

    terms = ("simclr",)


class AttractLoss(_Loss):
    """L_attract: each positive competes only with the negatives (paper Eq. 2); temperature 0.5."""

    terms = ("attract",)


class RepelLoss(_Loss):
    """L_repel, class-conditional InfoNCE (paper Eq. 3); temperature 0.5 by default.

    On [M, D] input without ids every row is
    its own instance, so aug(i) is empty and the loss is 0: pass ids=[M]."""

    terms = ("repel",)


class SpreadLoss(_Loss):
    """L_spread = alpha * L_attract + (1 - alpha) * L_repel (paper Eq. 1); alpha, temperature 0.5.

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
