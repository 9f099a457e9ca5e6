"""Fused Triton kernels for the row statistics of `spreadcon.losses.core.RowStats` (FlashAttention-style).

The same four statistics per anchor i of q [K, D] against the points k [M, D] (S = q k^T):

    lse_all(i) = log sum_{a in B\\i} e^{S_ia}       lse_pos(i) = log sum_{p in P(i)} e^{S_ip}
    lse_neg(i) = log sum_{a in N(i)} e^{S_ia}       sp(i) = sum_{p in P(i)} softplus(lse_neg(i) - S_ip)

A program owns a tile of BLOCK_K anchors and streams tiles of BLOCK_M points past it: the
logits tile comes from `tl.dot`, the masks P / N and the self column are built in registers
from the label codes, and log-sum-exps are accumulated online (running maximum, as in
FlashAttention), so any temperature is stable and no K x M tensor ever exists in memory
(extra memory O((K + M) D)). `sp` needs the finished lse_neg, hence a second pass over the
points (only when "sp" is needed); it also sums sigmoid(lse_neg - S_ip) over P(i), which
backward needs as a per-row constant.

Backward recomputes the logits tile by tile. dq comes from anchor tiles streaming points and
dk from point tiles streaming anchors (two kernels, no atomics): each output tile is owned by
one program, so results are deterministic and no float32 atomic traffic contends on dk; the
price is computing the logits twice in backward (FlashAttention-2 makes the same trade for dk/dv).

Accumulation is float32 for float16 / bfloat16 / float32 inputs (float32 dots use IEEE
precision, not TF32, so the kernel agrees with the torch path to float32 rounding).

Why a kernel of our own: no library ships a fused SupCon / L_spread; the torch path
(`core.RowStats`) already avoids autograd graphs but still writes block x M logits to
memory several times per block.

The kernels are plain functions decorated with `triton.jit` on first use, so whether Triton's
CPU interpreter runs them (`TRITON_INTERPRET=1`) is decided when they are first launched in
that mode, not when this module is imported.
"""

from __future__ import annotations

import functools
import os
from types import SimpleNamespace

import torch
from torch import Tensor

from spreadcon.losses.core import STATS, neg_fill

try:  # Triton ships with CUDA builds of torch; everything here is optional without it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only on installs without Triton
    triton = None
    tl = None

# stands in for -inf inside the kernels: exp(MASKED - m) == 0 and MASKED - MASKED == 0, never NaN
MASKED = tl.constexpr(-1.0e30) if tl is not None else -1.0e30
GPU_BLOCK = 64  # anchors / points per tile on a GPU (D <= 256); tune with benchmarks/device_check.py
INTERPRET_BLOCK = 16  # tl.dot needs tiles of at least 16; small tiles keep the interpreter quick


