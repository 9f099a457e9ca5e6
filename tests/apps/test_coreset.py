"""Coresets from strata difficulty (paper Section 5.3) and the forgetting / EL2N / GraNd baselines."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from spreadcon.apps.coreset import (
    bucket_keep_counts, class_quotas, difficulty_counts, random_coreset, save_indices,
    strata_coreset, top_score_coreset,
)
from spreadcon.apps.coreset_scores import (
    el2n_scores, forgetting_counts, grand_last_layer, grand_scores, logits_module, model_el2n,
)


def one_at_a_time(sizes, keep):
    """The rule as the paper states it: remove from the most populated bucket (ties: easiest)."""
    s = np.array(sizes)
    while s.sum() > keep:
        s[np.flatnonzero(s == s.max())[-1]] -= 1
    return s


def test_bucket_rule_by_hand():
    # buckets by count 0..3 (0 = never right, 3 = always right)
    assert bucket_keep_counts([2, 3, 5, 10], 16).tolist() == [2, 3, 5, 6]   # easy go first
    assert bucket_keep_counts([2, 3, 5, 10], 12).tolist() == [2, 3, 4, 3]   # level 4, tie: easiest loses
    assert bucket_keep_counts([2, 3, 5, 10], 4).tolist() == [1, 1, 1, 1]    # small: easy ones stay
    assert bucket_keep_counts([2, 3, 5, 10], 20).tolist() == [2, 3, 5, 10]
    assert bucket_keep_counts([2, 3, 5, 10], 0).tolist() == [0, 0, 0, 0]
    rng = np.random.default_rng(0)
    for _ in range(500):
        sizes = rng.integers(0, 15, rng.integers(1, 7))
        keep = int(rng.integers(0, sizes.sum() + 1))
        np.testing.assert_array_equal(bucket_keep_counts(sizes, keep), one_at_a_time(sizes, keep))


def test_strata_coreset_exact_sizes_and_per_class_rule():
    # class 0: 20 points, counts 3 x 12, 2 x 4, 0 x 4; class 1: 10 points, counts 3 x 2, 1 x 8
    labels = np.array([0] * 20 + [1] * 10)
    counts = np.array([3] * 12 + [2] * 4 + [0] * 4 + [3] * 2 + [1] * 8)
    idx = strata_coreset(counts, labels, 0.5, seed=0)        # 15 points: quotas 10 and 5
    assert len(idx) == 15 and len(set(idx)) == 15
    c0, c1 = counts[idx][labels[idx] == 0], counts[idx][labels[idx] == 1]
    # class 0: level 4 keeps 4 + 4 + 4 = 12, two too many: buckets 3 then 2 lose one each
    assert np.bincount(c0, minlength=4).tolist() == [4, 0, 3, 3]
    assert np.bincount(c1, minlength=4).tolist() == [0, 3, 0, 2]  # level 3 for bucket 1
    for size in (0.1, 0.3, 0.7, 0.9, 1.0):
        assert len(strata_coreset(counts, labels, size)) == round(size * 30)


def test_coresets_are_deterministic_and_nested():
    rng = np.random.default_rng(1)
    labels, counts = rng.integers(0, 3, 300), rng.integers(0, 10, 300)
    a = strata_coreset(counts, labels, 0.3, seed=5)
    np.testing.assert_array_equal(a, strata_coreset(counts, labels, 0.3, seed=5))
    assert not np.array_equal(a, strata_coreset(counts, labels, 0.3, seed=6))
    assert set(a) <= set(strata_coreset(counts, labels, 0.5, seed=5))
    np.testing.assert_array_equal(random_coreset(labels, 0.3, seed=2), random_coreset(labels, 0.3, seed=2))


def test_quotas_and_random_baseline():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    assert class_quotas(labels, 10).tolist() == [5, 3, 2]
    assert class_quotas(labels, 7).tolist() == [4, 2, 1]   # 3.5, 2.1, 1.4: largest remainders
    assert class_quotas(labels, 30, "equal").tolist() == [10, 10, 10]
    with pytest.raises(ValueError, match="class 2 has 20 points but 30"):
        class_quotas(labels, 90, "equal")
    idx = random_coreset(labels, 0.3, seed=0)
    assert np.bincount(labels[idx]).tolist() == [15, 9, 6]


def test_top_score_keeps_highest():
    scores = np.array([0.1, 5.0, 3.0, 3.0, 0.2, 4.0])
    picked = {tuple(top_score_coreset(scores, 0.5, seed=s).tolist()) for s in range(20)}
    assert picked == {(1, 2, 5), (1, 3, 5)}  # the tie at 3.0 is broken by the seed
    labels = np.array([0, 0, 0, 1, 1, 1])
    assert top_score_coreset(scores, 2 / 6, labels=labels).tolist() == [1, 5]


def test_bad_inputs():
    labels, counts = np.zeros(10, int), np.zeros(10, int)
    for bad in (0.0, -0.5, 1.01):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            strata_coreset(counts, labels, bad)
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            top_score_coreset(counts, bad)
    with pytest.raises(ValueError, match="one count per point"):
        strata_coreset(np.zeros(9, int), labels, 0.5)
    with pytest.raises(ValueError, match="one score per point"):
        top_score_coreset(np.zeros(9), 0.5, labels=labels)
    with pytest.raises(ValueError, match="runs, N"):
        difficulty_counts(np.zeros(5, bool))


def test_difficulty_counts():
    correct = np.array([[1, 0, 1], [1, 0, 0], [1, 1, 0]], bool)
    assert difficulty_counts(correct).tolist() == [3, 1, 1]


def test_forgetting_counts_by_hand():
    # presentations x examples
    h = np.array([[0, 1, 1, 0, 1],
                  [1, 0, 1, 0, 1],
                  [0, 1, 1, 0, 0],
                  [1, 0, 1, 0, 1]], bool)
    # ex0: 1->0 once (t2); ex1: 1->0 at t1, t3 -> 2; ex2: 0; ex3: never learned -> T = 4; ex4: 1
    assert forgetting_counts(h).tolist() == [1, 2, 0, 4, 1]
    assert forgetting_counts(np.stack([h, ~h])).tolist() == [1 + 2, 2 + 1, 0 + 4, 4 + 0, 1 + 1]


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()


def test_el2n_against_direct_computation():
    model = tiny_model()
    x = torch.randn(7, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    got = model_el2n(model, x, y)
    with torch.no_grad():
        p = torch.softmax(model(x).float(), -1).double()
    want = [np.linalg.norm(p[i].numpy() - np.eye(3)[y[i]]) for i in range(7)]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    logits = torch.randn(2, 7, 3, dtype=torch.float64)
    np.testing.assert_allclose(el2n_scores(logits, y), (el2n_scores(logits[0], y) + el2n_scores(logits[1], y)) / 2)


def test_grand_against_per_example_autograd():
    model = tiny_model()
    x = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([2, 0, 1, 1, 0])
    got = grand_scores(model, x, y, batch_size=2)
    want = []
    for i in range(5):
        model.zero_grad()
        nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        want.append(torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters())).item())
    np.testing.assert_allclose(got, want, rtol=1e-10)
    # closed form for the last linear layer alone
    head = model[2]
    with torch.no_grad():
        h = model[1](model[0](x))
    last = []
    for i in range(5):
        head.zero_grad()
        nn.functional.cross_entropy(head(h[i:i + 1]), y[i:i + 1]).backward()
        last.append(torch.sqrt((head.weight.grad ** 2).sum() + (head.bias.grad ** 2).sum()).item())
    with torch.no_grad():
        np.testing.assert_allclose(grand_last_layer(h, head(h), y), last, rtol=1e-10)
        np.testing.assert_allclose(grand_scores([model, model], x, y), want, rtol=1e-10)


def test_grand_of_a_classifier_ignores_the_unused_projection_head():
    # a Classifier's forward gives (embedding, logits); the projection head gets no CE gradient
    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body, self.proj, self.head = nn.Linear(4, 6), nn.Linear(6, 5), nn.Linear(6, 3)

        def forward(self, x):
            h = self.body(x).tanh()
            return self.proj(h), self.head(h)

    torch.manual_seed(0)
    model = TwoHeads().double()
    x = torch.randn(4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([2, 0, 1, 1])
    got = grand_scores(logits_module(model), x, y, prepare=lambda xb: 2 * xb)
    want = []
    for i in range(4):
        model.zero_grad()
        nn.functional.cross_entropy(model(2 * x[i:i + 1])[1], y[i:i + 1]).backward()
        want.append(torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters() if p.grad is not None)).item())
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_save_indices(tmp_path):
    npy, csv = save_indices(np.array([4, 1, 7]), tmp_path / "sub" / "strata_0.3_s0")
    assert npy.name == "strata_0.3_s0.npy" and csv.name == "strata_0.3_s0.csv"
    assert np.load(npy).tolist() == [4, 1, 7]
    assert csv.read_text().splitlines() == ["index", "4", "1", "7"]


def test_selector_follows_scikit_learn_conventions_and_matches_the_functions():
    from sklearn.base import clone

    from spreadcon.apps.coreset import CoresetSelector, random_coreset, strata_coreset, top_score_coreset

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    counts = rng.integers(0, 4, 300)
    sel = CoresetSelector(0.3, method="strata", random_state=4)
    assert clone(sel).get_params() == {"size": 0.3, "method": "strata", "random_state": 4}
    assert np.array_equal(sel.fit(counts, y).indices_, strata_coreset(counts, y, 0.3, seed=4))
    assert sel.mask_.sum() == len(sel.indices_) and np.array_equal(sel.transform(np.arange(300)), sel.indices_)
    top = CoresetSelector(0.3, method="top_score").fit(counts.astype(float), y)
    assert np.array_equal(top.indices_, top_score_coreset(counts, 0.3, labels=y, seed=0))
    assert np.array_equal(CoresetSelector(0.3, method="random").fit(None, y).indices_, random_coreset(y, 0.3, seed=0))
    with pytest.raises(ValueError, match="not finite"):
        CoresetSelector(0.3).fit(np.where(np.arange(300) == 5, np.nan, 1.0), y)
    with pytest.raises(ValueError, match="method"):
        CoresetSelector(0.3, method="magic").fit(counts, y)


# ------------------------------------------------------------------ `spreadcon apply coreset` on real runs
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny digits runs of 2 epochs; the first tracks examples and keeps its epoch-1 model."""
    from spreadcon.cli import main

    root = tmp_path_factory.mktemp("coreset_runs")
    tiny = ["train", "--dataset", "digits", "--encoder", "cnn-test", "--epochs", "2", "--no-progress",
            "--set", "tensorboard=false"]
    extra = {0: ["--set", "track_examples=true", "--set", "keep_checkpoints=[1]"], 1: []}
    for seed in (0, 1):
        assert main([*tiny, "--seed", str(seed), *extra[seed], "--out", str(root / f"run{seed}")]) == 0
    return [str(root / "run0"), str(root / "run1")]


