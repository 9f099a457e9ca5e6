"""DINO's weighted kNN probe and the retrieval metrics (precision@1, MAP@R) on frozen embeddings."""

import math

import numpy as np
import pytest
import torch

from spreadcon.evaluate.retrieval import knn_probe, knn_votes, retrieval_metrics


def on_circle(degrees, dtype=torch.float32):
    """Unit vectors [N, 2] at the given angles: cosine similarity is cos(angle difference)."""
    a = torch.deg2rad(torch.tensor(degrees, dtype=torch.float64))
    return torch.stack([a.cos(), a.sin()], 1).to(dtype)


# class A (0) at 0, 10, 45 degrees; class B (1) at 25, 90, 100 degrees (no tied distances within R)
ANGLES, LABELS = [0, 10, 25, 45, 90, 100], torch.tensor([0, 0, 1, 0, 1, 1])


def test_knn_by_hand_the_weights_decide():
    # a test point at 20 degrees: neighbours 25 (B, 5 deg), 10 (A, 10 deg), 0 (A, 20 deg)
    x, y, q = on_circle(ANGLES), LABELS, on_circle([20])
    assert knn_probe(x, y, q, torch.tensor([1]), k=1)["accuracy"] == 1.0   # nearest is B
    # k=3, T=0.07: A gets e^(cos10/T) + e^(cos20/T) = 1.97e6 > B's e^(cos5/T) = 1.52e6
    x64, q64 = on_circle(ANGLES, torch.float64), on_circle([20], torch.float64)
    votes = knn_votes(x64, y, q64, num_classes=2, k=3, temperature=0.07)
    c = [math.cos(math.radians(d)) / 0.07 for d in (5, 10, 20)]
    want = [math.exp(c[1]) + math.exp(c[2]), math.exp(c[0])]   # DINO's; ours is scaled by e^-(cos5/T)
    np.testing.assert_allclose(votes[0].tolist(), [w / math.exp(c[0]) for w in want], rtol=1e-12)
    assert knn_probe(x, y, q, torch.tensor([0]), k=3)["accuracy"] == 1.0
    # a colder temperature lets the single nearest neighbour outvote the two farther ones (and
    # exp(cos5 / 0.01) = e^99.6 would overflow float32 without the per-row shift)
    assert knn_probe(x, y, q, torch.tensor([1]), k=3, temperature=0.01)["accuracy"] == 1.0


def dino_loop(train_x, train_y, test_x, k, t, num_classes):
    """eval_knn.py's knn_classifier, one test row at a time, in float64: votes [M, C]."""
    train = torch.nn.functional.normalize(train_x.double(), dim=1)
    out = torch.zeros(len(test_x), num_classes, dtype=torch.float64)
    for m, row in enumerate(torch.nn.functional.normalize(test_x.double(), dim=1)):
        sims = [(float(train[n] @ row), int(train_y[n])) for n in range(len(train))]
        for sim, label in sorted(sims, reverse=True)[:k]:
            out[m, label] += math.exp(sim / t)
    return out


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_knn_against_the_dino_loop(dtype):
    g = torch.Generator().manual_seed(0)
    train_x, test_x = torch.randn(60, 5, generator=g), torch.randn(17, 5, generator=g)
    train_y, test_y = torch.randint(0, 4, (60,), generator=g), torch.randint(0, 4, (17,), generator=g)
    want = dino_loop(train_x, train_y, test_x, k=7, t=0.1, num_classes=4)
    unit = lambda t: torch.nn.functional.normalize(t.double(), dim=1)  # noqa: E731
    want = want / ((unit(test_x) @ unit(train_x).T).max(1, keepdim=True).values / 0.1).exp()  # knn_votes' row factor
    got = knn_votes(train_x.to(dtype), train_y, test_x.to(dtype), num_classes=4, k=7, temperature=0.1, batch_size=5)
    assert got.dtype == dtype
    np.testing.assert_allclose(got.double().numpy(), want.numpy(), rtol=1e-12 if dtype == torch.float64 else 1e-4)
    result = knn_probe(train_x.to(dtype), train_y, test_x.to(dtype), test_y, k=7, temperature=0.1, batch_size=4)
    assert result["accuracy"] == pytest.approx((want.argmax(1) == test_y).double().mean().item())
    assert {k: result[k] for k in ("k", "num_classes", "n_train", "n_test")} == {
        "k": 7, "num_classes": 4, "n_train": 60, "n_test": 17}


