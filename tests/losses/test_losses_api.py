"""The drop-in API: pml's call shapes, keyword-only hyperparameters, ids, the memory bank,
the GPU-kernel dispatch, and bad input for every new entry point."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spreadcon import losses as L
from spreadcon.losses import MemoryBank, kernels
from spreadcon.losses.core import RowStats


def batch(B, V, C, D=8, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, V, D, generator=g, dtype=dtype), torch.randint(0, C, (B,), generator=g)


def values_and_grads(fn, x):
    x = x.detach().clone().requires_grad_()
    out = fn(x)
    out.backward()
    return out.detach(), x.grad


# ------------------------------------------------------------------ pytorch-metric-learning
@pytest.mark.parametrize("M,C,tau", [(32, 4, 0.1), (40, 10, 0.07), (24, 24, 0.5), (30, 3, 1 / 30)])
def test_supcon_module_equals_pml_supcon_values_and_gradients(M, C, tau):
    """pml's SupConLoss(temperature) on (embeddings [M, D], labels [M]) vs our module on the
    same call; both are L_SC's "outside" form (rows with no positive are left out)."""
    from pytorch_metric_learning.losses import SupConLoss

    g = torch.Generator().manual_seed(M + C)
    emb = torch.randn(M, 16, generator=g, dtype=torch.float64)
    y = torch.randint(0, C, (M,), generator=g)
    ours = values_and_grads(lambda e: L.SupConLoss(temperature=tau)(e, y), emb)
    theirs = values_and_grads(lambda e: SupConLoss(temperature=tau)(e, y), emb)
    torch.testing.assert_close(ours[0], theirs[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ours[1], theirs[1], rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("B,tau", [(16, 0.07), (25, 0.5), (8, 0.1)])
def test_simclr_module_equals_pml_ntxent_with_instance_labels(B, tau):
    """NTXentLoss with instance labels and 2 views per instance is L_SS (one positive each)."""
    from pytorch_metric_learning.losses import NTXentLoss

    g = torch.Generator().manual_seed(B)
    emb = torch.randn(2 * B, 12, generator=g, dtype=torch.float64)
    inst = torch.arange(B).repeat(2)[torch.randperm(2 * B, generator=g)]  # any row order
    ours = values_and_grads(lambda e: L.SimCLRLoss(temperature=tau)(e, inst), emb)
    theirs = values_and_grads(lambda e: NTXentLoss(temperature=tau)(e, inst), emb)
    torch.testing.assert_close(ours[0], theirs[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ours[1], theirs[1], rtol=1e-8, atol=1e-12)
    # the [B, V, D] call gives the same value when rows are grouped by image
    order = torch.argsort(inst, stable=True)
    z3 = emb[order].reshape(B, 2, -1)
    torch.testing.assert_close(L.simclr_loss(z3, temperature=tau), ours[0], rtol=1e-12, atol=1e-12)


def test_where_pml_differs_one_class_batch():
    """pml returns 0 for a one-class batch (no negative pairs); ours is the paper's L_SC,
    log(M - 1) - mean similarity, documented in SupConLoss's docstring."""
    from pytorch_metric_learning.losses import SupConLoss

    emb = torch.ones(6, 4, dtype=torch.float64)
    y = torch.zeros(6, dtype=torch.long)
    assert float(SupConLoss(temperature=0.1)(emb, y)) == 0.0
    assert float(L.SupConLoss(temperature=0.1)(emb, y)) == pytest.approx(math.log(5), abs=1e-12)


def test_module_accepts_both_shapes_and_ids_group_rows():
    z, y = batch(10, 2, 3, seed=1)
    flat, labels = z.reshape(20, -1), y.repeat_interleave(2)
    ids = torch.arange(10).repeat_interleave(2)
    for name in ("supcon", "attract", "repel", "spread", "simclr"):
        module = L.LOSSES[name](temperature=0.3)
        want = module(z, y)
        got = module(flat, labels, ids=ids) if name != "simclr" else module(flat, ids)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # without ids every row is its own instance: L_repel has no aug(i), so it is 0
    assert float(L.RepelLoss()(flat, labels)) == 0.0


def test_hyperparameters_are_keyword_only():
    z, y = batch(6, 2, 2, seed=2)
    for fn in (L.supcon_loss, L.attract_loss, L.repel_loss, L.spread_loss):
        with pytest.raises(TypeError):
            fn(z, y, 0.1)
    with pytest.raises((TypeError, ValueError)):
        L.simclr_loss(z, 0.1)
    with pytest.raises(TypeError):
        L.spread_loss_flat(z[:, 0], y, torch.arange(6), 0.3)


def test_ids_needed_only_where_used_and_must_agree_with_labels():
    z, y = batch(8, 1, 3, seed=3)
    flat = z[:, 0]
    L.supcon_loss_flat(flat, y)
    L.attract_loss_flat(flat, y)
    L.per_anchor_losses(flat, y, terms=("supcon", "attract"))
    for fn in (lambda: L.repel_loss_flat(flat, y, None), lambda: L.spread_loss_flat(flat, y, None),
               lambda: L.per_anchor_losses(flat, y, terms=("repel",))):
        with pytest.raises(ValueError, match="needs ids"):
            fn()
    ids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    y_bad = torch.tensor([0, 1, 1, 1, 2, 2, 0, 0])  # id 0 has labels 0 and 1
    for fn in (lambda: L.spread_loss_flat(flat, y_bad, ids), lambda: L.supcon_loss_flat(flat, y_bad, ids),
               lambda: L.SupConLoss()(flat, y_bad, ids=ids),
               lambda: L.spread_loss(z.reshape(4, 2, -1), y_bad[::2], ids=torch.tensor([0, 0, 1, 2]))):
        with pytest.raises(ValueError, match="share a label"):
            fn()


@pytest.mark.parametrize("value", [np.float64(0.2), np.float32(0.2), torch.tensor(0.2), torch.tensor(0.2).double()])
def test_temperature_as_numpy_scalar_or_0d_tensor(value):
    z, y = batch(6, 2, 2, seed=4)
    want = L.supcon_loss(z, y, temperature=0.2)
    torch.testing.assert_close(L.supcon_loss(z, y, temperature=value), want, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(L.SupConLoss(temperature=value)(z, y), want, rtol=1e-6, atol=1e-7)


def test_zero_row_has_bounded_gradient():
    for dtype in (torch.float32, torch.float64):
        z, y = batch(8, 2, 3, seed=5, dtype=dtype)
        z[3, 1] = 0.0
        for name in ("supcon", "spread", "simclr"):
            zz = z.clone().requires_grad_()
            (L.simclr_loss(zz) if name == "simclr" else getattr(L, f"{name}_loss")(zz, y)).backward()
            assert torch.isfinite(zz.grad).all()
            assert float(zz.grad.abs().max()) < 10.0, (name, float(zz.grad.abs().max()))


# ------------------------------------------------------------------ the memory bank
def test_bank_fifo_detached_and_dimension_checked():
    bank = MemoryBank(size=5)
    z = torch.randn(2, 2, 3, requires_grad=True)
    bank.push(z * 1.0, torch.tensor([0, 1]))
    assert len(bank) == 4 and not bank.embeddings.requires_grad
    bank.push(torch.full((3, 3), 7.0), torch.tensor([2, 2, 2]), ids=torch.tensor([5, 6, 7]))
    assert len(bank) == 5  # the oldest row dropped out
    assert bank.labels.tolist() == [1, 1, 2, 2, 2] and bank.has_id.tolist() == [False, False, True, True, True]
    torch.testing.assert_close(bank.embeddings[0], z[1, 0].detach())
    with pytest.raises(ValueError, match="dimension 3"):
        bank.push(torch.randn(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="dimension 3"):
        L.supcon_loss(torch.randn(4, 2, 5), torch.arange(4), memory=bank)
    with pytest.raises(ValueError, match="size"):
        MemoryBank(size=0)
    with pytest.raises(ValueError, match="labels"):
        bank.push(torch.randn(2, 3), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="MemoryBank or None"):
        L.supcon_loss(torch.randn(4, 2, 3), torch.arange(4), memory=[1, 2])


def test_bank_to_device_moves_held_and_later_rows():
    """`.to(device)` as on a module: in place, returns the bank, later pushes land there too;
    a checkpoint's rows loaded later follow it (float64 rows keep their dtype)."""
    bank = MemoryBank(size=8)
    assert bank.to("cpu") is bank and bank.device == torch.device("cpu")
    bank.push(torch.randn(2, 2, 3, dtype=torch.float64), torch.tensor([0, 1]))
    assert bank.embeddings.device.type == "cpu" and bank.embeddings.dtype == torch.float64
    other = MemoryBank(size=8).to(torch.device("cpu"))
    other.load_state_dict(bank.state_dict())
    torch.testing.assert_close(other.embeddings, bank.embeddings)
    if torch.cuda.is_available():
        assert bank.to("cuda").embeddings.is_cuda and bank.labels.is_cuda
        bank.push(torch.randn(1, 3), torch.tensor([2]))  # CPU rows join the CUDA ones
        assert bank.embeddings.is_cuda and len(bank) == 5


def _reference_with_points(z, y, extra, extra_y, name, tau, alpha=0.5):
    """Dense float64 loss of anchors = all rows of z [B, V, D] against rows + extra points."""
    B, V, _ = z.shape
    u = torch.nn.functional.normalize(z, dim=-1).reshape(B * V, -1)
    e = torch.nn.functional.normalize(extra, dim=-1)
    k = torch.cat([u, e])
    qy, ky = y.repeat_interleave(V), torch.cat([y.repeat_interleave(V), extra_y])
    qi = torch.arange(B).repeat_interleave(V)
    ki = torch.cat([qi, -1 - torch.arange(e.shape[0])])  # bank rows: instances of their own
    S = u @ k.T / tau
    not_self = torch.ones_like(S, dtype=torch.bool)
    not_self[:, : B * V] &= ~torch.eye(B * V, dtype=torch.bool)
    P, N = (qy[:, None] == ky[None]) & not_self, qy[:, None] != ky[None]
    A = (qi[:, None] == ki[None]) & not_self
    lse = lambda m: torch.logsumexp(S.masked_fill(~m, float("-inf")), 1)  # noqa: E731
    mean = lambda m: (S * m).sum(1) / m.sum(1)  # noqa: E731
    terms = {"supcon": lse(not_self) - mean(P), "simclr": lse(not_self) - mean(A),
             "attract": ((torch.logaddexp(S, lse(N)[:, None]) - S) * P).sum(1) / P.sum(1),
             "repel": lse(P) - mean(A)}
    if name == "spread":
        return alpha * terms["attract"].mean() + (1 - alpha) * terms["repel"].mean()
    return terms[name].mean()


@pytest.mark.parametrize("name", ["supcon", "simclr", "attract", "repel", "spread"])
def test_bank_with_the_batch_own_detached_copy_is_exact(name):
    z, y = batch(9, 2, 3, seed=6)
    z[:, :, 0] += 2.0  # keep every class with negatives and positives
    y[:3] = torch.tensor([0, 1, 2])
    bank = MemoryBank(size=100)
    bank.push(z.detach(), y)
    zz = z.clone().requires_grad_()
    got = L.LOSSES[name](temperature=0.3)(zz, y, memory=bank)
    got.backward()
    ref_in = z.clone().requires_grad_()
    want = _reference_with_points(ref_in, y, ref_in.detach().reshape(18, -1), y.repeat_interleave(2), name, 0.3)
    want.backward()
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(zz.grad, ref_in.grad, rtol=1e-10, atol=1e-12)


def test_bank_closed_forms_on_identical_embeddings():
    """All rows equal: L_SC = log(2M - 1) with the batch's copy in the bank (M - 1 + M others);
    L_repel = mean log|P(i)| with |P(i)| = 2 n_c - 1; L_attract = mean log(1 + |N(i)|)."""
    B, V = 6, 2
    z = torch.ones(B, V, 4, dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1, 2])
    bank = MemoryBank(size=64)
    bank.push(z, y)
    M = B * V
    assert float(L.supcon_loss(z, y, memory=bank)) == pytest.approx(math.log(2 * M - 1), abs=1e-12)
    n_c = torch.tensor([(y == c).sum() * V for c in y.repeat_interleave(V)], dtype=torch.float64)
    assert float(L.repel_loss(z, y, memory=bank)) == pytest.approx(float(torch.log(2 * n_c - 1).mean()), abs=1e-12)
    assert float(L.attract_loss(z, y, memory=bank)) == pytest.approx(
        float(torch.log(1 + 2 * (M - n_c)).mean()), abs=1e-12)


def test_bank_ids_match_explicit_ids_only():
    """A bank row with an id joins aug(i) of the anchors with that id, when the call passes ids."""
    z, y = batch(6, 2, 2, seed=7)
    bank = MemoryBank(size=50)
    ids = torch.arange(100, 106)
    bank.push(z.detach(), y, ids=ids)
    with_ids = L.simclr_loss(z, ids=ids, memory=bank)
    without = L.simclr_loss(z, memory=bank)
    assert float(with_ids) != pytest.approx(float(without))
    # aug(i) = the other view and both bank copies: the mean over 3 positives
    flat = torch.nn.functional.normalize(z, dim=-1).reshape(12, -1)
    k = torch.cat([flat, flat])
    S = flat @ k.T / 0.5
    S[torch.arange(12), torch.arange(12)] = float("-inf")
    inst = torch.arange(6).repeat_interleave(2)
    A = inst[:, None] == torch.cat([inst, inst])[None]
    A[torch.arange(12), torch.arange(12)] = False
    want = (torch.logsumexp(S, 1) - (S.masked_fill(~A, 0)).sum(1) / 3).mean()
    torch.testing.assert_close(with_ids, want, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ the GPU-kernel hook
def test_triton_backend_dispatches_to_the_kernel_module(monkeypatch):
    calls = []

    def fake_row_stats(q, k, q_codes, k_codes, self_col, n_pos, n_neg, need):
        calls.append((tuple(q.shape), tuple(k.shape), need))
        return RowStats.apply(q, k, q_codes, k_codes, self_col, n_pos, n_neg, need, 4, True, False)

    monkeypatch.setattr(kernels, "triton_row_stats", fake_row_stats)
    monkeypatch.setattr(kernels, "available", lambda: True)
    z, y = batch(5, 2, 2, seed=8)
    got = L.spread_loss(z, y, backend="triton")
    assert calls == [((10, 8), (10, 8), ("pos", "neg", "sp"))]
    torch.testing.assert_close(got, L.spread_loss(z, y, backend="torch"), rtol=1e-12, atol=1e-12)
    L.spread_loss(z, y, backend="auto")  # CPU tensors: "auto" stays on torch
    assert len(calls) == 1


def test_triton_backend_without_the_kernel_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(kernels, "available", lambda: False)  # no triton
    z, y = batch(5, 2, 2, seed=8)
    with pytest.raises(ValueError, match="backend='triton' needs triton"):
        L.supcon_loss(z, y, backend="triton")
    L.supcon_loss(z, y, backend="auto")


# ------------------------------------------------------------------ bad input
z_ok, y_ok = batch(4, 2, 2, dtype=torch.float32)
BAD = [
    (lambda: L.supcon_loss(z_ok, y_ok, temperature=True), "temperature"),
    (lambda: L.supcon_loss(z_ok, y_ok, temperature=float("inf")), "finite"),
    (lambda: L.supcon_loss(z_ok, y_ok, temperature=float("nan")), "finite"),
    (lambda: L.supcon_loss(z_ok, y_ok, temperature=torch.tensor([0.1, 0.2])), "0-d"),
    (lambda: L.SupConLoss(temperature=np.nan), "finite"),
    (lambda: L.spread_loss(z_ok, y_ok, alpha=True), "alpha"),
    (lambda: L.supcon_loss(z_ok, y_ok, backend="cuda"), "backend"),
    (lambda: L.supcon_loss(z_ok, y_ok, variant="released"), "variant"),
    (lambda: L.supcon_loss(z_ok, y_ok, ids=torch.arange(3)), "ids must have shape \\[4\\]"),
    (lambda: L.supcon_loss(z_ok, y_ok, variant="authors", clamp_positive=0.0), "clamp_positive"),
    (lambda: L.supcon_loss(z_ok, y_ok, variant="authors", clamp_positive=2.5), "clamp_positive"),
    (lambda: L.spread_loss(z_ok, y_ok, variant="authors", temperature=0.1, clamp_positive=10.5), "clamp_positive"),
    (lambda: L.supcon_loss(torch.zeros(4, 3, 2), y_ok, variant="authors"), "V = 2"),
    (lambda: L.supcon_loss(z_ok, y_ok, variant="authors", normalize="yes"), "normalize"),
    (lambda: L.supcon_loss(z_ok, y_ok, variant="authors", memory=MemoryBank(4)), "memory"),
    (lambda: L.LOSSES["supcon-authors"](clamp_positive=-1), "clamp_positive"),
    (lambda: L.AttractLoss(variant="authors"), "SupConLoss and SpreadLoss"),
    (lambda: L.SupConLoss(gather_distributed="yes"), "gather_distributed"),
    (lambda: L.SupConLoss()(z_ok[:, 0], y_ok[:3]), "labels must have shape \\[4\\]"),
    (lambda: L.SupConLoss()(z_ok[:, 0], y_ok, ids=y_ok.float()), "integers"),
    (lambda: L.SupConLoss()(z_ok[None], y_ok), "shape"),
    (lambda: L.SupConLoss(normalize=2), "normalize"),
    (lambda: L.per_anchor_losses(z_ok[:, 0], y_ok, terms="supcon"), "terms"),
]


@pytest.mark.parametrize("fn,match", BAD)
def test_bad_input_raises_actionable_value_error(fn, match):
    with pytest.raises(ValueError, match=match):
        fn()
