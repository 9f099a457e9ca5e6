"""The masked InfoNCE core behind every loss in `spreadcon.losses`.

Every SPEC.md term splits into parts linear in the logits S = q k^T (q already divided by tau),
such as the mean of S over P(i) or aug(i), which `spreadcon.losses.functional` computes from
per-class / per-instance sums of k in O(M D), and four row statistics that need the K x M logits:

    lse_all(i) = log sum_{a in B\\i} e^{S_ia}       lse_pos(i) = log sum_{p in P(i)} e^{S_ip}
    lse_neg(i) = log sum_{a in N(i)} e^{S_ia}       sp(i) = sum_{p in P(i)} softplus(lse_neg(i) - S_ip)

`RowStats` computes them block by block over anchor rows, with a closed-form backward:
d lse_X / dS = softmax over X; d sp / dS = -sigmoid(lse_neg - S_p) on P and
(sum_p sigmoid(lse_neg - S_p)) * softmax_N on N. No autograd graph of K x M intermediates is
stored. With `keep=True` (dense path) each block is kept for backward; with `keep=False`
(memory-lean path) it is recomputed there, so extra memory is O(block * M), not O(K * M).

Numerics. Fast path: for unit vectors and 1/tau <= 30, e^S and every ratio of its row sums
are normal float32 numbers, so E = e^S is used unshifted (sigmoid and softplus become ratios and
log1p of E). Otherwise (`stabilize=True`: no normalisation or a smaller tau) each set is
shifted by its own maximum.
An empty set has LSE = NEG_FILL (a large negative finite number) and every division by a set
sum is guarded, so no inf or NaN reaches values or gradients; `spreadcon.losses` leaves
anchors with empty sets out of its means.

P(i) comes from label codes (same code, self excluded), or, when a caller gives positives
directly (SupContrast's `mask=`, multi-hot labels), from a dense 0/1 matrix `pos` [K, M]; that
case takes the masked path (not the label-sorted one, not the Triton kernel).
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

STATS = ("all", "pos", "neg", "sp")
MAX_UNSHIFTED_LOGIT = 30.0  # e^{+-30} and ratios of sums of them stay normal float32 numbers
SOFTPLUS_THRESHOLD = 40.0  # softplus(x) = x above it, exact to 4e-18 relative
PACK_ROWS = 128  # rows a label-sorted block collects from small classes before it is closed
SORT_ROWS_ON_CPU = True  # the label-sorted path (CPU only: it reads class ranges on the host)


def neg_fill(dtype: torch.dtype) -> float:
    """A large negative finite number standing in for log(0) (the LSE of an empty set)."""
    return torch.finfo(dtype).min / 4


def no_autocast(device: torch.device):
    """Context that turns autocast off on `device`, so logits stay in the inputs' float dtype."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def compact_codes(values: Tensor) -> Tensor:
    """Map integer values [n] to codes in [0, n) (equal values, equal codes) without a host sync."""
    sorted_values, order = torch.sort(values)
    new = torch.ones_like(sorted_values, dtype=torch.long)
    new[0] = 0
    new[1:] = (sorted_values[1:] != sorted_values[:-1]).long()
    return torch.empty_like(order).scatter_(0, order, new.cumsum(0))


def _lse(s: Tensor, shift: Tensor | None, count: Tensor) -> Tensor:
    """log of a row sum s of e^{S - shift}; NEG_FILL where the set is empty."""
    out = torch.log(s.clamp_min(torch.finfo(s.dtype).tiny))
    if shift is not None:
        out = out + shift
    return torch.where(count > 0, out, neg_fill(s.dtype))


def _guarded(num: Tensor, den: Tensor, count: Tensor) -> Tensor:
    """num / den where the set is non-empty, else 0 (never inf * 0)."""
    return torch.where(count > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), 0.0)