# ----------------------------------------------------------------------------- kernels (tl code)
def _lse_kernel(q_ptr, k_ptr, qc_ptr, kc_ptr, self_ptr, out_ptr, K, M, D,
                HAS_SELF: tl.constexpr, SPLIT: tl.constexpr, BLOCK_K: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr):
    """Pass 1. out [2, K]: log-sum-exp of row i over P(i) and over N(i) (SPLIT) or B\\i (not)."""
    rows = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
    dims = tl.arange(0, BLOCK_D)
    row_ok = rows < K
    q = tl.load(q_ptr + rows[:, None] * D + dims[None, :], mask=row_ok[:, None] & (dims[None, :] < D), other=0.0)
    qc = tl.load(qc_ptr + rows, mask=row_ok, other=0)
    sc = tl.full([BLOCK_K], -1, tl.int32)
    if HAS_SELF:
        sc = tl.load(self_ptr + rows, mask=row_ok, other=-1)
    m_pos = tl.full([BLOCK_K], MASKED, tl.float32)
    l_pos = tl.zeros([BLOCK_K], tl.float32)
    m_neg = tl.full([BLOCK_K], MASKED, tl.float32)
    l_neg = tl.zeros([BLOCK_K], tl.float32)
    for start in range(0, M, BLOCK_M):
        cols = start + tl.arange(0, BLOCK_M)
        col_ok = cols < M
        k = tl.load(k_ptr + cols[:, None] * D + dims[None, :], mask=col_ok[:, None] & (dims[None, :] < D), other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION)  # [BLOCK_K, BLOCK_M] float32
        member = row_ok[:, None] & col_ok[None, :] & (cols[None, :] != sc[:, None])
        neg = member
        if SPLIT:
            kc = tl.load(kc_ptr + cols, mask=col_ok, other=0)
            same = qc[:, None] == kc[None, :]
            neg = member & (same == 0)
            pos = member & same
            m_new = tl.maximum(m_pos, tl.max(tl.where(pos, s, MASKED), 1))
            e = tl.exp(tl.where(pos, s - m_new[:, None], MASKED))
            l_pos = l_pos * tl.exp(m_pos - m_new) + tl.sum(e, 1)
            m_pos = m_new
        m_new = tl.maximum(m_neg, tl.max(tl.where(neg, s, MASKED), 1))
        e = tl.exp(tl.where(neg, s - m_new[:, None], MASKED))
        l_neg = l_neg * tl.exp(m_neg - m_new) + tl.sum(e, 1)
        m_neg = m_new
    lse_pos = tl.where(l_pos > 0, m_pos + tl.log(tl.maximum(l_pos, 1e-37)), MASKED)
    lse_neg = tl.where(l_neg > 0, m_neg + tl.log(tl.maximum(l_neg, 1e-37)), MASKED)
    tl.store(out_ptr + rows, lse_pos, mask=row_ok)
    tl.store(out_ptr + K + rows, lse_neg, mask=row_ok)


def _sp_kernel(q_ptr, k_ptr, qc_ptr, kc_ptr, self_ptr, lse_neg_ptr, out_ptr, K, M, D,
               HAS_SELF: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_M: tl.constexpr,
               BLOCK_D: tl.constexpr, PRECISION: tl.constexpr):
    """Pass 2. out [2, K]: sum over P(i) of softplus(lse_neg(i) - S_ip) and of its sigmoid."""
    rows = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
    dims = tl.arange(0, BLOCK_D)
    row_ok = rows < K
    q = tl.load(q_ptr + rows[:, None] * D + dims[None, :], mask=row_ok[:, None] & (dims[None, :] < D), other=0.0)
    qc = tl.load(qc_ptr + rows, mask=row_ok, other=0)
    sc = tl.full([BLOCK_K], -1, tl.int32)
    if HAS_SELF:
        sc = tl.load(self_ptr + rows, mask=row_ok, other=-1)
    lse_neg = tl.load(lse_neg_ptr + rows, mask=row_ok, other=0.0)
    sp = tl.zeros([BLOCK_K], tl.float32)
    sig = tl.zeros([BLOCK_K], tl.float32)
    for start in range(0, M, BLOCK_M):
        cols = start + tl.arange(0, BLOCK_M)
        col_ok = cols < M
        k = tl.load(k_ptr + cols[:, None] * D + dims[None, :], mask=col_ok[:, None] & (dims[None, :] < D), other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION)
        kc = tl.load(kc_ptr + cols, mask=col_ok, other=0)
        pos = row_ok[:, None] & col_ok[None, :] & (cols[None, :] != sc[:, None]) & (qc[:, None] == kc[None, :])
        x = tl.where(pos, lse_neg[:, None] - s, 0.0)
        u = tl.exp(-tl.abs(x))  # in (0, 1]: no overflow on either side
        w = 1.0 + u  # log1p(u) to full precision: log(w) * u / (w - 1), exact u where w rounds to 1
        log1p_u = tl.where(w == 1.0, u, tl.log(w) * u / tl.where(w == 1.0, 1.0, w - 1.0))
        sp += tl.sum(tl.where(pos, tl.maximum(x, 0.0) + log1p_u, 0.0), 1)
        sig += tl.sum(tl.where(pos, tl.where(x >= 0, 1.0, u) / w, 0.0), 1)
    tl.store(out_ptr + rows, sp, mask=row_ok)
    tl.store(out_ptr + K + rows, sig, mask=row_ok)


