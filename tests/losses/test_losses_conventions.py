"""The callers' conventions (issue 24): SupContrast's mask=[B, B], multi-hot labels [B, L] and
lightly's two-tensor call, in float64, values and gradients, against the peers where the
definitions coincide and against a loop oracle where we define the meaning (L_spread's family).

Where the definitions differ (and how the tests make them coincide):
- SupContrast multiplies its loss by temperature / base_temperature: base_temperature = temperature.
- SupContrast does not normalise the features: its transcription gets F.normalize(x) (inside the
  graph, so gradients compare too); it adds 1e-9 inside its log (left out here: < 1e-9 change).
- SupContrast averages over every anchor, one without a positive giving NaN (its older code) or 0
  (newer); ours leaves such anchors out: every mask here gives each anchor a positive.
- For L_attract / L_repel / L_spread an anchor's own other views are always positives, whatever
  mask[b, b] says (the oracle below states it); L_SC reads the diagonal as SupContrast does.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from spreadcon import losses as L
from spreadcon.losses import MemoryBank

NAMES = ("supcon", "simclr", "attract", "repel", "spread")
TAU = 0.3


def batch(B=6, V=2, D=5, seed=0, C=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, V, D, generator=g, dtype=torch.float64), torch.randint(0, C, (B,), generator=g)


def values_and_grads(fn, x):
    x = x.detach().clone().requires_grad_()
    out = fn(x)
    out.backward()
    return out.detach(), x.grad


def assert_same(a, b, rtol=1e-12, atol=1e-13):
    torch.testing.assert_close(a[0], b[0], rtol=rtol, atol=atol)
    torch.testing.assert_close(a[1], b[1], rtol=rtol, atol=atol)


# ------------------------------------------------------------------ masks
def asymmetric_mask(B, seed=1, diagonal=1.0):
    """A random 0/1 mask, not symmetric; with diagonal 0 every row keeps an off-diagonal 1."""
    g = torch.Generator().manual_seed(seed)
    m = (torch.rand(B, B, generator=g) < 0.35).double()
    m.fill_diagonal_(diagonal)
    m[torch.arange(B), (torch.arange(B) + 1) % B] = 1.0  # a positive besides itself
    assert not torch.equal(m, m.T)
    return m


def multi_hot(B, L_=4, seed=2):
    """labels [B, L]: every sample has at least one label; some have two."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(B, L_, generator=g) < 0.3).long()
    y[torch.arange(B), torch.randint(0, L_, (B,), generator=g)] = 1
    return y


def masks(B):
    y = batch(B)[1]
    return {
        "labels": (y[:, None] == y[None]).double(),
        "asymmetric": asymmetric_mask(B),
        "zero_diagonal": asymmetric_mask(B, diagonal=0.0),
        "multi_label": ((multi_hot(B).double() @ multi_hot(B).double().T) > 0).double(),
        "soft": asymmetric_mask(B) * torch.linspace(0.2, 1.0, B, dtype=torch.float64)[None],
    }


# ------------------------------------------------------------------ SupContrast, transcribed
def supcontrast(features, labels=None, mask=None, temperature=0.07, base_temperature=0.07):
    """HobbitLong/SupContrast losses.py SupConLoss.forward, contrast_mode='all', in float64."""
    B, V = features.shape[:2]
    if labels is not None and mask is not None:
        raise ValueError("Cannot define both `labels` and `mask`")
    if labels is None and mask is None:
        mask = torch.eye(B, dtype=torch.float64)
    elif labels is not None:
        labels = labels.view(-1, 1)
        mask = torch.eq(labels, labels.T).double()
    contrast = torch.cat(torch.unbind(features, dim=1), dim=0)  # [V * B, D], view-major
    logits = contrast @ contrast.T / temperature
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    mask = mask.double().repeat(V, V)
    logits_mask = torch.scatter(torch.ones_like(mask), 1, torch.arange(B * V).view(-1, 1), 0)
    mask = mask * logits_mask
    log_prob = logits - torch.log((torch.exp(logits) * logits_mask).sum(1, keepdim=True))
    mean_log_prob_pos = (mask * log_prob).sum(1) / mask.sum(1)
    return (-(temperature / base_temperature) * mean_log_prob_pos).view(V, B).mean()


def theirs(x, **kw):
    return supcontrast(F.normalize(x, dim=-1), temperature=TAU, base_temperature=TAU, **kw)