class _Block:
    """Logits of anchor rows `rows` against all points, and their positive mask (float)."""

    def __init__(self, src: tuple, rows: slice, split: bool, kept=None):
        q, k, q_codes, k_codes, self_col, pos = src  # RowStats's first five arguments and pos
        self.S = q[rows] @ k.T if kept is None else kept  # [b, M]
        self.self_col = None if self_col is None else self_col[rows, None]  # [b, 1]
        self.pos = None  # [b, M] 1.0 on P(i) (same label or given by `pos`, self excluded), else 0.0
        if split and pos is not None:
            self.pos = self.drop_self(pos[rows].to(self.S.dtype, copy=True))
        elif split:
            self.pos = self.drop_self((q_codes[rows, None] == k_codes[None, :]).to(self.S.dtype))

    def drop_self(self, X: Tensor, value: float = 0.0) -> Tensor:
        return X if self.self_col is None else X.scatter_(1, self.self_col, value)


def _no_split(lse_all: Tensor) -> Tensor:
    zero = torch.zeros_like(lse_all)
    return torch.stack([lse_all, zero, zero, zero])


# ---- fast path: unit vectors, |S| <= 30: blk.S is turned into E = e^S in place (and kept so)
def _forward_fast(blk: _Block, n_pos, n_neg, need_sp: bool) -> Tensor:
    E = blk.S.exp_()  # the self entry stays in E; it is masked out of every sum
    if blk.pos is None:
        s_all = blk.drop_self(E).sum(1)
        return _no_split(_lse(s_all, None, n_pos + n_neg))
    T = E * blk.pos
    s_pos = T.sum(1)
    s_neg = blk.drop_self(torch.sub(E, T, out=T)).sum(1)  # T: E on N(i)
    lse_pos, lse_neg = _lse(s_pos, None, n_pos), _lse(s_neg, None, n_neg)
    sp = torch.zeros_like(s_pos)
    if need_sp:  # softplus(lse_neg - S_p) = log1p(s_neg / e^{S_p})
        sp = torch.div(s_neg[:, None], E, out=T).log1p_().mul_(blk.pos).sum(1)
    return torch.stack([torch.logaddexp(lse_pos, lse_neg), lse_pos, lse_neg, sp])


def _grad_fast(blk: _Block, stats, g, n_pos, n_neg, need_sp: bool) -> Tensor:
    E = blk.S  # e^S, overwritten by the gradient
    lse_all, lse_pos, lse_neg, _ = stats
    g_all, g_pos, g_neg, g_sp = g
    if blk.pos is None:  # softmax over B\i
        return blk.drop_self(E.mul_(_guarded(g_all, torch.exp(lse_all), n_pos + n_neg)[:, None]))
    s_pos, s_neg = torch.exp(lse_pos), torch.exp(lse_neg)
    R = None
    if need_sp:  # sigmoid(lse_neg - S_p) = s_neg / (e^{S_p} + s_neg)
        R = torch.add(E, s_neg[:, None]).reciprocal_().mul_(blk.pos)
        g_neg = g_neg + g_sp * s_neg * R.sum(1)
    # softmax_all = softmax_P e^{lse_P - lse_all} on P and softmax_N e^{lse_N - lse_all} on N
    a = _guarded(g_all * torch.exp(lse_pos - lse_all) + g_pos, s_pos, n_pos)  # per unit e^S on P
    b = _guarded(g_all * torch.exp(lse_neg - lse_all) + g_neg, s_neg, n_neg)  # per unit e^S on N
    # where(), not pos * (a - b) + b: on P(i) that sum cancels when |b| >> |a| (issue 12)
    G = E.mul_(torch.where(blk.pos.bool(), a[:, None], b[:, None]))
    if R is not None:
        G.sub_(R.mul_((g_sp * s_neg)[:, None]))
    return blk.drop_self(G)