def _dq_kernel(q_ptr, k_ptr, qc_ptr, kc_ptr, self_ptr, row_ptr, dq_ptr, K, M, D,
               HAS_SELF: tl.constexpr, SPLIT: tl.constexpr, BLOCK_K: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr):
    """dq [K, D] = G k with G = dL/dS rebuilt tile by tile from the per-row constants row [5, K]."""
    rows = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
    dims = tl.arange(0, BLOCK_D)
    row_ok = rows < K
    q_mask = row_ok[:, None] & (dims[None, :] < D)
    q = tl.load(q_ptr + rows[:, None] * D + dims[None, :], mask=q_mask, other=0.0)
    qc = tl.load(qc_ptr + rows, mask=row_ok, other=0)
    sc = tl.full([BLOCK_K], -1, tl.int32)
    if HAS_SELF:
        sc = tl.load(self_ptr + rows, mask=row_ok, other=-1)
    lse_pos = tl.load(row_ptr + rows, mask=row_ok, other=0.0)[:, None]
    lse_neg = tl.load(row_ptr + K + rows, mask=row_ok, other=0.0)[:, None]
    w_pos = tl.load(row_ptr + 2 * K + rows, mask=row_ok, other=0.0)[:, None]
    w_neg = tl.load(row_ptr + 3 * K + rows, mask=row_ok, other=0.0)[:, None]
    g_sp = tl.load(row_ptr + 4 * K + rows, mask=row_ok, other=0.0)[:, None]
    acc = tl.zeros([BLOCK_K, BLOCK_D], tl.float32)
    for start in range(0, M, BLOCK_M):
        cols = start + tl.arange(0, BLOCK_M)
        col_ok = cols < M
        k = tl.load(k_ptr + cols[:, None] * D + dims[None, :], mask=col_ok[:, None] & (dims[None, :] < D), other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION)
        member = row_ok[:, None] & col_ok[None, :] & (cols[None, :] != sc[:, None])
        neg = member
        g = tl.zeros([BLOCK_K, BLOCK_M], tl.float32)
        if SPLIT:
            kc = tl.load(kc_ptr + cols, mask=col_ok, other=0)
            same = qc[:, None] == kc[None, :]
            neg = member & (same == 0)
            pos = member & same
            x = tl.where(pos, lse_neg - s, 0.0)  # d sp / dS_p = -sigmoid(lse_neg - S_p)
            u = tl.exp(-tl.abs(x))
            sig = tl.where(x >= 0, 1.0, u) / (1.0 + u)
            g = tl.where(pos, w_pos * tl.exp(tl.where(pos, s - lse_pos, MASKED)) - g_sp * sig, 0.0)
        g += w_neg * tl.exp(tl.where(neg, s - lse_neg, MASKED))
        acc += tl.dot(g.to(k.dtype), k, input_precision=PRECISION)
    tl.store(dq_ptr + rows[:, None] * D + dims[None, :], acc, mask=q_mask)