@pytest.mark.parametrize("kind", ["labels", "asymmetric", "zero_diagonal", "multi_label", "soft"])
@pytest.mark.parametrize("V", [1, 2, 3])
def test_supcon_mask_equals_supcontrast(kind, V):
    x, _ = batch(V=V)
    m = masks(6)[kind]
    if V == 1:  # one view: each anchor needs a positive besides itself (SupContrast: NaN otherwise)
        m = m.clone()
        m[torch.arange(6), (torch.arange(6) + 1) % 6] = m.max()
    want = values_and_grads(lambda z: theirs(z, mask=m), x)
    assert_same(values_and_grads(lambda z: L.SupConLoss(temperature=TAU)(z, mask=m), x), want)
    assert_same(values_and_grads(lambda z: L.supcon_loss(z, mask=m, temperature=TAU), x), want)


def test_supcon_labels_multi_hot_and_none_equal_supcontrast():
    x, y = batch(V=2)
    Y = multi_hot(6)
    module = L.SupConLoss(temperature=TAU)
    assert_same(values_and_grads(lambda z: module(z, y), x), values_and_grads(lambda z: theirs(z, labels=y), x))
    multi = ((Y @ Y.T) > 0).double()
    assert_same(values_and_grads(lambda z: module(z, Y), x), values_and_grads(lambda z: theirs(z, mask=multi), x))
    simclr = values_and_grads(lambda z: theirs(z), x)  # SupContrast without labels or mask: SimCLR
    assert_same(values_and_grads(lambda z: module(z), x), simclr)
    assert_same(values_and_grads(lambda z: L.SimCLRLoss(temperature=TAU)(z), x), simclr)


@pytest.mark.parametrize("kind", ["asymmetric", "multi_label", "soft"])
def test_simclr_with_a_mask_is_supcontrast_with_that_mask(kind):
    x, _ = batch(V=2)
    m = masks(6)[kind]
    want = values_and_grads(lambda z: theirs(z, mask=m), x)
    assert_same(values_and_grads(lambda z: L.SimCLRLoss(temperature=TAU)(z, mask=m), x), want)
    assert_same(values_and_grads(lambda z: L.simclr_loss(z, mask=m, temperature=TAU), x), want)


def test_flat_embeddings_take_a_row_mask():
    """pml's [M, D] call with mask=[M, M]: SupContrast on [M, 1, D]."""
    x, _ = batch(B=8, V=1)
    m = asymmetric_mask(8)
    want = values_and_grads(lambda z: theirs(z, mask=m), x)
    assert_same(values_and_grads(lambda z: L.SupConLoss(temperature=TAU)(z[:, 0], mask=m), x), want)


# ------------------------------------------------------------------ L_spread's family: a loop oracle
def family_oracle(name, x, mask, alpha=0.5):
    """Literal float64 loop over anchors for attract / repel / spread with positives from a mask:
    P(i) = {j != i: mask[b_i, b_j] != 0 or b_j = b_i}, N(i) = the other points, aug(i) = the
    anchor's other views; means over valid anchors (as SPEC.md)."""
    B, V, _ = x.shape
    z = F.normalize(x, dim=-1).reshape(B * V, -1)
    S = z @ z.T / TAU
    img = torch.arange(B).repeat_interleave(V)
    att, rep = [], []
    for i in range(B * V):
        others = [j for j in range(B * V) if j != i]
        P = [j for j in others if mask[img[i], img[j]] != 0 or img[j] == img[i]]
        N = [j for j in others if j not in P]
        aug = [j for j in others if img[j] == img[i]]
        if P and N:
            lse_n = torch.logsumexp(S[i, N], 0)
            att.append(torch.stack([torch.logaddexp(S[i, p], lse_n) - S[i, p] for p in P]).mean())
        if aug:
            lse_p = torch.logsumexp(S[i, P], 0)
            rep.append(torch.stack([lse_p - S[i, a] for a in aug]).mean())
    mean = {"attract": torch.stack(att).mean(), "repel": torch.stack(rep).mean()}
    return mean[name] if name != "spread" else alpha * mean["attract"] + (1 - alpha) * mean["repel"]


@pytest.mark.parametrize("kind", ["labels", "asymmetric", "zero_diagonal", "multi_label"])
@pytest.mark.parametrize("name", ["attract", "repel", "spread"])
def test_spread_family_mask_equals_loop_oracle(name, kind):
    x, _ = batch(V=2)
    m = masks(6)[kind]
    kw = {"alpha": 0.3} if name == "spread" else {}
    want = values_and_grads(lambda z: family_oracle(name, z, m, **kw), x)
    module = L.LOSSES[name](temperature=TAU, **kw)
    assert_same(values_and_grads(lambda z: module(z, mask=m), x), want)
    fn = getattr(L, f"{name}_loss")
    assert_same(values_and_grads(lambda z: fn(z, mask=m, temperature=TAU, **kw), x), want)


# ------------------------------------------------------------------ mask = labels, multi-hot = mask
@pytest.mark.parametrize("name,anchors", [(n, a) for n in NAMES for a in ("all", "cross_view")]
                         + [("supcon-authors", "all"), ("spread-authors", "all")])  # they fix their anchors