# ---- stabilised path: any logit range; each set shifted by its own maximum
def _forward_shifted(blk: _Block, n_pos, n_neg, need_sp: bool) -> Tensor:
    S, fill = blk.S, neg_fill(blk.S.dtype)
    if blk.pos is None:
        m = blk.drop_self(S.clone(), fill).amax(1)
        return _no_split(_lse(blk.drop_self(torch.exp(S - m[:, None])).sum(1), m, n_pos + n_neg))
    pos = blk.pos.bool()
    m_pos = torch.where(pos, S, fill).amax(1)
    m_neg = blk.drop_self(torch.where(pos, fill, S), fill).amax(1)
    E = blk.drop_self(torch.exp(S - torch.where(pos, m_pos[:, None], m_neg[:, None])))
    T = E * blk.pos
    lse_pos = _lse(T.sum(1), m_pos, n_pos)
    lse_neg = _lse(E.sub_(T).sum(1), m_neg, n_neg)
    sp = torch.zeros_like(lse_pos)
    if need_sp:
        # threshold 40, not the default 20: softplus(x) - x = log1p(e^-x) is 2e-9 at x = 20,
        # above float64's resolution; at 40 it is 4e-18 (e^40 is still a finite float32)
        sp = torch.nn.functional.softplus(lse_neg[:, None] - S, threshold=SOFTPLUS_THRESHOLD).mul_(blk.pos).sum(1)
    return torch.stack([torch.logaddexp(lse_pos, lse_neg), lse_pos, lse_neg, sp])


def _grad_shifted(blk: _Block, stats, g, n_pos, n_neg, need_sp: bool) -> Tensor:
    S = blk.S
    lse_all, lse_pos, lse_neg, _ = stats
    g_all, g_pos, g_neg, g_sp = g
    if blk.pos is None:  # softmax over B\i; the self entry may overflow and is zeroed
        return blk.drop_self(torch.exp(S - lse_all[:, None]).mul_(g_all[:, None]))
    pos = blk.pos.bool()
    sig = None
    if need_sp:
        sig = torch.sigmoid(lse_neg[:, None] - S).mul_(blk.pos)
        g_neg = g_neg + g_sp * sig.sum(1)
    w_pos = g_all * torch.exp(lse_pos - lse_all) + g_pos
    w_neg = g_all * torch.exp(lse_neg - lse_all) + g_neg
    G = torch.exp(S - torch.where(pos, lse_pos[:, None], lse_neg[:, None]))  # <= 1 off self
    G = blk.drop_self(G.mul_(torch.where(pos, w_pos[:, None], w_neg[:, None])))
    if sig is not None:
        G.sub_(sig.mul_(g_sp[:, None]))
    return G


# ---- sorted path (CPU, fast numerics, label split): rows and columns sorted by label code, so
# the positives of a row are one contiguous column range and every P(i)-only term (the softplus
# over positives, the positive mask, sigmoid weights) runs on a b x (hi - lo) sub-block, about
# 1/C of the b x M block for C balanced classes, instead of masking all of it.
class _Sorted:
    """q, k, codes, self columns and set sizes permuted by label code; lo / hi: each sorted
    row's positive column range (host ints: used on CPU only, where reading them is free)."""

    def __init__(self, q, k, q_codes, k_codes, self_col, sets: tuple[Tensor, Tensor]):
        n_pos, n_neg = sets
        self.pq, self.pk = torch.argsort(q_codes, stable=True), torch.argsort(k_codes, stable=True)
        self.q, self.k = q[self.pq], k[self.pk]
        self.qc, self.kc = q_codes[self.pq].contiguous(), k_codes[self.pk].contiguous()
        self.self_col = None
        if self_col is not None:
            inv = torch.empty_like(self.pk)
            inv[self.pk] = torch.arange(self.pk.shape[0], device=self.pk.device)
            self.self_col = inv[self_col[self.pq]]
        self.lo = torch.searchsorted(self.kc, self.qc).tolist()
        self.hi = torch.searchsorted(self.kc, self.qc, right=True).tolist()
        self.n_pos, self.n_neg = n_pos[self.pq], n_neg[self.pq]

    def blocks(self, block: int) -> list[slice]:
        """Row blocks of at most `block` rows that end at class boundaries: a block spanning
        classes c..c' has positive columns over all of them (P-work b x width), so a class starts
        a new block once the current one has PACK_ROWS rows (small classes are packed up to that,
        for GEMM efficiency), and classes larger than `block` are cut into chunks."""
        counts = torch.unique_consecutive(self.qc, return_counts=True)[1].tolist()
        out, start, end = [], 0, 0
        for n in counts:
            if end > start and (end - start >= PACK_ROWS or end - start + n > block):  # close before it
                out.append(slice(start, end))
                start = end
            end += n
            while end - start > block:  # a class larger than a block: full chunks
                out.append(slice(start, start + block))
                start += block
        if end > start:
            out.append(slice(start, end))
        return out

    def block(self, rows: slice, kept=None):
        """(E = e^S with self entries 0 [b, M], positive mask [b, hi - lo] bool, lo, hi)."""
        last = min(rows.stop, self.q.shape[0]) - 1
        lo, hi = self.lo[rows.start], self.hi[last]
        E = kept
        if E is None:
            E = (self.q[rows] @ self.k.T).exp_()
        pos = self.qc[rows, None] == self.kc[None, lo:hi]
        if self.self_col is not None and kept is None:
            sc = self.self_col[rows, None]
            E.scatter_(1, sc, 0.0)  # the self entry leaves every sum and gets no gradient
        if self.self_col is not None:
            pos.scatter_(1, self.self_col[rows, None] - lo, False)
        return E, pos, lo, hi