def _dk_kernel(q_ptr, k_ptr, qc_ptr, kc_ptr, self_ptr, row_ptr, dk_ptr, K, M, D,
               HAS_SELF: tl.constexpr, SPLIT: tl.constexpr, BLOCK_K: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr):
    """dk [M, D] = G^T q: a tile of points streams every anchor tile (no atomics)."""
    cols = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    col_ok = cols < M
    k_mask = col_ok[:, None] & (dims[None, :] < D)
    k = tl.load(k_ptr + cols[:, None] * D + dims[None, :], mask=k_mask, other=0.0)
    kc = tl.load(kc_ptr + cols, mask=col_ok, other=0)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start in range(0, K, BLOCK_K):
        rows = start + tl.arange(0, BLOCK_K)
        row_ok = rows < K
        q = tl.load(q_ptr + rows[:, None] * D + dims[None, :], mask=row_ok[:, None] & (dims[None, :] < D), other=0.0)
        sc = tl.full([BLOCK_K], -1, tl.int32)
        if HAS_SELF:
            sc = tl.load(self_ptr + rows, mask=row_ok, other=-1)
        lse_pos = tl.load(row_ptr + rows, mask=row_ok, other=0.0)[:, None]
        lse_neg = tl.load(row_ptr + K + rows, mask=row_ok, other=0.0)[:, None]
        w_pos = tl.load(row_ptr + 2 * K + rows, mask=row_ok, other=0.0)[:, None]
        w_neg = tl.load(row_ptr + 3 * K + rows, mask=row_ok, other=0.0)[:, None]
        g_sp = tl.load(row_ptr + 4 * K + rows, mask=row_ok, other=0.0)[:, None]
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION)  # [BLOCK_K, BLOCK_M]
        member = row_ok[:, None] & col_ok[None, :] & (cols[None, :] != sc[:, None])
        neg = member
        g = tl.zeros([BLOCK_K, BLOCK_M], tl.float32)
        if SPLIT:
            qc = tl.load(qc_ptr + rows, mask=row_ok, other=0)
            same = qc[:, None] == kc[None, :]
            neg = member & (same == 0)
            pos = member & same
            x = tl.where(pos, lse_neg - s, 0.0)
            u = tl.exp(-tl.abs(x))
            sig = tl.where(x >= 0, 1.0, u) / (1.0 + u)
            g = tl.where(pos, w_pos * tl.exp(tl.where(pos, s - lse_pos, MASKED)) - g_sp * sig, 0.0)
        g += w_neg * tl.exp(tl.where(neg, s - lse_neg, MASKED))
        acc += tl.dot(tl.trans(g.to(q.dtype)), q, input_precision=PRECISION)
    tl.store(dk_ptr + cols[:, None] * D + dims[None, :], acc, mask=k_mask)


@functools.lru_cache(maxsize=2)
def _kernels(interpret: bool) -> SimpleNamespace:
    """The kernels decorated for the current mode (the decorator reads TRITON_INTERPRET)."""
    del interpret  # the cache key: one set of kernels per mode
    return SimpleNamespace(lse=triton.jit(_lse_kernel), sp=triton.jit(_sp_kernel),
                           dq=triton.jit(_dq_kernel), dk=triton.jit(_dk_kernel))


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


# ----------------------------------------------------------------------------- host side
def _check(q, k, *, q_codes, k_codes, self_col, n_pos, n_neg, need) -> None:
    if triton is None:
        raise ValueError("triton_row_stats needs Triton (it ships with CUDA builds of torch); "
                         "use the torch path, spreadcon.losses.core.RowStats")
    if not (isinstance(q, Tensor) and isinstance(k, Tensor) and q.ndim == 2 and k.ndim == 2
            and q.shape[1] == k.shape[1]):
        raise ValueError(f"q and k must be tensors [K, D] and [M, D] with the same D, got "
                         f"{getattr(q, 'shape', q)} and {getattr(k, 'shape', k)}")
    if q.dtype not in (torch.float32, torch.float16, torch.bfloat16) or k.dtype != q.dtype:
        raise ValueError(f"q and k must share a dtype among float32, float16 and bfloat16, got {q.dtype} "
                         f"and {k.dtype} (float64: use spreadcon.losses.core.RowStats)")
    K, M = q.shape[0], k.shape[0]
    for name, t, n in (("q_codes", q_codes, K), ("k_codes", k_codes, M), ("n_pos", n_pos, K), ("n_neg", n_neg, K)):
        if not (isinstance(t, Tensor) and t.shape == (n,)):
            raise ValueError(f"{name} must be a tensor of shape [{n}], got {getattr(t, 'shape', t)}")
    if self_col is not None and not (isinstance(self_col, Tensor) and self_col.shape == (K,)):
        raise ValueError(f"self_col must be None or a long tensor [{K}], got {getattr(self_col, 'shape', self_col)}")
    if not need or any(s not in STATS for s in need):
        raise ValueError(f"need must be a non-empty tuple of {STATS}, got {need!r}")
    if q.device.type != "cuda" and not interpreting():
        raise ValueError(f"triton_row_stats runs on CUDA tensors, got device {q.device}; on the CPU use "
                         "spreadcon.losses.core.RowStats (or TRITON_INTERPRET=1 to test the kernels)")


