"""Evaluation: embed, metrics, linear probes, coarse-to-fine, geometry (against loops and hand
values), and the pictures."""

import itertools
import math

import numpy as np
import pytest
import torch

from spreadcon.evaluate import geometry as geo
from spreadcon.evaluate.embed import embed
from spreadcon.evaluate.metrics import accuracy, auroc, group_accuracy, worst_group_accuracy
from spreadcon.evaluate.plots import embedding_picture, project, strata_size_scatter
from spreadcon.evaluate.probes import coarse_to_fine, fit_linear, linear_probe
from spreadcon.models import build_encoder



def clusters(centres, n_per, noise, seed=0):
    """Points around each row of centres [K, D]: (x [K*n_per, D], cluster id [K*n_per])."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.as_tensor(centres, dtype=torch.float32)
    ids = torch.arange(len(centres)).repeat_interleave(n_per)
    return centres[ids] + noise * torch.randn(len(ids), centres.shape[1], generator=g), ids


# --- embed ---------------------------------------------------------------------------------
def test_embed_batches_eval_mode_prepare_and_restores_mode():
    torch.manual_seed(0)
    enc = build_encoder("vit-test", (1, 8, 8), proj_dim=5, dropout=0.5).train()
    raw = torch.randint(0, 256, (10, 1, 8, 8), dtype=torch.uint8)
    prepare = lambda b: b.float() / 255.0  # noqa: E731
    out = embed(enc, raw, batch_size=3, prepare=prepare)
    assert out.shape == (10, 5) and out.dtype == torch.float32 and not out.requires_grad
    assert enc.training  # restored
    enc.eval()
    with torch.no_grad():
        ref = enc(raw.float() / 255.0)
    torch.testing.assert_close(out, ref)
    feats = embed(enc, raw.float() / 255.0, method="forward_features", normalize=True)
    assert feats.shape == (10, enc.feature_dim)
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(10))
    assert not enc.training  # it was in eval mode before this call
    with pytest.raises(ValueError):
        embed(enc, raw[:0].float())


# --- metrics -------------------------------------------------------------------------------
def test_metrics_against_hand_values():
    y = torch.tensor([0, 0, 1, 1])
    assert accuracy(torch.tensor([0, 1, 1, 1]), y) == 0.75
    assert accuracy(torch.tensor([[2.0, 1.0], [0.0, 1.0], [0.0, 3.0], [5.0, 1.0]]), y) == 0.5
    # of the 4 (negative, positive) pairs, 3 are ordered correctly: 0.75
    assert auroc(torch.tensor([0.1, 0.4, 0.35, 0.8]), y) == pytest.approx(0.75)
    assert auroc(torch.tensor([[0.0, -3.0], [0.0, 1.0], [1.0, 0.0], [0.0, 2.0]]), y) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="binary"):
        auroc(torch.rand(4), torch.tensor([0, 1, 2, 1]))
    groups = torch.tensor([0, 1, 1, 2])
    pred = torch.tensor([0, 1, 1, 1])
    assert group_accuracy(pred, y, groups) == {0: 1.0, 1: 0.5, 2: 1.0}
    assert worst_group_accuracy(pred, y, groups) == 0.5


# --- probes --------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["torch", "logreg"])
def test_probe_reaches_100_percent_on_separable_data(method):
    centres = 3.0 * torch.eye(4, 8)
    x, y = clusters(centres, 60, 0.3, seed=1)
    xt, yt = clusters(centres, 30, 0.3, seed=2)
    result = linear_probe(x, y, xt, yt, method=method, epochs=30, seed=0)
    assert result["accuracy"] == 1.0 and result["train_accuracy"] == 1.0 and result["num_classes"] == 4
    assert "auroc" not in result


def test_probe_is_seeded_and_reports_auroc_for_two_classes():
    x, y = clusters([[1.0, 0.0], [-1.0, 0.0]], 50, 1.0, seed=3)
    a = linear_probe(x, y, x, y, epochs=5, seed=7)
    b = linear_probe(x, y, x, y, epochs=5, seed=7)
    assert a == b and 0.5 < a["auroc"] <= 1.0
    w1 = fit_linear(x, y, 2, epochs=3, seed=1).weight
    w2 = fit_linear(x, y, 2, epochs=3, seed=2).weight
    assert not torch.equal(w1, w2)  # the seed drives the shuffle
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        linear_probe(x, y[:-1], x, y)
    with pytest.raises(ValueError, match="unknown probe method"):
        linear_probe(x, y, x, y, method="svm")


def test_coarse_to_fine_tells_spread_from_collapsed_embeddings():
    # 2 coarse classes x 3 fine strata; fine f belongs to coarse f // 3
    fine_centres = 2.0 * torch.eye(6)
    x, fine = clusters(fine_centres, 40, 0.05, seed=4)
    xt, fine_t = clusters(fine_centres, 40, 0.05, seed=5)
    coarse_t = fine_t // 3
    spread = coarse_to_fine(x, fine, xt, fine_t, test_coarse=coarse_t, epochs=100, lr=1e-2)
    assert spread["fine_accuracy"] == 1.0
    assert spread["chance_within_coarse"] == pytest.approx(1 / 3)
    # collapsed: every point of a coarse class sits at its class centre (+ noise): the fine label
    # within a class is unrecoverable, so accuracy falls to chance within the class (1/3)
    coarse_centres = 2.0 * torch.eye(2, 6)
    g = torch.Generator().manual_seed(6)
    xc = coarse_centres[fine // 3] + 0.05 * torch.randn(len(fine), 6, generator=g)
    xtc = coarse_centres[coarse_t] + 0.05 * torch.randn(len(fine_t), 6, generator=g)
    collapsed = coarse_to_fine(xc, fine, xtc, fine_t, test_coarse=coarse_t, epochs=100, lr=1e-2)
    assert 0.2 < collapsed["fine_accuracy"] < 0.5


# --- geometry ------------------------------------------------------------------------------
def unit(z):
    return z.double() / z.double().norm(dim=1, keepdim=True)


def test_intra_class_cosine_hand_values_and_loop_oracle():
    z = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [-1.0, 0.0], [0.0, 5.0]])
    y = torch.tensor([0, 0, 1, 1, 2])  # class 2 has one point: skipped
    assert geo.intra_class_cosine(z, y, per_class=True) == pytest.approx({0: 0.0, 1: -1.0})
    assert geo.intra_class_cosine(z, y) == pytest.approx(-0.5)
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(30, 4, generator=g), torch.randint(0, 3, (30,), generator=g)
    u = unit(z)
    expected = np.mean([
        np.mean([float(u[i] @ u[j]) for i, j in itertools.permutations(torch.nonzero(y == c).flatten().tolist(), 2)])
        for c in range(3)
    ])
    assert geo.intra_class_cosine(z, y) == pytest.approx(expected)
    # a collapsed class has cosine 1
    assert geo.intra_class_cosine(torch.ones(5, 3), torch.zeros(5, dtype=torch.long)) == pytest.approx(1.0)


def test_cosine_to_class_centre():
    z = torch.tensor([[1.0, 0.0], [0.0, 3.0], [2.0, 2.0], [5.0, 5.0]])
    y = torch.tensor([0, 0, 1, 1])
    cos = geo.cosine_to_class_centre(z, y)
    # class 0 centre (0.5, 0.5): 45 degrees from each point; class 1 points all point along (1, 1)
    torch.testing.assert_close(cos, torch.tensor([1 / math.sqrt(2), 1 / math.sqrt(2), 1.0, 1.0], dtype=torch.float64))


def test_strata_centre_distances_hand_values():
    # class 0: stratum 0 (2 points at (1,0)), stratum 1 (1 point at (0,1)), stratum 2 (1 point at (-1,0))
    # class 1: stratum 3 alone
    z = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    y = torch.tensor([0, 0, 0, 0, 1])
    s = torch.tensor([0, 0, 1, 2, 3])
    rows = geo.strata_centre_distances(z, y, s)
    r2 = math.sqrt(2)
    assert [r["size"] for r in rows] == [2, 1, 1, 1]
    assert [r["label"] for r in rows] == [0, 0, 0, 1]
    assert rows[0]["mean_distance"] == pytest.approx((r2 + 2) / 2) and rows[0]["min_distance"] == pytest.approx(r2)
    assert rows[1]["mean_distance"] == pytest.approx(r2)
    assert rows[2]["min_distance"] == pytest.approx(r2)
    assert rows[3]["mean_distance"] is None and rows[3]["min_distance"] is None


def test_alignment_and_uniformity_match_the_direct_formulas():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, 5, generator=g), torch.randn(12, 5, generator=g)
    ux, uy = unit(x), unit(y)
    for alpha in (1.0, 2.0):
        direct = sum(float((ux[i] - uy[i]).norm()) ** alpha for i in range(12)) / 12
        assert geo.alignment(x, y, alpha=alpha) == pytest.approx(direct)
    pairs = [(i, j) for i in range(12) for j in range(i + 1, 12)]
    direct = math.log(sum(math.exp(-2 * float((ux[i] - ux[j]).pow(2).sum())) for i, j in pairs) / len(pairs))
    assert geo.uniformity(x) == pytest.approx(direct)
    assert geo.uniformity(x, block=5) == pytest.approx(direct)  # blocked = unblocked
    assert geo.alignment(x, x) == 0.0 and geo.uniformity(torch.ones(4, 3)) == pytest.approx(0.0)
    # raw (unnormalised) option
    assert geo.alignment(x, y, normalize=False) == pytest.approx(float((x - y).double().pow(2).sum(1).mean()))


# --- plots ---------------------------------------------------------------------------------
def test_pictures_are_written(tmp_path):
    centres = 4.0 * torch.eye(6, 8)
    z, strata = clusters(centres, 25, 0.5, seed=0)
    labels = strata // 3
    keep = torch.ones(len(strata), dtype=torch.bool)
    keep[(strata == 5).nonzero().flatten()[5:]] = False  # stratum 5 is small
    z, labels, strata = z[keep], labels[keep], strata[keep]
    p1 = embedding_picture(z, labels, strata, tmp_path / "fig2.png", max_points=100, seed=0,
                           class_names=["a", "b"])
    p2 = strata_size_scatter(z, labels, strata, tmp_path / "sub" / "fig3.png", max_points=100)
    for p in (p1, p2):
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    coords, idx = project(z, max_points=50, seed=3)
    coords2, idx2 = project(z, max_points=50, seed=3)
    assert coords.shape == (50, 2) and np.array_equal(idx, idx2) and np.allclose(coords, coords2)
    with pytest.raises(ValueError, match="unknown projection"):
        project(z, method="pca")


@pytest.mark.slow
def test_picture_with_a_stratum_size_panel(tmp_path):
    import matplotlib.image

    torch.manual_seed(0)
    z = torch.randn(60, 4)
    strata = torch.arange(60) % 4
    path = embedding_picture(z, strata // 2, strata, tmp_path / "three.png", max_points=None,
                             stratum_sizes={0: 500, 1: 5, 2: 50, 3: 50})
    two = embedding_picture(z, strata // 2, strata, tmp_path / "two.png", max_points=None)
    assert matplotlib.image.imread(path).shape[1] > 1.3 * matplotlib.image.imread(two).shape[1]


def test_coloured_pair(tmp_path):
    from spreadcon.evaluate.plots import coloured_pair

    coords = np.random.default_rng(0).normal(size=(30, 2))
    path = coloured_pair(coords, np.arange(30) % 2, np.arange(30) % 3, tmp_path / "pair.png", title="t")
    assert path.stat().st_size > 0
    with pytest.raises(ValueError, match="coords"):
        coloured_pair(coords[:, :1], np.arange(30), np.arange(30), tmp_path / "bad.png")


def test_umap_picture(tmp_path):
    pytest.importorskip("umap")
    z, strata = clusters(4.0 * torch.eye(4, 8), 30, 0.5)
    path = embedding_picture(z, strata // 2, strata, tmp_path / "umap.png", method="umap")
    assert path.stat().st_size > 10_000


def test_fit_linear_takes_the_same_steps_as_torch_adamw():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 7, generator=g), torch.randint(0, 3, (300,), generator=g)
    ours = fit_linear(x, y, 3, epochs=4, batch_size=64, seed=3, lr=1e-2, weight_decay=0.1)
    ref = torch.nn.Linear(7, 3)
    torch.nn.init.zeros_(ref.weight)
    torch.nn.init.zeros_(ref.bias)
    opt = torch.optim.AdamW(ref.parameters(), lr=1e-2, weight_decay=0.1)
    gen = torch.Generator().manual_seed(3)  # the same shuffle
    for _ in range(4):
        order = torch.randperm(300, generator=gen)
        for start in range(0, 300, 64):
            i = order[start:start + 64]
            loss = torch.nn.functional.cross_entropy(ref(x[i]), y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
    torch.testing.assert_close(ours.weight, ref.weight.detach(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ours.bias, ref.bias.detach(), atol=1e-6, rtol=1e-5)


def test_geometry_summary_sees_small_strata_collapse():
    # class 0: strata 0 (big, far from its sibling) and 1 (small, close); class 1: strata 2 and 3
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.1, 0.0], [-1.0, 0.0, 1.0], [-1.0, 0.0, -1.0]])
    sizes = torch.tensor([50, 5, 50, 50])
    strata = torch.arange(4).repeat_interleave(sizes)
    z = centres[strata] + 0.01 * torch.randn(len(strata), 3, generator=g)
    out = geo.summary(z, strata // 2, strata)
    assert out["intra_class_cosine"] == pytest.approx(geo.intra_class_cosine(z, strata // 2))
    assert out["uniformity"] == pytest.approx(geo.uniformity(z))
    assert out["strata_size_distance_spearman"] > 0.5
    assert set(out) == {"intra_class_cosine", "cosine_to_class_centre", "uniformity",
                        "strata_centre_distance", "strata_size_distance_spearman"}