def train_points(run_dir, checkpoint="last"):
    """(model, prepared train inputs [N, ...], train labels [N], train rows [N]) of a run."""
    from spreadcon.data import SPLITS, default_views
    from spreadcon.runs import load_run

    run = load_run(run_dir, checkpoint=checkpoint)
    index = torch.nonzero(run.dataset.split == SPLITS["train"]).squeeze(1)
    return run.model, default_views(run.dataset).prepare(run.dataset.x[index]), run.dataset.label[index], index


def test_apply_difficulty_through_the_cli(runs, tmp_path, capsys):
    from spreadcon.cli import main

    assert main(["apply", "coreset", *runs, "--size", "0.5", "--out", str(tmp_path / "c")]) == 0
    summary = json.loads((tmp_path / "c" / "coreset.json").read_text())
    idx = np.load(tmp_path / "c" / "coreset.npy")
    assert len(idx) == summary["n_kept"] == round(0.5 * summary["n_train"]) and len(set(idx.tolist())) == len(idx)
    counts = np.load(tmp_path / "c" / "difficulty.npy")
    assert counts.min() >= 0 and counts.max() <= 2 and len(summary["stamps"]) == 2
    assert summary["selector"]["method"] == "strata"
    capsys.readouterr()
    assert main(["apply", "coreset", runs[0], "--size", "1.5"]) == 2
    err = capsys.readouterr().err
    assert "coreset size must be a fraction in (0, 1]" in err and "Traceback" not in err


