"""Group DRO (spreadcon.apps.gdro): beats ERM where ERM relies on a spurious feature; metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spreadcon.apps.gdro import (
    GroupDRO, dro_step, evaluate, group_accuracies, weighted_average_accuracy, worst_group_accuracy,
    worst_group_auroc,
)


def spurious(n: int, seed: int, agree: float = 0.95, noise_dims: int = 3):
    """Binary task with a noisy core feature and a clean spurious one.

    x0 = (2y - 1) + N(0, 1)      core: the same in every group, ~84% accurate alone
    x1 = (2a - 1) + N(0, 0.1)    spurious attribute a, equal to y with probability `agree`
    Groups g = 2y + a. The Bayes classifier of the training distribution puts log-odds
    2 x0 + log(agree / (1 - agree)) sign(x1) (about 2 x0 +- 2.9): in the minority groups (a != y)
    it is right only when |x0| > 1.47 on the correct side, about 32% of the time. A classifier
    that ignores x1 gets ~84% in every group.
    `agree=0.5` gives a group-balanced set (the test distribution).
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    a = np.where(rng.random(n) < agree, y, 1 - y)
    X = np.column_stack([
        (2 * y - 1) + rng.normal(size=n),
        (2 * a - 1) + 0.1 * rng.normal(size=n),
        0.1 * rng.normal(size=(n, noise_dims)),
    ])
    return X, y, 2 * y + a


@pytest.fixture(scope="module")
def data():
    return {"train": spurious(2000, 0), "val": spurious(1000, 1), "test": spurious(2000, 2, agree=0.5)}


def fit(data, **kwargs):
    X, y, g = data["train"]
    Xv, yv, gv = data["val"]
    kwargs.setdefault("epochs", 20)
    return GroupDRO(**kwargs).fit(X, y, g, X_val=Xv, y_val=yv, groups_val=gv)


def test_group_dro_beats_erm_on_the_worst_group(data):
    Xt, yt, gt = data["test"]
    erm = fit(data, robust=False, select_by="average")
    dro = fit(data, robust=True, eta=0.1)
    erm_worst = worst_group_accuracy(yt, erm.predict(Xt), gt)
    dro_worst = worst_group_accuracy(yt, dro.predict(Xt), gt)
    assert erm_worst < 0.5          # ERM leans on the spurious feature (theory: ~0.32)
    assert dro_worst > 0.75         # Group DRO uses the core feature (theory: ~0.84)
    w_erm, w_dro = erm.linear_.weight.detach(), dro.linear_.weight.detach()
    ratio = lambda w: float((w[1, 1] - w[0, 1]).abs() / (w[1, 0] - w[0, 0]).abs())  # spurious / core
    assert ratio(w_erm) > 0.5 > 3 * ratio(w_dro)
    # q puts far more than their 5% share of the data on the minority groups (1 and 2: a != y)
    assert dro.q_[[1, 2]].sum() > 0.3


def test_group_size_adjustment_moves_weight_to_small_groups(data):
    plain = fit(data, eta=0.1, epochs=3)
    adjusted = fit(data, eta=0.1, epochs=3, adjustment=4.0)
    small = [1, 2]
    assert adjusted.q_[small].sum() > plain.q_[small].sum()


def test_same_seed_same_model_and_different_seed_differs(data):
    a = fit(data, epochs=3, random_state=7).linear_.weight.detach()
    b = fit(data, epochs=3, random_state=7).linear_.weight.detach()
    c = fit(data, epochs=3, random_state=8).linear_.weight.detach()
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_global_torch_generator_untouched(data):
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    fit(data, epochs=1)
    assert torch.equal(torch.rand(3), expected)


def test_model_selection_keeps_the_best_validation_epoch(data):
    model = fit(data, eta=0.1, epochs=10)
    scores = [h["val_worst_group_accuracy"] for h in model.history_]
    assert model.best_epoch_ == int(np.argmax(scores)) and model.best_score_ == max(scores)
    Xv, yv, gv = data["val"]
    assert worst_group_accuracy(yv, model.predict(Xv), gv) == pytest.approx(max(scores))