def test_knn_perfect_separation_and_k_clipped_to_n():
    g = torch.Generator().manual_seed(1)
    centres = torch.eye(3) * 10
    y_train, y_test = torch.arange(3).repeat(10), torch.arange(3).repeat_interleave(4)
    x_train = centres[y_train] + 0.1 * torch.randn(30, 3, generator=g)
    x_test = centres[y_test] + 0.1 * torch.randn(12, 3, generator=g)
    assert knn_probe(x_train, y_train, x_test, y_test)["accuracy"] == 1.0
    clipped = knn_probe(x_train[:5], y_train[:5], x_test, y_test, k=100)
    assert clipped["k"] == 5 and clipped == knn_probe(x_train[:5], y_train[:5], x_test, y_test, k=5)
    # numpy arrays are accepted as well
    assert knn_probe(x_train.numpy(), y_train.numpy(), x_test.numpy(), y_test.numpy())["accuracy"] == 1.0


def test_retrieval_by_hand_leave_one_out():
    # R = 2 for every query (the other two rows of its class); neighbours by angle:
    #   0: 10A 25B -> P@1 1, AP@R 1/2      10: 0A 25B -> 1, 1/2     25: 10A 45A -> 0, 0
    #  45: 25B 10A -> 0, (0 + 1/2)/2       90: 100B 45A -> 1, 1/2   100: 90B 45A -> 1, 1/2
    got = retrieval_metrics(on_circle(ANGLES), LABELS)
    assert got["precision_at_1"] == pytest.approx(4 / 6)
    assert got["mean_average_precision_at_r"] == pytest.approx((0.5 + 0.5 + 0 + 0.25 + 0.5 + 0.5) / 6)
    assert set(got) == {"precision_at_1", "mean_average_precision_at_r"}


def test_retrieval_by_hand_against_a_reference_set():
    # queries at 5 (A) and 95 (B); R = 3 references per class
    #   5: 0A 10A 25B -> P@1 1, AP@R (1 + 1 + 0)/3      95: 90B 100B 45A -> 1, 2/3
    got = retrieval_metrics(on_circle([5, 95]), torch.tensor([0, 1]), on_circle(ANGLES), LABELS, batch_size=1)
    assert got == pytest.approx({"precision_at_1": 1.0, "mean_average_precision_at_r": 2 / 3})


def test_on_real_digits_well_above_chance():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)                    # 1,797 8x8 images, raw pixels, 10 classes
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    assert knn_probe(x[:1000], y[:1000], x[1000:], y[1000:])["accuracy"] > 0.9
    got = retrieval_metrics(x[1000:], y[1000:], x[:1000], y[:1000])
    assert got["precision_at_1"] > 0.9 and 0.3 < got["mean_average_precision_at_r"] <= got["precision_at_1"]


def test_bad_input():
    x, y = torch.randn(6, 3), torch.tensor([0, 1, 0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"embeddings \[N, D\] and labels \[N\]"):
        knn_probe(x, y[:5], x, y)
    with pytest.raises(ValueError, match="differ in width"):
        knn_probe(x, y, x[:, :2], y)
    for k in (0, -1, 2.5):
        with pytest.raises(ValueError, match="integer k >= 1"):
            knn_probe(x, y, x, y, k=k)
    with pytest.raises(ValueError, match="temperature > 0"):
        knn_probe(x, y, x, y, temperature=0.0)
    with pytest.raises(ValueError, match="num_classes=1 but the labels go up to 1"):
        knn_probe(x, y, x, y, num_classes=1)
    with pytest.raises(ValueError, match="integer class indices"):
        knn_probe(x, y.float(), x, y)
    with pytest.raises(ValueError, match="finite"):
        retrieval_metrics(torch.full((6, 3), float("nan")), y)
    with pytest.raises(ValueError, match="both reference_x and reference_y"):
        retrieval_metrics(x, y, x)
    with pytest.raises(ValueError, match="differ in width"):
        retrieval_metrics(x, y, x[:, :2], y)