def _forward_sorted(blk: tuple, n_pos, n_neg, need_sp: bool) -> Tensor:
    E, pos, lo, hi = blk
    Es = E[:, lo:hi]
    s_pos = Es.masked_fill(~pos, 0.0).sum(1)
    # a sum of positive terms on each side of the range (not total - s_pos, which cancels)
    s_neg = E[:, :lo].sum(1) + E[:, hi:].sum(1) + Es.masked_fill(pos, 0.0).sum(1)
    lse_pos, lse_neg = _lse(s_pos, None, n_pos), _lse(s_neg, None, n_neg)
    sp = torch.zeros_like(s_pos)
    if need_sp:  # softplus(lse_neg - S_p) = log1p(s_neg / e^{S_p}) on P(i) only
        sp = torch.where(pos, torch.div(s_neg[:, None], Es).log1p_(), 0.0).sum(1)
    return torch.stack([torch.logaddexp(lse_pos, lse_neg), lse_pos, lse_neg, sp])


def _grad_sorted(blk: tuple, stats, g, n_pos, n_neg, need_sp: bool) -> Tensor:
    E, pos, lo, hi = blk
    lse_all, lse_pos, lse_neg, _ = stats
    g_all, g_pos, g_neg, g_sp = g
    s_pos, s_neg = torch.exp(lse_pos), torch.exp(lse_neg)
    Es = E[:, lo:hi].clone()
    R = None
    if need_sp:  # sigmoid(lse_neg - S_p) / s_neg = 1 / (e^{S_p} + s_neg) on P(i)
        R = torch.where(pos, torch.add(Es, s_neg[:, None]).reciprocal_(), 0.0)
        g_neg = g_neg + g_sp * s_neg * R.sum(1)
    a = _guarded(g_all * torch.exp(lse_pos - lse_all) + g_pos, s_pos, n_pos)  # per unit e^S on P
    b = _guarded(g_all * torch.exp(lse_neg - lse_all) + g_neg, s_neg, n_neg)  # per unit e^S on N
    G = E.mul_(b[:, None])  # N(i) everywhere; the self entry is 0
    Gs = torch.where(pos, Es.mul_(a[:, None]), G[:, lo:hi])
    if R is not None:
        Gs.sub_(R.mul_((g_sp * s_neg)[:, None]))
    G[:, lo:hi] = Gs
    return G


def _sorted_forward(ctx, args: tuple, *, need_sp: bool, block: int, keep: bool):
    """RowStats.forward on the sorted path; args = (q, k, q_codes, k_codes, self_col, n_pos, n_neg)."""
    q = args[0]
    srt = _Sorted(*args[:5], args[5:7])
    stats_s, kept = q.new_empty(4, q.shape[0]), []
    ctx.blocks = srt.blocks(block)
    for rows in ctx.blocks:
        blk = srt.block(rows)
        stats_s[:, rows] = _forward_sorted(blk, srt.n_pos[rows], srt.n_neg[rows], need_sp)
        if keep:
            kept.append(blk[0])
    stats = torch.empty_like(stats_s)
    stats[:, srt.pq] = stats_s
    ctx.srt, ctx.kept, ctx.need_sp = srt, kept, need_sp
    ctx.save_for_backward(stats_s)
    return stats


