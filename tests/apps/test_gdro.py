"""Group DRO: the online objective (spreadcon.group_dro), the linear end model (spreadcon.apps.gdro),
and the group metrics (spreadcon.evaluate.metrics)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from spreadcon.apps.gdro import GroupDRO
from spreadcon.evaluate.metrics import (
    group_accuracy, group_auroc, group_metrics, weighted_average_accuracy, worst_group_accuracy, worst_group_auroc,
)
from spreadcon.group_dro import group_dro_loss, size_adjustment


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
    erm_worst = worst_group_accuracy(erm.predict(Xt), yt, gt)
    dro_worst = worst_group_accuracy(dro.predict(Xt), yt, gt)
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
    assert worst_group_accuracy(model.predict(Xv), yv, gv) == pytest.approx(max(scores))


def test_group_dro_loss_matches_the_update_by_hand():
    q = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    losses = torch.tensor([1.0, 3.0, 2.0, 0.5], dtype=torch.float64, requires_grad=True)
    groups = torch.tensor([0, 0, 1, 1])          # group 2 absent: its loss counts as 0
    adjust = torch.tensor([0.0, 0.1, 0.2], dtype=torch.float64)
    loss, new_q = group_dro_loss(losses, groups, q, eta=0.5, adjustment=adjust)
    mean = np.array([2.0, 1.25, 0.0])
    expected = np.array([0.5, 0.25, 0.25]) * np.exp(0.5 * (mean + [0.0, 0.1, 0.2]))
    expected /= expected.sum()
    assert np.allclose(new_q.numpy(), expected) and not new_q.requires_grad
    assert loss.item() == pytest.approx(float(expected @ mean))
    loss.backward()  # d loss / d loss_i = q_g(i) / n_g(i) in the batch
    assert np.allclose(losses.grad.numpy(), [expected[0] / 2] * 2 + [expected[1] / 2] * 2)


def test_group_dro_loss_stays_finite_for_huge_losses():
    q = torch.full((2,), 0.5, dtype=torch.float64)
    loss, new_q = group_dro_loss(torch.tensor([1e6, 0.0], dtype=torch.float64), torch.tensor([0, 1]), q, eta=10.0)
    assert torch.isfinite(new_q).all() and new_q[0] == pytest.approx(1.0) and torch.isfinite(loss)


def test_size_adjustment_is_c_over_sqrt_n():
    assert np.allclose(size_adjustment(torch.tensor([4, 100, 1]), 2.0).numpy(), [1.0, 0.2, 2.0])
    with pytest.raises(ValueError, match="finite and >= 0"):
        size_adjustment(torch.tensor([4]), float("nan"))


@pytest.mark.parametrize("eta", [0.0, -1.0, 1e6, float("nan"), float("inf"), True])
def test_eta_must_be_finite_and_at_most_ten(eta, data):
    X, y, g = data["train"]
    with pytest.raises(ValueError, match="eta"):
        GroupDRO(eta=eta).fit(X, y, g)
    with pytest.raises(ValueError, match="eta"):
        group_dro_loss(torch.zeros(2), torch.tensor([0, 1]), torch.full((2,), 0.5), eta=eta)


def test_group_balanced_sampling_draws_groups_equally():
    model = GroupDRO(reweight_groups=True, batch_size=10_000)
    model.group_counts_ = np.array([9000, 1000])
    g = torch.as_tensor(np.repeat([0, 1], [9000, 1000]))
    (batch,) = model._batches(g, torch.Generator().manual_seed(0))
    share = float((g[batch] == 1).double().mean())
    assert len(batch) == 10_000 and 0.47 < share < 0.53     # 10% of the data, half the draws


def test_group_balanced_sampling_helps_erm_on_the_worst_group(data):
    Xt, yt, gt = data["test"]
    plain = fit(data, robust=False, select_by="worst_group")
    balanced = fit(data, robust=False, select_by="worst_group", reweight_groups=True)
    assert worst_group_accuracy(balanced.predict(Xt), yt, gt) > worst_group_accuracy(plain.predict(Xt), yt, gt) + 0.2


def test_scikit_learn_conventions(data):
    X, y, g = data["train"]
    model = GroupDRO(eta=0.05, adjustment=2.0, epochs=2, random_state=3)
    params = model.get_params()
    assert params["eta"] == 0.05 and params["adjustment"] == 2.0 and params["mode"] == "linear-frozen"
    copy = clone(model)
    assert copy.get_params() == params and copy is not model
    with pytest.raises(NotFittedError):
        model.predict(X)
    fitted = model.fit(X, y, g)
    assert fitted is model and model.score(X, y) > 0.5
    with pytest.raises(ValueError, match="mode"):
        GroupDRO(mode="network").fit(X, y, g)


def test_validation_groups_missing_a_training_group_are_named(data):
    X, y, g = data["train"]
    Xv, yv, gv = data["val"]
    keep = gv != 1
    with pytest.warns(UserWarning, match=r"groups \[1\] of the training set have no members in the validation"):
        model = GroupDRO(epochs=1).fit(X, y, g, X_val=Xv[keep], y_val=yv[keep], groups_val=gv[keep])
    assert model.unscored_groups_ == [1]


def test_metrics_on_a_hand_made_example():
    y_true = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    y_pred = np.array([0, 0, 0, 1, 1, 1, 0, 0])
    groups = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    assert group_accuracy(y_pred, y_true, groups) == {0: 1.0, 1: 0.5, 2: 1.0, 3: 0.0}
    assert worst_group_accuracy(y_pred, y_true, groups) == 0.0
    train_groups = np.array([0] * 6 + [1] * 2 + [2] * 1 + [3] * 1)   # proportions .6 .2 .1 .1
    assert weighted_average_accuracy(y_pred, y_true, groups, train_group=train_groups) == pytest.approx(0.6 + 0.1 + 0.1)
    with pytest.raises(ValueError, match=r"groups \[3\] of the evaluation set have no members in train_group"):
        weighted_average_accuracy(y_pred, y_true, groups, train_group=train_groups[train_groups != 3])


def test_group_auroc_scores_each_group_against_the_other_class():
    y = np.array([0, 0, 0, 0, 1, 1])
    groups = np.array([0, 0, 1, 1, 2, 2])
    scores = np.array([0.1, 0.2, 0.7, 0.9, 0.8, 0.6])
    # group 0 (0.1, 0.2) vs class 1 (0.8, 0.6): 4 of 4 pairs ordered -> 1
    # group 1 (0.7, 0.9) vs class 1 (0.8, 0.6): only 0.8 > 0.7 -> 1/4
    # group 2 (0.8, 0.6) vs class 0 (0.1, 0.2, 0.7, 0.9): 3 + 2 of 8 -> 5/8
    assert group_auroc(scores, y, groups) == pytest.approx({0: 1.0, 1: 0.25, 2: 5 / 8})
    assert worst_group_auroc(scores, y, groups) == pytest.approx(0.25)
    probs = np.column_stack([1 - scores, scores])
    out = group_metrics(probs, y, groups, train_group=groups)
    assert out["worst_group_auroc"] == pytest.approx(0.25)
    assert out["auroc"] == pytest.approx(5 / 8)  # 0.8 beats 3 of 4, 0.6 beats 2 of 4
    assert out["accuracy"] == pytest.approx(4 / 6) and out["worst_group_accuracy"] == 0.0
    assert out["average_accuracy"] == pytest.approx(4 / 6)  # train proportions = test proportions


# --- bad input -------------------------------------------------------------------------------
def test_single_class(data):
    X, y, g = data["train"]
    with pytest.raises(ValueError, match="single class"):
        GroupDRO().fit(X[y == 0], y[y == 0], g[y == 0])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_embeddings(data, bad):
    X, y, g = data["train"]
    X = X.copy()
    X[0, 0] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        GroupDRO().fit(X, y, g)
    with pytest.raises(ValueError, match="X_val has 1 rows with NaN"):
        GroupDRO().fit(X[1:], y[1:], g[1:], X_val=X, y_val=y, groups_val=g)


@pytest.mark.parametrize("key, value", [("lr", float("nan")), ("adjustment", -1.0), ("weight_decay", float("inf")),
                                        ("epochs", 0), ("batch_size", True), ("select_by", "best")])
def test_bad_parameters(data, key, value):
    X, y, g = data["train"]
    with pytest.raises(ValueError, match=key):
        GroupDRO(**{key: value}).fit(X, y, g)


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