def test_label_equality_mask_gives_the_labels_result(name, anchors):
    x, y = batch(B=7, V=2, seed=3)
    eq = (y[:, None] == y[None]).double() if name != "simclr" else torch.eye(7, dtype=torch.float64)
    module = L.LOSSES[name](temperature=TAU, **({} if name.endswith("authors") else {"anchors": anchors}))
    want = values_and_grads(lambda z: module(z, y), x)
    assert_same(values_and_grads(lambda z: module(z, mask=eq), x), want)
    one_hot = F.one_hot(y, 3).bool()  # multi-hot with one label each: the class labels again
    assert_same(values_and_grads(lambda z: module(z, one_hot), x), want)


@pytest.mark.parametrize("name", NAMES)
def test_multi_hot_labels_are_the_mask_of_shared_labels(name):
    x, _ = batch(V=3, seed=4)
    Y = multi_hot(6)
    module = L.LOSSES[name](temperature=TAU)
    shared = (Y.double() @ Y.double().T) > 0
    got = values_and_grads(lambda z: module(z, labels=Y), x)
    if name == "simclr":  # SimCLR reads no labels
        assert_same(got, values_and_grads(lambda z: module(z), x))
    else:
        assert_same(got, values_and_grads(lambda z: module(z, mask=shared), x))


def test_flat_mask_with_ids_equals_the_batch_call():
    x, y = batch(B=6, V=2, seed=5)
    m = asymmetric_mask(6)
    rows = m.repeat_interleave(2, 0).repeat_interleave(2, 1)  # the mask of the 12 rows
    ids = torch.arange(6).repeat_interleave(2)
    for name in ("supcon", "attract", "repel", "spread"):
        module = L.LOSSES[name](temperature=TAU)
        want = values_and_grads(lambda z: module(z, mask=m), x)
        assert_same(values_and_grads(lambda z: module(z.reshape(12, -1), ids=ids, mask=rows), x), want)


# ------------------------------------------------------------------ lightly's two-tensor call
@pytest.mark.parametrize("name", [*NAMES, "supcon-authors", "spread-authors"])
def test_two_tensor_call_is_the_stacked_call(name):
    x, y = batch(B=7, V=2, seed=6)
    module = L.LOSSES[name](temperature=TAU)
    pair = lambda z, *a, **k: module(z[:, 0], z[:, 1], *a, **k)  # noqa: E731
    assert_same(values_and_grads(lambda z: pair(z, y), x), values_and_grads(lambda z: module(z, y), x))
    assert_same(values_and_grads(lambda z: pair(z, labels=y), x), values_and_grads(lambda z: module(z, y), x))
    m = asymmetric_mask(7)
    assert_same(values_and_grads(lambda z: pair(z, mask=m), x), values_and_grads(lambda z: module(z, mask=m), x))
    if not name.endswith("authors"):
        assert_same(values_and_grads(lambda z: pair(z), x), values_and_grads(lambda z: module(z), x))


@pytest.mark.parametrize("tau", [0.07, 0.5])
def test_two_tensor_simclr_equals_lightly_ntxent(tau):
    lightly_loss = pytest.importorskip("lightly.loss")
    x, _ = batch(B=9, V=2, D=7, seed=7)
    want = values_and_grads(lambda z: lightly_loss.NTXentLoss(temperature=tau)(z[:, 0], z[:, 1]), x)
    got = values_and_grads(lambda z: L.SimCLRLoss(temperature=tau)(z[:, 0], z[:, 1]), x)
    assert_same(got, want, rtol=1e-10, atol=1e-12)


def test_two_tensor_supcon_equals_lightly_supcon():
    """lightly's SupConLoss (in its repository, not in release 1.6.0: skipped there) rescales by
    temperature unless rescale=False; it builds its soft labels in float32 (looser tolerance)."""
    supcon = pytest.importorskip("lightly.loss.supcon_loss")
    x, y = batch(B=9, V=2, D=7, seed=8)
    want = values_and_grads(lambda z: supcon.SupConLoss(temperature=TAU, rescale=False)(z[:, 0], z[:, 1], y), x)
    got = values_and_grads(lambda z: L.SupConLoss(temperature=TAU)(z[:, 0], z[:, 1], y), x)
    assert_same(got, want, rtol=1e-6, atol=1e-8)