def _sorted_backward(ctx, g):
    (stats_s,) = ctx.saved_tensors
    srt = ctx.srt
    g_s = g[:, srt.pq]
    dq_s, dk_s = torch.zeros_like(srt.q), torch.zeros_like(srt.k)
    for n, rows in enumerate(ctx.blocks):
        blk = srt.block(rows, ctx.kept[n] if ctx.kept else None)
        G = _grad_sorted(blk, stats_s[:, rows], g_s[:, rows], srt.n_pos[rows], srt.n_neg[rows], ctx.need_sp)
        torch.mm(G, srt.k, out=dq_s[rows])
        dk_s.addmm_(G.T, srt.q[rows])
    dq, dk = torch.empty_like(dq_s), torch.empty_like(dk_s)
    dq[srt.pq], dk[srt.pk] = dq_s, dk_s
    ctx.kept = None  # overwritten by the gradient: a second backward recomputes
    return dq, dk


class RowStats(torch.autograd.Function):
    """Row statistics [4, K] = (lse_all, lse_pos, lse_neg, sp) of anchors q against points k.

    q [K, D] (already divided by tau), k [M, D], q_codes [K] / k_codes [M] int label codes,
    self_col [K] long column of each anchor among the points (None: anchors are not points),
    n_pos / n_neg [K] set sizes, need: the statistics needed (("all",) alone skips the masks),
    block: anchor rows per block, keep: keep blocks for backward (dense) or recompute (lean),
    stabilize: shift by per-set maxima (needed unless unit vectors and 1/tau <= 30),
    pos: None (P(i) from the codes) or a 0/1 matrix [K, M] of positives (the codes are then unread).
    Rows of statistics that are not needed are zeros (lse_all is always computed).
    """

    @staticmethod
    def forward(ctx, q, k, q_codes, k_codes, self_col, n_pos, n_neg, need, block, keep, stabilize, pos=None):
        split, need_sp = tuple(need) != ("all",), "sp" in need
        ctx.sorted = SORT_ROWS_ON_CPU and split and not stabilize and q.device.type == "cpu" and pos is None
        if ctx.sorted:
            with no_autocast(q.device):
                return _sorted_forward(ctx, (q, k, q_codes, k_codes, self_col, n_pos, n_neg), need_sp=need_sp,
                                       block=block, keep=keep)
        forward_block = _forward_shifted if stabilize else _forward_fast
        stats, kept = q.new_empty(4, q.shape[0]), []  # one buffer: no small allocations pinning the heap
        with no_autocast(q.device):
            for r in range(0, q.shape[0], block):
                rows = slice(r, r + block)
                blk = _Block((q, k, q_codes, k_codes, self_col, pos), rows, split)
                stats[:, rows] = forward_block(blk, n_pos[rows], n_neg[rows], need_sp)
                if keep:
                    kept.append(blk.S)  # logits, or e^S on the fast path
        ctx.save_for_backward(q, k, q_codes, k_codes, self_col, n_pos, n_neg, stats, pos)
        ctx.kept, ctx.block, ctx.split, ctx.need_sp, ctx.stabilize = kept, block, split, need_sp, stabilize
        return stats

    @staticmethod
    def backward(ctx, g):
        if ctx.sorted:
            with no_autocast(g.device):
                return (*_sorted_backward(ctx, g), *[None] * 10)
        q, k, q_codes, k_codes, self_col, n_pos, n_neg, stats, pos = ctx.saved_tensors
        grad_block = _grad_shifted if ctx.stabilize else _grad_fast
        dq, dk = torch.zeros_like(q), torch.zeros_like(k)
        with no_autocast(q.device):
            for n, r in enumerate(range(0, q.shape[0], ctx.block)):
                rows = slice(r, r + ctx.block)
                blk = _Block((q, k, q_codes, k_codes, self_col, pos), rows, ctx.split,
                             ctx.kept[n] if ctx.kept else None)
                if not ctx.kept and not ctx.stabilize:
                    blk.S.exp_()  # recomputed logits -> e^S, as the fast forward keeps them
                G = grad_block(blk, stats[:, rows], g[:, rows], n_pos[rows], n_neg[rows], ctx.need_sp)
                torch.mm(G, k, out=dq[rows])
                dk.addmm_(G.T, q[rows])
        ctx.kept = None
        return dq, dk, *[None] * 10