def test_dro_step_matches_the_update_by_hand():
    q = torch.tensor([0.5, 0.25, 0.25])
    losses = torch.tensor([1.0, 3.0, 2.0, 0.5])
    groups = torch.tensor([0, 0, 1, 1])          # group 2 absent: its loss counts as 0
    adjust = torch.tensor([0.0, 0.1, 0.2])
    new_q, loss = dro_step(q, losses, groups, eta=0.5, adjust=adjust)
    mean = np.array([2.0, 1.25, 0.0])
    expected = np.array([0.5, 0.25, 0.25]) * np.exp(0.5 * (mean + [0.0, 0.1, 0.2]))
    expected /= expected.sum()
    assert np.allclose(new_q.numpy(), expected)
    assert loss.item() == pytest.approx(float(expected @ mean))


def test_metrics_on_a_hand_made_example():
    y_true = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    y_pred = np.array([0, 0, 0, 1, 1, 1, 0, 0])
    groups = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    assert group_accuracies(y_true, y_pred, groups) == {0: 1.0, 1: 0.5, 2: 1.0, 3: 0.0}
    assert worst_group_accuracy(y_true, y_pred, groups) == 0.0
    train_groups = np.array([0] * 6 + [1] * 2 + [2] * 1 + [3] * 1)   # proportions .6 .2 .1 .1
    assert weighted_average_accuracy(y_true, y_pred, groups, train_groups) == pytest.approx(0.6 + 0.1 + 0.1)


def test_worst_group_auroc_scores_each_group_against_the_other_class():
    y = np.array([0, 0, 0, 0, 1, 1])
    groups = np.array([0, 0, 1, 1, 2, 2])
    scores = np.array([0.1, 0.2, 0.7, 0.9, 0.8, 0.6])
    # group 0 (0.1, 0.2) vs class 1 (0.8, 0.6): 4 of 4 pairs ordered -> 1
    # group 1 (0.7, 0.9) vs class 1 (0.8, 0.6): only 0.8 > 0.7 -> 1/4
    # group 2 (0.8, 0.6) vs class 0 (0.1, 0.2, 0.7, 0.9): 3 + 2 of 8 -> 5/8
    assert worst_group_auroc(y, scores, groups) == pytest.approx(0.25)
    out = evaluate(y, np.column_stack([1 - scores, scores]), groups, train_groups=groups)
    assert out["worst_group_auroc"] == pytest.approx(0.25)
    assert out["auroc"] == pytest.approx(5 / 8)  # 0.8 beats 3 of 4, 0.6 beats 2 of 4


# --- bad input -------------------------------------------------------------------------------
def test_single_class(data):
    X, y, g = data["train"]
    with pytest.raises(ValueError, match="single class"):
        GroupDRO().fit(X[y == 0], y[y == 0], g[y == 0])


def test_nan_embeddings(data):
    X, y, g = data["train"]
    X = X.copy()
    X[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        GroupDRO().fit(X, y, g)


def test_groups_that_do_not_match_the_data(data):
    X, y, g = data["train"]
    Xv, yv, gv = data["val"]
    with pytest.raises(ValueError, match="groups has shape"):
        GroupDRO().fit(X, y, g[:-5])
    with pytest.raises(ValueError, match="groups_val has shape"):
        GroupDRO().fit(X, y, g, X_val=Xv, y_val=yv, groups_val=gv[:10])
    with pytest.raises(ValueError, match="needs groups"):
        GroupDRO(robust=True).fit(X, y)
    with pytest.raises(ValueError, match="integer ids"):
        GroupDRO().fit(X, y, g.astype(float))
    with pytest.raises(ValueError, match="features"):
        GroupDRO(epochs=1).fit(X, y, g).predict(X[:, :2])
