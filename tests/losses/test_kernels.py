"""The fused Triton kernel (`spreadcon.losses.kernels.triton_row_stats`) against float64 oracles.

Values and gradients w.r.t. q and k are compared with `spreadcon.losses.core.RowStats` run in float64
(stabilised path) and, on one small batch, with a literal loop over the definitions.

Triton's CPU interpreter must be switched on (TRITON_INTERPRET=1) before `triton` is first
imported (its standard library is decorated at import), and a CUDA test run in the same
process needs the compiled mode. So every interpreter case runs in one spawned worker process
whose environment has TRITON_INTERPRET=1, whatever this process imported before; this file can
be run alone, in the whole suite, or next to the CUDA tests. The worker returns tensors, the
asserts and the oracles run here. GPU tests are marked `cuda` and skip without CUDA.
"""

from __future__ import annotations

import inspect
import math
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
import torch

from spreadcon import losses
from spreadcon.losses.core import RowStats, neg_fill

# every `need` that spreadcon.losses asks for (terms: supcon/simclr, repel, attract and mixes)
NEEDS = [("all",), ("pos",), ("neg", "sp"), ("pos", "neg", "sp"), ("all", "pos"), ("all", "neg", "sp"),
         ("all", "pos", "neg", "sp")]
TESTS = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------- batches, oracles
def make_batch(B: int, V: int, classes: int, D: int = 8, seed: int = 0, *, normalize: bool = True):
    """A flat batch of B images x V views (rows b * V + v): z [M, D] float64, labels [M]."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(B * V, D, generator=gen, dtype=torch.float64)
    if normalize:
        z = torch.nn.functional.normalize(z, dim=1)
    labels = torch.randint(0, classes, (B,), generator=gen).repeat_interleave(V)
    return z, labels


def set_sizes(q_labels, k_labels, self_col):
    """n_pos [K], n_neg [K] as spreadcon.losses counts them."""
    same = (q_labels[:, None] == k_labels[None, :]).sum(1)
    has_self = int(self_col is not None)
    return same - has_self, (k_labels.shape[0] - has_self) - (same - has_self)


def case(z, labels, need, tau, *, anchors=None, dtype=torch.float32, seed=1, blocks=(None, None)):
    """Inputs of one comparison: anchors (default: every row, with a self column) against all rows."""
    rows = torch.arange(z.shape[0]) if anchors is None else anchors
    self_col = rows if anchors is None else None
    q_labels = labels[rows]
    n_pos, n_neg = set_sizes(q_labels, labels, self_col)
    weights = torch.randn(4, rows.shape[0], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return dict(q=z[rows] / tau, k=z, q_codes=q_labels, k_codes=labels, self_col=self_col, n_pos=n_pos,
                n_neg=n_neg, need=need, weights=weights, dtype=dtype, blocks=blocks)


def oracle(c):
    """RowStats in float64 (shifted, numerically safest path): stats [4, K], dq, dk of sum(w * stats)."""
    q, k = c["q"].clone().requires_grad_(), c["k"].clone().requires_grad_()
    stats = RowStats.apply(q, k, c["q_codes"], c["k_codes"], c["self_col"], c["n_pos"], c["n_neg"], c["need"],
                           5, True, True)
    (stats * c["weights"]).sum().backward()
    stats = stats.detach()  # an empty set is neg_fill of the dtype: float32's for the kernel
    return torch.where(stats == neg_fill(stats.dtype), neg_fill(torch.float32), stats), q.grad, k.grad


def run_kernel(c):
    """Runs in the interpreter worker: the kernel's stats [4, K] and gradients, as float64."""
    from spreadcon.losses.kernels import triton_row_stats

    q = c["q"].to(c["dtype"]).requires_grad_()
    k = c["k"].to(c["dtype"]).requires_grad_()
    stats = triton_row_stats(q, k, c["q_codes"], c["k_codes"], c["self_col"], c["n_pos"], c["n_neg"], c["need"],
                             block_k=c["blocks"][0], block_m=c["blocks"][1])
    (stats * c["weights"].float()).sum().backward()
    return stats.detach().double(), q.grad.double(), k.grad.double(), str(stats.dtype), str(q.grad.dtype)


