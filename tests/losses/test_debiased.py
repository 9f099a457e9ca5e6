"""EXPERIMENTAL debiased losses (Appendix F.3.1): weights and Monte-Carlo unbiasedness."""

import math

import pytest
import torch

from spreadcon.losses import debiased as LD


def spec_lemma6_weights(p):
    d = (2 * p - 1) ** 2
    return {"w+": (p * p + (1 - p) ** 2) / d, "w-": 2 * p * (1 - p) / d,
            "w1": (p * p + (1 - p) ** 2) / d, "w2": p * (1 - p) / d}


@pytest.mark.parametrize("p", [0.6, 0.8, 0.95, 1.0])
def test_triplet_weights_are_spec_lemma6_under_noisy_anchor(p):
    spec = spec_lemma6_weights(p)
    w_pos, w_neg = LD.linear_weights(p, anchor_noisy=True)
    w = LD.set_weights(p, 2, anchor_noisy=True)
    assert (w_pos, w_neg) == pytest.approx((spec["w+"], spec["w-"]))
    assert w.tolist() == pytest.approx([-spec["w2"], spec["w1"], -spec["w2"]])
    # with the anchor trusted, only the linear weights change: p / (2p - 1), (1 - p) / (2p - 1)
    assert LD.linear_weights(p, anchor_noisy=False) == pytest.approx((p / (2 * p - 1), (1 - p) / (2 * p - 1)))
    assert LD.set_weights(p, 2, anchor_noisy=False).tolist() == pytest.approx(w.tolist())


def _pools(seed=0, n=64, D=6):
    g = torch.Generator().manual_seed(seed)
    centre = torch.randn(D, generator=g, dtype=torch.float64)
    anchor = centre + 0.5 * torch.randn(D, generator=g, dtype=torch.float64)
    pos = centre + 0.8 * torch.randn(n, D, generator=g, dtype=torch.float64)   # anchor's true class
    neg = -centre + 0.8 * torch.randn(n, D, generator=g, dtype=torch.float64)  # the other class
    return anchor, pos, neg


def _noisy_draws(pos, neg, p, m, R, anchor_noisy, g):
    """Simulate symmetric noise: per sample, the anchor's label flips w.p. 1 - p (model B only);
    each noisy-positive draw is truly positive w.p. p (1 - p when the anchor flipped), each
    noisy-negative draw truly negative alike; then a uniform point of that true class."""
    flip = (torch.rand(R, 1, generator=g) > p) if anchor_noisy else torch.zeros(R, 1, dtype=torch.bool)
    right = torch.where(flip, 1 - p, p)

    def draw(intended, opposite):
        is_intended = torch.rand(R, m, generator=g) < right
        a = intended[torch.randint(len(intended), (R, m), generator=g)]
        b = opposite[torch.randint(len(opposite), (R, m), generator=g)]
        return torch.where(is_intended[..., None], a, b)

    return draw(pos, neg), draw(neg, pos)


def _clean(anchor, pos, neg, m, temperature, R, g):
    """E[-log(e^{s+} / (e^{s+} + sum of m - 1 negatives))], exact for m = 2, else Monte Carlo."""
    a = torch.nn.functional.normalize(anchor, dim=0)
    sp = torch.nn.functional.normalize(pos, dim=1) @ a / temperature
    sn = torch.nn.functional.normalize(neg, dim=1) @ a / temperature
    if m == 2:
        return float((-sp[:, None] + torch.logaddexp(sp[:, None], sn[None, :])).mean())
    ip = torch.randint(len(sp), (R,), generator=g)
    ineg = torch.randint(len(sn), (R, m - 1), generator=g)
    s = torch.cat([sp[ip, None], sn[ineg]], 1)
    return float((-s[:, 0] + torch.logsumexp(s, 1)).mean())


@pytest.mark.parametrize("m,p", [(2, 0.75), (2, 0.9), (4, 0.8)])
def test_monte_carlo_expectation_equals_clean_loss(m, p):
    """Each weight set is unbiased under its own noise model, and biased under the other: this is
    what decides that SPEC.md's Lemma 6 weights belong to the noisy-anchor model (B)."""
    anchor, pos, neg = _pools()
    R, temperature = 200_000, 0.5
    g = torch.Generator().manual_seed(1)
    clean = _clean(anchor, pos, neg, m, temperature, 400_000, g)
    for model_noisy in (True, False):
        xp, xn = _noisy_draws(pos, neg, p, m, R, model_noisy, g)
        anchors = anchor.expand(R, -1)
        for weights_noisy in (True, False):
            per = LD.debiased_attract_tuples(anchors, xp, xn, p, temperature, anchor_noisy=weights_noisy,
                                             reduction="none")
            mean, se = float(per.mean()), float(per.std()) / math.sqrt(R)
            if weights_noisy == model_noisy:
                assert abs(mean - clean) < 4 * se + 2e-3, (model_noisy, mean, clean, se)
            elif m == 2:  # the wrong linear weights leave a bias far beyond the noise
                assert abs(mean - clean) > 10 * se, (model_noisy, weights_noisy, mean, clean, se)
    # uncorrected noisy loss is biased (the thing being fixed)
    xp, xn = _noisy_draws(pos, neg, p, m, R, True, g)
    naive = LD.debiased_attract_tuples(anchor.expand(R, -1), xp, xn, 1.0, temperature, reduction="none")
    assert abs(float(naive.mean()) - clean) > 10 * float(naive.std()) / math.sqrt(R)


def test_clean_labels_give_the_clean_loss_exactly():
    anchor, pos, neg = _pools(2)
    xp, xn = pos[:10].reshape(5, 2, -1), neg[:10].reshape(5, 2, -1)
    got = LD.debiased_triplet_tuples(anchor.expand(5, -1), xp, xn, 1.0, 0.5, reduction="none")
    a = torch.nn.functional.normalize(anchor, dim=0)
    s = lambda x: torch.nn.functional.normalize(x, dim=-1) @ a / 0.5  # noqa: E731
    want = -s(xp[:, 0]) + torch.logaddexp(s(xp[:, 0]), s(xn[:, 0]))
    torch.testing.assert_close(got, want)


def test_batch_form_is_finite_seeded_and_differentiable():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(16, 2, 8, generator=g, requires_grad=True)
    y = torch.randint(0, 2, (16,), generator=g)
    a = LD.debiased_attract_loss(z, y, 0.8, generator=torch.Generator().manual_seed(3), negatives=3)
    b = LD.debiased_attract_loss(z, y, 0.8, generator=torch.Generator().manual_seed(3), negatives=3)
    assert torch.equal(a, b) and torch.isfinite(a)
    a.backward()
    assert torch.isfinite(z.grad).all()
    one_class = LD.debiased_attract_loss(z, torch.zeros(16, dtype=torch.long), 0.8,
                                         generator=torch.Generator().manual_seed(0))
    assert float(one_class.detach()) == 0.0


@pytest.mark.parametrize("p", [0.5, 0.3, 1.2])
def test_bad_p_raises(p):
    with pytest.raises(ValueError, match="p = Pr"):
        LD.linear_weights(p)
