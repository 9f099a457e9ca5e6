"""The authors' variants ("supcon-authors", "spread-authors") against a loop transcription of the
released forward (HazyResearch/thanos-code, unagi/tasks/loss_fns/contrastive_loss.py, V = 2):
view-1 anchors, view-0 points, positives incl. the anchor's own view 0, one log-sum-exp per
positive over {that positive} + negatives (pos_in_denom=False), the numerator's positive logits
clamped at clip_pos when clip_pos == 1.0 (its inverted test), l_spread's repel term
logsumexp over positives minus the diagonal logit, a = (a_lc * A / |P| + a_spread * R) / (a_lc + a_spread)."""

from __future__ import annotations

import math

import pytest
import torch

from spreadcon import losses as L


def released_forward(x, labels, *, temp, type_, clip_pos=1.0, lc_norm=False, a_lc=1.0, a_spread=1.0):
    """float64 loop transcription; x [B, 2, D] (the two views), labels [B]."""
    v1, v0 = x[:, 1].double(), x[:, 0].double()
    B = x.shape[0]
    if type_ == "sup_con":
        a_spread = 0.0

    def s(i, j):
        dot = float(v1[i] @ v0[j]) / temp
        if lc_norm:  # the released division: column j by |v1_j| |v0_j|
            dot /= float(v1[j].norm()) * float(v0[j].norm())
        return dot

    total = 0.0
    for i in range(B):
        pos = [j for j in range(B) if labels[j] == labels[i]]
        neg = [j for j in range(B) if labels[j] != labels[i]]
        denom = sum(math.log(sum(math.exp(s(i, j)) for j in [p] + neg)) for p in pos)
        clip = (lambda v: min(v, clip_pos)) if clip_pos == 1.0 else (lambda v: v)  # the inverted if
        numer = sum(-clip(s(i, p)) for p in pos)
        attract = (numer + denom) / len(pos)
        if a_spread > 0:
            repel = -s(i, i) + math.log(sum(math.exp(s(i, p)) for p in pos))
            total += (a_lc * attract + a_spread * repel) / (a_lc + a_spread)
        else:
            total += a_lc * attract
    return total / B


def _inputs(B, C, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, 2, 6, generator=g, dtype=torch.float64) * scale, torch.randint(0, C, (B,), generator=g)


@pytest.mark.parametrize("B,C,seed", [(8, 3, 0), (12, 2, 1), (7, 7, 2), (6, 1, 3), (10, 4, 4)])
@pytest.mark.parametrize("tau", [0.5, 0.1])
def test_released_forward_reproduced_exactly(B, C, seed, tau):
    x, y = _inputs(B, C, seed, scale=2.0)
    for lc_norm, normalize in ((False, False), (True, "released")):
        for type_, name in (("sup_con", "supcon"), ("l_spread", "spread")):
            want = released_forward(x, y, temp=tau, type_=type_, lc_norm=lc_norm)
            module = L.LOSSES[f"{name}-authors"](temperature=tau, normalize=normalize)
            assert float(module(x, y)) == pytest.approx(want, rel=1e-12, abs=1e-12), (type_, lc_norm)
            fn = getattr(L, f"{name}_loss")
            assert float(fn(x, y, temperature=tau, variant="authors", normalize=normalize)) == pytest.approx(
                want, rel=1e-12, abs=1e-12)


def test_defaults_clamp_one_alpha_half_and_clamp_off():
    x, y = _inputs(10, 3, 5)
    unit = torch.nn.functional.normalize(x, dim=-1)  # normalize=True: the released forward on unit vectors
    tau = 0.5
    assert float(L.LOSSES["spread-authors"]()(x, y)) == pytest.approx(
        released_forward(unit, y, temp=tau, type_="l_spread"), rel=1e-12)
    assert float(L.LOSSES["supcon-authors"]()(x, y)) == pytest.approx(
        released_forward(unit, y, temp=tau, type_="sup_con"), rel=1e-12)
    # clamp off = the released code with any clip_pos != 1.0 (which then does not clamp)
    assert float(L.supcon_loss(x, y, variant="authors", clamp_positive=None)) == pytest.approx(
        released_forward(unit, y, temp=tau, type_="sup_con", clip_pos=0.9), rel=1e-12)
    # alpha: a_lc / (a_lc + a_spread)
    assert float(L.spread_loss(x, y, variant="authors", alpha=0.25)) == pytest.approx(
        released_forward(unit, y, temp=tau, type_="l_spread", a_lc=1.0, a_spread=3.0), rel=1e-12)
    # unclamped, the authors' sup_con is L_attract with cross-view anchors but P(i) incl. own view
    assert L.SupConLoss(variant="authors").clamp_positive == 1.0
    assert L.SpreadAuthorsLoss().alpha == 0.5


def test_authors_variants_are_differentiable():
    x, y = _inputs(5, 2, 6)
    x.requires_grad_()
    for name in ("supcon", "spread"):
        for clamp in (1.0, None):
            assert torch.autograd.gradcheck(
                lambda z: getattr(L, f"{name}_loss")(z, y, variant="authors", clamp_positive=clamp), (x,))


def test_authors_variant_in_float32_and_modules_have_no_state():
    x, y = _inputs(16, 4, 7)
    for name in ("supcon-authors", "spread-authors"):
        module = L.LOSSES[name](temperature=0.2)
        assert list(module.parameters()) == [] and "authors" in repr(module)
        got = module(x.float(), y)
        assert got.dtype == torch.float32
        assert float(got) == pytest.approx(float(module(x, y)), rel=1e-5)