def test_two_tensor_calls_equal_pml_on_the_concatenated_views():
    """pml's NTXentLoss / SupConLoss on cat([out0, out1]) with instance / class labels."""
    from pytorch_metric_learning import losses as pml

    x, y = batch(B=9, V=2, D=7, seed=9)
    cat = lambda z: torch.cat([z[:, 0], z[:, 1]])  # noqa: E731
    inst = torch.arange(9).repeat(2)
    assert_same(values_and_grads(lambda z: L.SimCLRLoss(temperature=TAU)(z[:, 0], z[:, 1]), x),
                values_and_grads(lambda z: pml.NTXentLoss(temperature=TAU)(cat(z), inst), x), rtol=1e-10, atol=1e-12)
    assert_same(values_and_grads(lambda z: L.SupConLoss(temperature=TAU)(z[:, 0], z[:, 1], y), x),
                values_and_grads(lambda z: pml.SupConLoss(temperature=TAU)(cat(z), y.repeat(2)), x),
                rtol=1e-10, atol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA to detect host synchronisation")
@pytest.mark.parametrize("name", NAMES)
def test_mask_and_multi_hot_calls_never_sync_on_cuda(name):
    x, _ = batch(B=32, V=2, D=16, seed=10)
    x = x.float().cuda().requires_grad_()
    m, Y = asymmetric_mask(32).float().cuda(), multi_hot(32).cuda()
    module = L.LOSSES[name](temperature=TAU)
    torch.cuda.set_sync_debug_mode("error")
    try:
        (module(x, mask=m) + module(x, Y) + module(x[:, 0], x[:, 1], Y)).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(x.grad).all()


# ------------------------------------------------------------------ bad input
x_ok, y_ok = batch(B=4, V=2)
m_ok = torch.eye(4)
BAD = [
    (lambda: L.SupConLoss()(x_ok, mask=torch.ones(4, 3)), "mask must be a real tensor of shape \\[4, 4\\]"),
    (lambda: L.SupConLoss()(x_ok, mask=torch.ones(8, 8)), "mask must .*\\[4, 4\\]"),
    (lambda: L.SupConLoss()(x_ok, mask=[[1, 0], [0, 1]]), "mask must be a torch.Tensor"),
    (lambda: L.supcon_loss(x_ok, y_ok, mask=m_ok), "labels or mask, not both"),
    (lambda: L.SpreadLoss()(x_ok, y_ok, mask=m_ok), "labels or mask, not both"),
    (lambda: L.SimCLRLoss()(x_ok, y_ok, mask=m_ok), "labels or mask, not both"),
    (lambda: L.SpreadLoss()(x_ok, mask=m_ok * 0.5), "mask must hold only 0 and 1"),
    (lambda: L.SupConLoss()(x_ok, mask=-m_ok), "mask must be finite and >= 0"),
    (lambda: L.SupConLoss()(x_ok, mask=m_ok * float("nan")), "mask must be finite"),
    (lambda: L.SupConLoss()(x_ok[:, 0], x_ok[:3, 1]), "out1 must match out0"),
    (lambda: L.SupConLoss()(x_ok[:, 0], x_ok[:, 1].float()), "out1 must match out0"),
    (lambda: L.SpreadLoss()(x_ok[:, 0], x_ok[:, 1, :3], y_ok), "out1 must match out0"),
    (lambda: L.SupConLoss()(x_ok[:, 0], y_ok, labels=y_ok), "labels given twice"),
    (lambda: L.SupConLoss()(x_ok, y_ok, y_ok, y_ok), "after the embeddings"),
    (lambda: L.SupConLoss()(x_ok, multi_hot(4).double()), "multi-hot"),
    (lambda: L.SupConLoss()(x_ok, y_ok[:, None]), "labels must have shape \\[4\\].*squeeze"),
    (lambda: L.SupConLoss()(x_ok, multi_hot(4)[:3]), "labels must have shape \\[4\\]"),
    (lambda: L.SupConLoss()(x_ok, multi_hot(4) * 2), "labels \\[B, L\\] \\(multi-hot\\) must hold only 0 and 1"),
    (lambda: L.spread_loss(x_ok, mask=m_ok, memory=MemoryBank(8)), "memory= takes class labels"),
    (lambda: L.spread_loss(x_ok, mask=m_ok, backend="triton"), "backend='triton'.*mask="),
    (lambda: L.SupConLoss(variant="authors")(x_ok, y_ok, mask=m_ok), "labels or mask, not both"),
    (lambda: L.SupConLoss()(x_ok[:, 0], mask=torch.eye(3)), "mask must .*\\[4, 4\\].*row"),
]


@pytest.mark.parametrize("fn,match", BAD)
def test_bad_conventions_raise_a_value_error_naming_the_argument(fn, match):
    with pytest.raises(ValueError, match=match):
        fn()


def test_flat_anchor_index_out_of_range_is_named():
    from spreadcon.losses import spread_loss_flat

    z, y, ids = torch.randn(6, 4), torch.tensor([0, 0, 1, 1, 0, 1]), torch.tensor([0, 0, 1, 1, 2, 2])
    with pytest.raises(ValueError, match=r"anchor_index holds rows 0..9, outside the 6 rows"):
        spread_loss_flat(z, y, ids, anchor_index=torch.tensor([0, 9]))