def _worker_init() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def interpreter():
    """submit(fn, *args) -> result, run in a fresh process under TRITON_INTERPRET=1."""
    env_keys = ("TRITON_INTERPRET", "PYTHONPATH", "OMP_NUM_THREADS")
    saved = {key: os.environ.get(key) for key in env_keys}
    src = str(TESTS.parent / "src")
    os.environ.update(TRITON_INTERPRET="1", OMP_NUM_THREADS="1",
                      PYTHONPATH=os.pathsep.join([str(TESTS), src, *sys.path]))
    try:  # spawn copies os.environ when the worker starts, so the worker must start here
        pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init)
        pool.submit(int, 0).result()
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    yield lambda fn, *args: pool.submit(fn, *args).result()
    pool.shutdown()


def compare(interpreter, c, *, rtol=1e-5, atol=1e-4, grad_atol=1e-4):
    ref_stats, ref_dq, ref_dk = oracle(c)
    stats, dq, dk, stats_dtype, grad_dtype = interpreter(run_kernel, c)
    assert stats_dtype == "torch.float32" and grad_dtype == str(c["dtype"])
    assert torch.isfinite(stats).all() and torch.isfinite(dq).all() and torch.isfinite(dk).all()
    torch.testing.assert_close(stats, ref_stats, rtol=rtol, atol=atol)
    scale = max(1.0, float(ref_dq.abs().max()), float(ref_dk.abs().max()))
    torch.testing.assert_close(dq, ref_dq, rtol=rtol, atol=grad_atol * scale)
    torch.testing.assert_close(dk, ref_dk, rtol=rtol, atol=grad_atol * scale)
    return stats


# ----------------------------------------------------------------------------- interpreter tests
@pytest.mark.parametrize("need", NEEDS, ids="+".join)
@pytest.mark.parametrize("V", [1, 2, 3])
def test_matches_float64_rowstats_for_every_need_and_view_count(interpreter, need, V):
    z, labels = make_batch(B=13, V=V, classes=3, seed=V)
    compare(interpreter, case(z, labels, need, tau=0.5))