def _launch_args(q, k, q_codes, k_codes, self_col, blocks):
    """Contiguous inputs, int32 codes, and the compile-time constants shared by every kernel."""
    q, k = q.contiguous(), k.contiguous()
    qc, kc = q_codes.to(torch.int32).contiguous(), k_codes.to(torch.int32).contiguous()
    sc = qc if self_col is None else self_col.to(torch.int32).contiguous()  # qc: an unread placeholder
    block = INTERPRET_BLOCK if interpreting() else GPU_BLOCK
    block_k, block_m = blocks[0] or block, blocks[1] or block
    const = dict(HAS_SELF=self_col is not None, BLOCK_K=block_k, BLOCK_M=block_m,
                 BLOCK_D=max(16, triton.next_power_of_2(q.shape[1])),
                 PRECISION="ieee" if q.dtype == torch.float32 else "tf32",  # tf32: the default for 16-bit
                 num_warps=4 if q.shape[1] <= 64 else 8)  # q, acc and k tiles of D = 128 spill with 4 warps
    return (q, k, qc, kc, sc), const


def _forward(tensors, const, n_pos, n_neg, need) -> tuple[Tensor, Tensor]:
    """stats [4, K] float32 (empty sets filled as core.RowStats does) and sum_P sigmoid [K]."""
    q, k = tensors[0], tensors[1]
    K, M, D = q.shape[0], k.shape[0], q.shape[1]
    split, fill = tuple(need) != ("all",), neg_fill(torch.float32)
    kern = _kernels(interpreting())
    lse = torch.empty(2, K, dtype=torch.float32, device=q.device)
    grid = (triton.cdiv(K, const["BLOCK_K"]),)
    kern.lse[grid](*tensors, lse, K, M, D, SPLIT=split, **const)
    stats = torch.zeros(4, K, dtype=torch.float32, device=q.device)
    sig = torch.zeros(K, dtype=torch.float32, device=q.device)
    if not split:  # the "neg" set of pass 1 was B\i
        stats[0] = torch.where(n_pos + n_neg > 0, lse[1], fill)
        return stats, sig
    stats[1] = torch.where(n_pos > 0, lse[0], fill)
    stats[2] = torch.where(n_neg > 0, lse[1], fill)
    stats[0] = torch.logaddexp(stats[1], stats[2])
    if "sp" in need:
        sp = torch.empty(2, K, dtype=torch.float32, device=q.device)
        kern.sp[grid](*tensors, stats[2].contiguous(), sp, K, M, D, **const)
        stats[3], sig = sp[0], sp[1]
    return stats, sig


def _row_constants(stats, sig, g, split: bool, need_sp: bool) -> Tensor:
    """[5, K]: lse_pos, lse_neg, w_pos, w_neg, g_sp with dL/dS = w_pos softmax-weight on P
    (e^{S - lse_pos}) - g_sp sigmoid(lse_neg - S) on P, and w_neg e^{S - lse_neg} on N."""
    lse_all, lse_pos, lse_neg, _ = stats
    g = g.float()
    g_all, g_pos, g_neg, g_sp = g
    if not split:  # one set, B\i, carried by the "neg" slots
        zero = torch.zeros_like(lse_all)
        return torch.stack([lse_all, lse_all, zero, g_all, zero])
    g_sp = g_sp if need_sp else torch.zeros_like(g_sp)
    w_pos = g_all * torch.exp(lse_pos - lse_all) + g_pos  # softmax_all = softmax_P e^{lse_P - lse_all}
    w_neg = g_all * torch.exp(lse_neg - lse_all) + g_neg + g_sp * sig  # d sp / d lse_neg = sum_P sigmoid
    return torch.stack([lse_pos, lse_neg, w_pos, w_neg, g_sp])


