"""spreadcon.losses against literal loop transcriptions of SPEC.md, pml, closed forms, properties."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spreadcon import losses as L
from spreadcon.losses import functional

# ------------------------------------------------------------------ the loop oracle
# Literal float64 transcription of the SPEC.md equations, one anchor and one point at a time;
# features [B, V, D], labels [B]; the mean over valid anchors (empty P(i) / aug(i) / N(i) for
# L_attract -> left out; 0.0 when none is valid). cross_view: view-1 anchors vs view-0 points.


def _points(features, labels, normalize, cross_view):
    z = features.detach().double()
    if normalize:
        z = torch.nn.functional.normalize(z, dim=-1)
    B, V, _ = z.shape
    pts = [(z[b, v], int(labels[b]), b) for b in range(B) for v in range(V)]
    if cross_view:
        anchors = [(z[b, 1], int(labels[b]), b) for b in range(B)]
        return anchors, [(z[b, 0], int(labels[b]), b) for b in range(B)], False
    return pts, pts, True


def _mean(vals):
    return sum(vals) / len(vals) if vals else 0.0


def oracle(name, features, labels, temperature=0.5, alpha=0.5, normalize=True, cross_view=False):
    if labels is None:
        labels = torch.arange(features.shape[0])
    anchors, points, same_set = _points(features, labels, normalize, cross_view)

    def s(a, b):
        return float(a @ b) / temperature

    out = {"supcon": [], "simclr": [], "attract": [], "repel": []}
    for i, (zi, yi, bi) in enumerate(anchors):
        others = [p for j, p in enumerate(points) if not (same_set and j == i)]
        P = [p for p in others if p[1] == yi]
        N = [p for p in others if p[1] != yi]
        aug = [p for p in others if p[2] == bi]
        denom_all = sum(math.exp(s(zi, a[0])) for a in others)
        if P:
            out["supcon"].append(-sum(math.log(math.exp(s(zi, p[0])) / denom_all) for p in P) / len(P))
        if aug:
            out["simclr"].append(-sum(math.log(math.exp(s(zi, a[0])) / denom_all) for a in aug) / len(aug))
        if P and N:
            neg = sum(math.exp(s(zi, a[0])) for a in N)
            out["attract"].append(-sum(math.log(math.exp(s(zi, p[0])) / (math.exp(s(zi, p[0])) + neg))
                                       for p in P) / len(P))
        if aug:
            denom_p = sum(math.exp(s(zi, p[0])) for p in P)
            out["repel"].append(-sum(math.log(math.exp(s(zi, a[0])) / denom_p) for a in aug) / len(aug))
    if name == "spread":
        return alpha * _mean(out["attract"]) + (1 - alpha) * _mean(out["repel"])
    return _mean(out[name])


NAMES = ["supcon", "simclr", "attract", "repel", "spread"]


def call(name, z, y, **kw):
    if name == "simclr":
        return L.simclr_loss(z, **kw)
    return getattr(L, f"{name}_loss")(z, y, **kw)


def batch(B, V, C, D=5, seed=0, dtype=torch.float64, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, V, D, generator=g, dtype=dtype) * scale
    return z, torch.randint(0, C, (B,), generator=g)


SHAPES = [  # (B, V, C): V in 1..3, singleton classes, one class, many classes, B = 1
    (1, 1, 1), (1, 2, 1), (1, 3, 1), (2, 1, 2), (4, 1, 2), (5, 2, 1), (6, 2, 2), (7, 2, 7),
    (8, 2, 100), (9, 3, 3), (10, 3, 50), (12, 2, 4), (16, 1, 3), (13, 3, 13),
]


# ------------------------------------------------------------------ oracle agreement (float64)
@pytest.mark.parametrize("B,V,C", SHAPES)
def test_matches_loop_oracle(B, V, C):
    z, y = batch(B, V, C, seed=B * 31 + V * 7 + C)
    for name in NAMES:
        for kw in ({"path": "dense"}, {"path": "lean", "block_size": 3}):
            for temperature in (0.5, 0.1):
                got = call(name, z, y, temperature=temperature, **kw)
                want = oracle(name, z, y if name != "simclr" else None, temperature=temperature)
                assert got.dtype == torch.float64
                assert float(got) == pytest.approx(want, rel=1e-10, abs=1e-10), (name, kw, temperature)


@pytest.mark.parametrize("temperature,normalize,scale", [(0.02, True, 1.0), (0.5, False, 1.5), (0.1, False, 0.7)])
def test_stabilised_path_matches_oracle(temperature, normalize, scale):
    """1/tau > 40 or unnormalised features take the per-set-max path; same equations."""
    for B, V, C in [(6, 2, 2), (9, 3, 4), (5, 1, 2), (4, 2, 4)]:
        z, y = batch(B, V, C, seed=B + C, scale=scale)
        for name in NAMES:
            got = call(name, z, y, temperature=temperature, normalize=normalize, path="lean", block_size=4)
            want = oracle(name, z, y if name != "simclr" else None, temperature=temperature, normalize=normalize)
            assert float(got) == pytest.approx(want, rel=1e-9, abs=1e-9), (name, B, V, C)


@pytest.mark.parametrize("B,C", [(5, 2), (8, 3), (6, 6), (4, 1)])
def test_cross_view_matches_oracle(B, C):
    z, y = batch(B, 2, C, seed=B * C)
    for name in NAMES:
        got = call(name, z, y, anchors="cross_view")
        want = oracle(name, z, y if name != "simclr" else None, cross_view=True)
        assert float(got) == pytest.approx(want, rel=1e-10, abs=1e-10), name


def test_spread_alpha_mixes_oracle_terms():
    z, y = batch(10, 2, 3, seed=3)
    for alpha in (0.0, 0.16, 0.5, 1.0):
        got = L.spread_loss(z, y, alpha=alpha, temperature=0.3)
        assert float(got) == pytest.approx(oracle("spread", z, y, temperature=0.3, alpha=alpha), rel=1e-10)


# ------------------------------------------------------------------ the flat entry point
def test_flat_equals_batched_and_anchor_subsets_partition():
    z, y = batch(9, 3, 3, seed=5)
    flat, labels, ids = z.reshape(27, -1), y.repeat_interleave(3), torch.arange(9).repeat_interleave(3)
    for name in NAMES:
        if name == "simclr":
            got = L.simclr_loss_flat(flat, ids)
        else:
            got = getattr(L, f"{name}_loss_flat")(flat, labels, ids)
        assert float(got) == pytest.approx(float(call(name, z, y)), rel=1e-12)
    # Anchors split across "processes": per-anchor values are those of the full batch.
    full = L.per_anchor_losses(flat, labels, ids, ("supcon", "simclr", "attract", "repel"))
    perm = torch.randperm(27, generator=torch.Generator().manual_seed(0))
    for part in perm.split(10):
        sub = L.per_anchor_losses(flat, labels, ids, ("supcon", "simclr", "attract", "repel"), anchor_index=part)
        for term, (value, valid) in sub.items():
            torch.testing.assert_close(value, full[term][0][part], rtol=1e-12, atol=1e-12)
            assert torch.equal(valid, full[term][1][part])


def test_flat_gradient_flows_to_non_anchor_rows():
    z, y = batch(6, 2, 2, seed=1)
    flat = z.reshape(12, -1).requires_grad_()
    labels, ids = y.repeat_interleave(2), torch.arange(6).repeat_interleave(2)
    L.spread_loss_flat(flat, labels, ids, anchor_index=torch.tensor([0, 5])).backward()
    assert torch.isfinite(flat.grad).all() and (flat.grad[1:5].abs().sum(1) > 0).all()


# ------------------------------------------------------------------ pytorch-metric-learning
def test_supcon_matches_pml_supcon():
    """pml's SupConLoss is the same "outside" form: log-softmax over all other points, mean over
    positives, mean over anchors that have a positive (its AvgNonZeroReducer drops the rest)."""
    from pytorch_metric_learning.losses import SupConLoss

    for B, C, tau in [(16, 4, 0.5), (33, 10, 0.1), (20, 20, 0.3)]:
        z, y = batch(B, 2, C, D=8, seed=B)
        pml = SupConLoss(temperature=tau)(z.reshape(2 * B, -1), y.repeat_interleave(2))
        assert float(L.supcon_loss(z, y, temperature=tau)) == pytest.approx(float(pml), rel=1e-6)


def test_simclr_and_attract_match_pml_ntxent_where_they_coincide():
    """pml's NTXentLoss puts one positive pair against the anchor's negatives and averages over
    all positive pairs. With instance labels and V = 2 that is L_SS (the only positive is aug(i)).
    With class labels it is L_attract when every anchor has the same |P(i)| (balanced classes):
    L_attract averages per anchor first. With V > 2 or unbalanced classes they differ."""
    from pytorch_metric_learning.losses import NTXentLoss

    z, y = batch(12, 2, 3, D=8, seed=2)
    flat = z.reshape(24, -1)
    ntxent = NTXentLoss(temperature=0.5)
    pml_ss = ntxent(flat, torch.arange(12).repeat_interleave(2))
    assert float(L.simclr_loss(z, temperature=0.5)) == pytest.approx(float(pml_ss), rel=1e-6)
    balanced = torch.arange(12) % 3  # 4 images x 2 views per class: |P(i)| = 7 for all
    pml_att = ntxent(flat, balanced.repeat_interleave(2))
    assert float(L.attract_loss(z, balanced, temperature=0.5)) == pytest.approx(float(pml_att), rel=1e-6)


# ------------------------------------------------------------------ closed forms
@pytest.mark.parametrize("B", [1, 2, 5, 64])
def test_identical_embeddings_closed_forms(B):
    z = torch.ones(B, 2, 4, dtype=torch.float64)
    y = torch.arange(B) % 2
    assert float(L.supcon_loss(z, y)) == pytest.approx(math.log(2 * B - 1), abs=1e-12)
    assert float(L.simclr_loss(z)) == pytest.approx(math.log(2 * B - 1), abs=1e-12)
    if B >= 2:
        # L_attract(i) = log(1 + |N(i)|), L_repel(i) = log |P(i)|, averaged over anchors
        n_pos = torch.tensor([(y == c).sum() * 2 - 1 for c in y.repeat_interleave(2)], dtype=torch.float64)
        assert float(L.attract_loss(z, y)) == pytest.approx(float(torch.log(2 * B - n_pos).mean()), abs=1e-12)
        assert float(L.repel_loss(z, y)) == pytest.approx(float(torch.log(n_pos).mean()), abs=1e-12)


# ------------------------------------------------------------------ properties
@settings(max_examples=25, deadline=None)
@given(B=st.integers(1, 9), V=st.integers(1, 3), C=st.integers(1, 5), seed=st.integers(0, 10**6))
def test_properties(B, V, C, seed):
    z, y = batch(B, V, C, seed=seed)
    perm = torch.randperm(B, generator=torch.Generator().manual_seed(seed))
    scale = torch.rand(B, V, 1, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64) * 5 + 0.1
    for name in NAMES:
        base = call(name, z, y)
        assert torch.isfinite(base)
        torch.testing.assert_close(call(name, z[perm], y[perm]), base, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(call(name, z * scale, y), base, rtol=1e-10, atol=1e-12)
        relabelled = y * 7 - 3  # only equality of labels matters
        torch.testing.assert_close(call(name, z, relabelled), base, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(L.spread_loss(z, y, alpha=1.0), L.attract_loss(z, y))
    torch.testing.assert_close(L.spread_loss(z, y, alpha=0.0), L.repel_loss(z, y))


def test_return_terms_are_the_separate_losses():
    z, y = batch(10, 2, 3, seed=4)
    z.requires_grad_()
    loss, terms = L.spread_loss(z, y, alpha=0.3, return_terms=True)
    assert set(terms) == {"attract", "repel"} and not terms["attract"].requires_grad
    torch.testing.assert_close(terms["attract"], L.attract_loss(z, y).detach())
    torch.testing.assert_close(terms["repel"], L.repel_loss(z, y).detach())
    torch.testing.assert_close(loss, 0.3 * terms["attract"] + 0.7 * terms["repel"])


# ------------------------------------------------------------------ gradients
@pytest.mark.parametrize("path", ["dense", "lean"])
@pytest.mark.parametrize("temperature,normalize", [(0.5, True), (0.02, True), (0.5, False)])
def test_gradcheck(path, temperature, normalize):
    z, y = batch(5, 2, 2, D=3, seed=7)
    z.requires_grad_()
    for name in NAMES:
        fn = lambda z: call(name, z, y, temperature=temperature, normalize=normalize,  # noqa: E731
                            path=path, block_size=3)
        assert torch.autograd.gradcheck(fn, (z,)), name
    z3, y3 = batch(3, 3, 2, D=3, seed=8)
    z3.requires_grad_()
    assert torch.autograd.gradcheck(lambda z: L.spread_loss(z, y3, path=path), (z3,))
    assert torch.autograd.gradcheck(lambda z: L.supcon_loss(z, y, anchors="cross_view"), (z,))


EDGES = [(1, 1, 1), (1, 2, 1), (2, 1, 1), (6, 2, 1), (6, 2, 6), (6, 1, 6), (6, 3, 1), (3, 1, 2)]


@pytest.mark.parametrize("B,V,C", EDGES)
@pytest.mark.parametrize("path", ["dense", "lean"])
def test_edge_batches_finite_values_and_gradients(B, V, C, path):
    """One class, all labels distinct, V = 1, B = 1: finite values, finite gradients, backward works."""
    z, _ = batch(B, V, 1, seed=B + V, dtype=torch.float32)
    y = torch.arange(B) % C
    for name in NAMES:
        for temperature in (0.5, 0.01):
            zz = z.clone().requires_grad_()
            loss = call(name, zz, y, temperature=temperature, path=path, block_size=2)
            loss.backward()
            assert torch.isfinite(loss) and torch.isfinite(zz.grad).all(), (name, temperature)
    if V == 1:  # no other view: L_SS and L_repel have no valid anchor
        assert float(L.simclr_loss(z)) == 0.0 and float(L.repel_loss(z, y)) == 0.0
    if C == 1:  # no negatives: L_attract is 0 (every ratio is e^s / e^s)
        assert float(L.attract_loss(z, y)) == 0.0


def test_extreme_logits_stay_finite():
    z, y = batch(8, 2, 3, seed=9, dtype=torch.float32, scale=30.0)  # logits up to ~1e4
    z[0, 0] = 0.0  # a zero vector too
    for normalize in (True, False):
        for name in NAMES:
            zz = z.clone().requires_grad_()
            loss = call(name, zz, y, temperature=0.05, normalize=normalize)
            loss.backward()
            assert torch.isfinite(loss) and torch.isfinite(zz.grad).all(), (name, normalize)
            want = call(name, z.double(), y, temperature=0.05, normalize=normalize)
            assert float(loss.detach()) == pytest.approx(float(want), rel=1e-4, abs=1e-3)


# ------------------------------------------------------------------ memory-lean path
def test_lean_equals_dense_values_and_gradients(monkeypatch):
    z, y = batch(300, 2, 7, D=32, seed=11, dtype=torch.float32)
    for name in NAMES:
        out = {}
        for path, block in (("dense", None), ("lean", 37), ("lean", 1000)):
            zz = z.clone().requires_grad_()
            loss = call(name, zz, y, path=path, block_size=block)
            loss.backward()
            out[(path, block)] = (loss.detach(), zz.grad)
        for key, (value, grad) in out.items():
            torch.testing.assert_close(value, out[("dense", None)][0], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(grad, out[("dense", None)][1], rtol=1e-5, atol=1e-7)
    monkeypatch.setattr(functional, "DENSE_LIMIT", 10)  # "auto" above the limit takes the lean path
    torch.testing.assert_close(L.spread_loss(z, y), L.spread_loss(z, y, path="dense"), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------ autocast
def test_bf16_autocast_computes_logits_in_float32():
    torch.manual_seed(0)
    lin = torch.nn.Linear(16, 8)
    x, y = torch.randn(32, 2, 16), torch.randint(0, 4, (32,))
    for name in NAMES:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            feats = lin(x)
            assert feats.dtype == torch.bfloat16
            loss = call(name, feats, y)
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        # identical to the float32 computation on the same bf16 features: no bf16 logits
        torch.testing.assert_close(loss, call(name, feats.float(), y), rtol=1e-6, atol=1e-6)
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in lin.parameters())
        lin.zero_grad()


# ------------------------------------------------------------------ modules and registry
def test_modules_and_registry():
    z, y = batch(8, 2, 3, seed=12)
    assert set(L.LOSSES) == {"supcon", "simclr", "attract", "repel", "spread", "supcon-authors", "spread-authors"}
    for name, cls in L.LOSSES.items():
        module = cls(temperature=0.3)
        assert list(module.parameters()) == [] and "temperature=0.3" in repr(module)
        base, _, variant = name.partition("-")
        kw = {"variant": "authors"} if variant else {}
        torch.testing.assert_close(module(z, y), call(base, z, y, temperature=0.3, **kw))
    assert float(L.SimCLRLoss()(z, y)) == float(L.SimCLRLoss()(z))  # labels ignored
    loss, terms = L.SpreadLoss(alpha=0.25)(z, y, return_terms=True)
    torch.testing.assert_close(loss, L.spread_loss(z, y, alpha=0.25))
    with pytest.raises(ValueError, match="alpha"):
        L.SpreadLoss(alpha=1.5)
    with pytest.raises(ValueError, match="temperature"):
        L.SupConLoss(temperature=0)


# ------------------------------------------------------------------ bad input
z_ok, y_ok = batch(4, 2, 2, dtype=torch.float32)
BAD = [
    (lambda: L.supcon_loss(z_ok[:, 0], y_ok), "shape \\[B, V, D\\].*unsqueeze"),
    (lambda: L.supcon_loss(z_ok[None], y_ok), "shape \\[B, V, D\\]"),
    (lambda: L.supcon_loss(z_ok, y_ok[:3]), "labels must have shape \\[4\\]"),
    (lambda: L.supcon_loss(z_ok, y_ok[:, None]), "labels must have shape"),
    (lambda: L.supcon_loss(z_ok, y_ok.float()), "integers"),
    (lambda: L.supcon_loss(z_ok, y_ok.bool()), "integers"),
    (lambda: L.supcon_loss(z_ok.long(), y_ok), "float tensor"),
    (lambda: L.supcon_loss(z_ok, y_ok, temperature=0.0), "temperature"),
    (lambda: L.simclr_loss(z_ok, temperature=-1), "temperature"),
    (lambda: L.spread_loss(z_ok, y_ok, alpha=-0.1), "alpha"),
    (lambda: L.spread_loss(z_ok, y_ok, alpha=1.01), "alpha"),
    (lambda: L.supcon_loss(torch.full((4, 2, 3), float("nan")), y_ok), "NaN or inf"),
    (lambda: L.supcon_loss(z_ok.clone().index_fill_(0, torch.tensor([1]), float("inf")), y_ok), "NaN or inf"),
    (lambda: L.supcon_loss(z_ok, y_ok, anchors="view1"), "anchors"),
    (lambda: L.supcon_loss(torch.zeros(4, 3, 2), y_ok, anchors="cross_view"), "V = 2"),
    (lambda: L.supcon_loss(z_ok, y_ok, memory="low"), "memory"),
    (lambda: L.supcon_loss(z_ok, y_ok, path="low"), "path"),
    (lambda: L.supcon_loss(z_ok, y_ok, block_size=0), "block_size"),
    (lambda: L.supcon_loss(torch.zeros(0, 2, 3), torch.zeros(0, dtype=torch.long)), "non-empty"),
    (lambda: L.supcon_loss_flat(z_ok[:, 0], y_ok, torch.arange(3)), "ids must have shape"),
    (lambda: L.spread_loss_flat(z_ok[:, 0], y_ok, y_ok, anchor_index=y_ok.bool()), "anchor_index"),
    (lambda: L.per_anchor_losses(z_ok[:, 0], y_ok, y_ok, ("triplet",)), "terms"),
]


@pytest.mark.parametrize("fn,match", BAD)
def test_bad_input_raises_actionable_value_error(fn, match):
    with pytest.raises(ValueError, match=match):
        fn()


@pytest.mark.parametrize("temperature", [1 / 30, 1 / 31])
def test_worst_case_geometry_at_the_fast_path_boundary(temperature):
    """Anti-aligned positives and aligned negatives at the largest 1/tau of the unshifted path
    (and just beyond it): the largest possible e^S ratios stay finite and exact."""
    B = 200
    z = torch.zeros(B, 2, 3)
    y = (torch.arange(B) > 0).long()  # image 0 alone in class 0...
    z[:, :, 0] = 1.0
    z[0, 1, 0] = -1.0  # ...with its two views opposite each other; every negative aligned
    for name in NAMES:
        zz = z.clone().requires_grad_()
        loss = call(name, zz, y, temperature=temperature)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(zz.grad).all(), name
        want = call(name, z.double(), y, temperature=temperature)
        assert float(loss.detach()) == pytest.approx(float(want), rel=1e-5), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA to detect host synchronisation")
@pytest.mark.parametrize("path", ["dense", "lean"])
def test_no_host_sync_on_cuda(path):
    z, y = batch(64, 2, 5, D=16, seed=13, dtype=torch.float32)
    z, y = z.cuda().requires_grad_(), y.cuda()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for name in NAMES:
            call(name, z, y, path=path, block_size=32).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(z.grad).all()