def test_matches_a_literal_loop_over_the_definitions(interpreter):
    z, labels = make_batch(B=5, V=2, classes=2, D=4, seed=3)
    c = case(z, labels, ("all", "pos", "neg", "sp"), tau=0.2)
    stats = interpreter(run_kernel, c)[0]
    S, M = c["q"] @ z.T, z.shape[0]
    for i in range(M):
        P = [p for p in range(M) if p != i and labels[p] == labels[i]]
        N = [a for a in range(M) if labels[a] != labels[i]]
        lse_neg = math.log(sum(math.exp(S[i, a]) for a in N))
        expected = [math.log(sum(math.exp(S[i, a]) for a in range(M) if a != i)),
                    math.log(sum(math.exp(S[i, p]) for p in P)), lse_neg,
                    sum(math.log1p(math.exp(lse_neg - S[i, p])) for p in P)]
        assert stats[:, i].tolist() == pytest.approx(expected, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("need", [("all",), ("pos", "neg", "sp")], ids="+".join)
def test_one_class_batch_has_empty_negatives_filled_and_finite_gradients(interpreter, need):
    z, _ = make_batch(B=9, V=2, classes=1, seed=4)
    stats = compare(interpreter, case(z, torch.zeros(18, dtype=torch.long), need, tau=0.3))
    if "neg" in need:
        assert (stats[2] == neg_fill(torch.float32)).all() and (stats[3] == 0).all()


def test_all_distinct_labels_have_empty_positives_when_v_is_one(interpreter):
    z, _ = make_batch(B=20, V=1, classes=1, seed=5)
    stats = compare(interpreter, case(z, torch.arange(20), ("all", "pos", "neg", "sp"), tau=0.5))
    assert (stats[1] == neg_fill(torch.float32)).all() and (stats[3] == 0).all()


@pytest.mark.parametrize("V", [1, 2, 3])
def test_single_image_batch(interpreter, V):
    z, labels = make_batch(B=1, V=V, classes=1, seed=6)
    for need in (("all",), ("pos", "neg", "sp")):
        stats = compare(interpreter, case(z, labels, need, tau=0.5))
        if V == 1:  # the anchor's only point is itself: every set is empty
            assert (stats[0] == neg_fill(torch.float32)).all()


@pytest.mark.parametrize("need", [("all",), ("all", "pos", "neg", "sp")], ids="+".join)
def test_anchors_that_are_not_points_have_no_self_column(interpreter, need):
    z, labels = make_batch(B=21, V=2, classes=4, seed=7)
    compare(interpreter, case(z, labels, need, tau=0.5, anchors=torch.arange(1, 42, 2)))


@pytest.mark.parametrize("tau", [0.01, 0.005])
def test_low_temperature_is_stable(interpreter, tau):
    """Logits up to 1/tau = 200: e^S overflows float32, the running maximum keeps it finite."""
    z, labels = make_batch(B=12, V=2, classes=3, seed=8)
    compare(interpreter, case(z, labels, ("all", "pos", "neg", "sp"), tau=tau), rtol=1e-5, atol=1e-3)
    compare(interpreter, case(z, labels, ("all",), tau=tau), rtol=1e-5, atol=1e-3)


def test_unnormalised_features_and_ragged_tiles(interpreter):
    """D not a power of two, K and M not multiples of the tiles, tiles of different sizes."""
    z, labels = make_batch(B=23, V=2, classes=5, D=20, seed=9, normalize=False)
    compare(interpreter, case(z, labels, ("all", "pos", "neg", "sp"), tau=0.7, blocks=(16, 32)),
            atol=1e-3, grad_atol=2e-5)
    compare(interpreter, case(z, labels, ("all",), tau=0.7, blocks=(32, 16)), atol=1e-3, grad_atol=2e-5)


def test_wide_embeddings_take_the_eight_warp_launch(interpreter):
    """D = 128 (the benchmarks' width, launched with 8 warps on a GPU)."""
    z, labels = make_batch(B=10, V=2, classes=3, D=128, seed=13)
    compare(interpreter, case(z, labels, ("all", "pos", "neg", "sp"), tau=0.1))


# Triton 3.8's interpreter computes bfloat16 tl.dot wrongly (numpy has no bfloat16: the bits
# are multiplied as integers); bfloat16 is covered by the CUDA test below.
@pytest.mark.parametrize("dtype", [torch.float16], ids=str)
def test_half_precision_inputs_accumulate_in_float32(interpreter, dtype):
    """16-bit q and k (rounded first, so the oracle sees the same inputs), float32 statistics."""
    z, labels = make_batch(B=16, V=2, classes=3, seed=10)
    c = case(z, labels, ("all", "pos", "neg", "sp"), tau=0.5, dtype=dtype)
    c["q"], c["k"] = c["q"].to(dtype).double(), c["k"].to(dtype).double()
    # values: only float32 rounding; gradients: the kernel multiplies dL/dS, cast to 16 bits, by k
    tol = 1e-2 if dtype == torch.bfloat16 else 2e-3
    compare(interpreter, c, rtol=tol, atol=1e-4, grad_atol=tol)


# ----------------------------------------------------------------------------- losses, end to end
def _loss_with_backend(features, labels, backend):
    """Runs in the worker: L_spread and its gradient through spreadcon.losses."""
    from spreadcon import losses as worker_losses

    z = features.clone().requires_grad_()
    loss = worker_losses.spread_loss(z, labels, alpha=0.3, temperature=0.2, backend=backend)
    loss.backward()
    return loss.detach().double(), z.grad.double()


@pytest.mark.skipif("backend" not in inspect.signature(losses.spread_loss).parameters,
                    reason="spreadcon.losses has no backend= keyword yet (added by the losses work)")
def test_loss_level_triton_backend_matches_torch_backend(interpreter):
    """LOSS-LEVEL (runs once `backend=` exists): backend="triton" equals backend="torch"."""
    features, labels = make_batch(B=24, V=2, classes=4, seed=11)
    features = features.reshape(24, 2, -1).float()
    labels = labels[::2]
    loss_t, grad_t = interpreter(_loss_with_backend, features, labels, "triton")
    loss_r, grad_r = _loss_with_backend(features, labels, "torch")
    torch.testing.assert_close(loss_t, loss_r, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_t, grad_r, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- bad input (no launch)
def _cpu_args(**override):
    q = torch.randn(6, 4)
    codes = torch.zeros(6, dtype=torch.long)
    args = dict(q=q, k=q, q_codes=codes, k_codes=codes, self_col=torch.arange(6), n_pos=codes, n_neg=codes,
                need=("all",))
    args.update(override)
    return args


@pytest.mark.parametrize("override, match", [
    (dict(q=torch.randn(6, 4, dtype=torch.float64)), "float64: use spreadcon.losses.core.RowStats"),
    (dict(k=torch.randn(6, 5)), "same D"),
    (dict(need=("all", "max")), "need must be"),
    (dict(n_pos=torch.zeros(5)), r"n_pos must be a tensor of shape \[6\]"),
    (dict(self_col=torch.arange(5)), "self_col must be None"),
])
def test_bad_input_is_a_value_error_naming_the_argument(override, match):
    from spreadcon.losses.kernels import triton_row_stats

    with pytest.raises(ValueError, match=match):
        triton_row_stats(**_cpu_args(**override))


def test_cpu_tensors_outside_the_interpreter_are_refused_with_a_hint(monkeypatch):
    from spreadcon.losses.kernels import triton_row_stats

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="on the CPU use spreadcon.losses.core.RowStats"):
        triton_row_stats(**_cpu_args())


def test_bad_block_size_is_a_value_error():
    from spreadcon.losses.kernels import triton_row_stats

    with pytest.raises(ValueError, match="block_k must be a power of two"):
        triton_row_stats(**_cpu_args(), block_k=24)  # checked before the device


# ----------------------------------------------------------------------------- CUDA (device check)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _cuda_case(n: int, V: int, need, dtype, tau=0.1):
    z, labels = make_batch(B=n, V=V, classes=10, D=128, seed=12)
    c = case(z.cuda(), labels.cuda(), need, tau=tau, dtype=dtype)
    c["weights"] = c["weights"].cuda()
    return c


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("need", [("all",), ("pos", "neg", "sp"), ("all", "pos")], ids="+".join)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_cuda_kernel_matches_float64_rowstats(need, dtype):
    c = _cuda_case(1000, 2, need, dtype)
    if dtype != torch.float32:
        c["q"], c["k"] = c["q"].to(dtype).double(), c["k"].to(dtype).double()
    ref_stats, ref_dq, ref_dk = oracle(c)
    stats, dq, dk, _, _ = run_kernel(c)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(stats, ref_stats, rtol=tol, atol=tol * 10)
    scale = max(float(ref_dq.abs().max()), float(ref_dk.abs().max()))
    torch.testing.assert_close(dq, ref_dq, rtol=tol, atol=tol * scale)
    torch.testing.assert_close(dk, ref_dk, rtol=tol, atol=tol * scale)


@pytest.mark.cuda
@cuda
def test_cuda_kernel_memory_is_linear_in_the_batch():
    """M = 32768 rows: a K x M float32 logits matrix would be 4 GiB; the kernel stays O(M D)."""
    from spreadcon.losses.kernels import triton_row_stats

    c = _cuda_case(16384, 2, ("pos", "neg", "sp"), torch.float32)
    q, k = c["q"].float().requires_grad_(), c["k"].float().requires_grad_()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    stats = triton_row_stats(q, k, c["q_codes"], c["k_codes"], c["self_col"], c["n_pos"], c["n_neg"], c["need"])
    stats.sum().backward()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    assert extra < 64 * q.numel() * 4, f"extra memory {extra / 2**20:.0f} MiB is not O(M D)"