def test_apply_forgetting_through_the_cli(runs, tmp_path):
    from spreadcon.cli import main

    assert main(["apply", "coreset", runs[0], "--size", "0.5", "--score", "forgetting", "--out", str(tmp_path)]) == 0
    scores = np.load(tmp_path / "forgetting.npy")
    np.testing.assert_array_equal(scores, forgetting_counts(np.load(f"{runs[0]}/example_correct.npy")))
    summary = json.loads((tmp_path / "coreset.json").read_text())
    assert summary["score"] == "forgetting" and summary["selector"]["method"] == "top_score"
    _, _, labels, rows = train_points(runs[0])
    kept = np.isin(rows.numpy(), np.load(tmp_path / "coreset.npy"))   # coreset.npy: rows of the dataset
    for c in np.unique(labels):                      # the most forgotten of each class are kept
        in_c = labels.numpy() == c
        assert scores[in_c & kept].min() >= scores[in_c & ~kept].max(initial=-1)


def test_apply_grand_through_the_cli_matches_autograd(runs, tmp_path):
    from spreadcon.cli import main

    args = ["apply", "coreset", runs[0], "--size", "0.3", "--score", "grand", "--checkpoint", "1"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    scores = np.load(tmp_path / "grand.npy")
    model, x, y, _ = train_points(runs[0], checkpoint=1)    # the epoch-1 model: early in training
    for i in (0, 1, len(y) - 1):
        model.zero_grad()
        nn.functional.cross_entropy(model(x[i:i + 1])[1], y[i:i + 1]).backward()
        norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters() if p.grad is not None))
        assert scores[i] == pytest.approx(norm.item(), rel=1e-4)
    summary = json.loads((tmp_path / "coreset.json").read_text())
    assert summary["checkpoint"] == "1" and summary["n_kept"] == round(0.3 * len(y))


def test_apply_errors_say_what_to_do(runs, capsys):
    from spreadcon.cli import main

    capsys.readouterr()
    assert main(["apply", "coreset", *runs, "--size", "0.5", "--score", "forgetting"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{runs[1]} has no example_correct.npy" in err and "--set track_examples=true" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert main(["apply", "coreset", runs[0], "--size", "0.5", "--score", "grand", "--method", "strata"]) == 2
    assert "use --method top_score" in capsys.readouterr().err