class TritonRowStats(torch.autograd.Function):
    """Autograd wrapper: forward = passes 1 (and 2); backward = the dq and dk kernels."""

    @staticmethod
    def forward(ctx, q, k, q_codes, k_codes, self_col, n_pos, n_neg, need, blocks):
        tensors, const = _launch_args(q, k, q_codes, k_codes, self_col, blocks)
        stats, sig = _forward(tensors, const, n_pos, n_neg, need)
        ctx.save_for_backward(*tensors, stats, sig)
        ctx.const, ctx.split, ctx.need_sp, ctx.has_self = const, tuple(need) != ("all",), "sp" in need, self_col is not None
        return stats

    @staticmethod
    def backward(ctx, g):
        q, k, qc, kc, sc, stats, sig = ctx.saved_tensors
        K, M, D = q.shape[0], k.shape[0], q.shape[1]
        rows = _row_constants(stats, sig, g, ctx.split, ctx.need_sp).contiguous()
        kern, const = _kernels(interpreting()), ctx.const
        dq = torch.empty(K, D, dtype=torch.float32, device=q.device)
        dk = torch.empty(M, D, dtype=torch.float32, device=q.device)
        kern.dq[(triton.cdiv(K, const["BLOCK_K"]),)](q, k, qc, kc, sc, rows, dq, K, M, D, SPLIT=ctx.split, **const)
        kern.dk[(triton.cdiv(M, const["BLOCK_M"]),)](q, k, qc, kc, sc, rows, dk, K, M, D, SPLIT=ctx.split, **const)
        return dq.to(q.dtype), dk.to(k.dtype), None, None, None, None, None, None, None


def triton_row_stats(q: Tensor, k: Tensor, q_codes: Tensor, k_codes: Tensor, self_col: Tensor | None,
                     n_pos: Tensor, n_neg: Tensor, need: tuple[str, ...], *,
                     block_k: int | None = None, block_m: int | None = None) -> Tensor:
    """Row statistics [4, K] float32 = (lse_all, lse_pos, lse_neg, sp), differentiable in q and k.

    The contract of `core.RowStats.apply(q, k, q_codes, k_codes, self_col, n_pos, n_neg,
    need, ...)`: q [K, D] (already divided by tau), k [M, D], both float32 / float16 / bfloat16 on
    CUDA (or any device under TRITON_INTERPRET=1); q_codes [K], k_codes [M] integer label codes;
    self_col [K] each anchor's column among the points, or None; n_pos, n_neg [K] the set sizes
    (an empty set's LSE is `core.neg_fill(float32)`); need: the statistics needed
    (("all",) alone skips the label masks; rows not computed are zeros). block_k / block_m:
    tile sizes (powers of two >= 16; default 64 on a GPU, 16 in the interpreter).
    Memory: O((K + M) D) besides the inputs; never a K x M tensor.
    """
    for name, b in (("block_k", block_k), ("block_m", block_m)):
        if b is not None and not (isinstance(b, int) and b >= 16 and b & (b - 1) == 0):
            raise ValueError(f"{name} must be a power of two >= 16 (tl.dot's smallest tile) or None, got {b!r}")
    _check(q, k, q_codes=q_codes, k_codes=k_codes, self_col=self_col, n_pos=n_pos, n_neg=n_neg, need=need)
    return TritonRowStats.apply(q, k, q_codes, k_codes, self_col, n_pos, n_neg, tuple(need), (block_k, block_m))
