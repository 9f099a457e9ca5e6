"""The geometric noisy-label heuristic (paper Section 5.2): oracles, planted flips, edge batches."""

import math

import numpy as np
import pytest
import torch

from spreadcon.apps.noisy import (
    NoisyLabelCorrection, NoisyLabelCorrector, cleanlab_detect, correct_labels,
    detection_quality, mark_lowest, noisy_scores, relabel_to_nearest,
)


def planted(n=600, k=4, d=12, rate=0.2, seed=0, spread=4.0):
    """Separable Gaussian classes with exactly round(rate * n) labels flipped to another class."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(k, d)) * spread
    y = rng.integers(0, k, n)
    x = means[y] + rng.normal(size=(n, d))
    flip = rng.permutation(n)[: round(rate * n)]
    noisy_y = y.copy()
    noisy_y[flip] = (y[flip] + rng.integers(1, k, flip.size)) % k
    return x, y, noisy_y


def loop_scores(z, labels):
    """The score written straight from the definition, one view per image, float64."""
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    out = []
    for i in range(len(z)):
        same = [j for j in range(len(z)) if j != i and labels[j] == labels[i]]
        if not same:
            out.append(math.inf)
            continue
        centre = z[same].mean(0)
        own = z[i] @ centre / np.linalg.norm(centre)
        others = [np.mean([z[i] @ z[j] for j in range(len(z)) if labels[j] == c])
                  for c in sorted(set(labels)) if c != labels[i]]
        out.append(own - (np.mean(others) if others else 0.0))
    return np.array(out)


def test_scores_match_the_definition_including_singletons_and_absent_classes():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(9, 5))
    labels = np.array([0, 0, 0, 2, 2, 2, 2, 4, 0])  # classes 1, 3 absent; class 4 a singleton
    got = noisy_scores(torch.tensor(z), torch.tensor(labels), num_classes=6).numpy()
    want = loop_scores(z, labels)
    assert got[7] == math.inf
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_views_leave_the_whole_image_out_of_its_own_centre():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(6, 2, 4))
    labels = np.array([0, 0, 1, 1, 1, 0])
    zn = z / np.linalg.norm(z, axis=-1, keepdims=True)
    got = noisy_scores(torch.tensor(z), torch.tensor(labels)).numpy()
    for i in range(6):
        same = zn[[j for j in range(6) if j != i and labels[j] == labels[i]]].reshape(-1, 4)
        other = zn[labels != labels[i]].reshape(-1, 4)
        centre = same.mean(0) / np.linalg.norm(same.mean(0))
        want = np.mean([zn[i, v] @ centre - (other @ zn[i, v]).mean() for v in range(2)])
        assert got[i] == pytest.approx(want, abs=1e-12)


def test_finds_at_least_90_percent_of_planted_flips_at_the_known_rate():
    x, y, noisy_y = planted(rate=0.2)
    noisy = noisy_y != y
    c = NoisyLabelCorrector(noise_rate=noisy.mean()).fit(x, noisy_y)
    q = detection_quality(c.noisy_mask_, noisy)
    assert q["recall"] >= 0.9 and q["precision"] >= 0.9
    assert c.noisy_mask_.sum() == noisy.sum()
    assert (c.labels_ == y).mean() >= 0.98  # relabelled to the nearest centre = the true class
    # in training-sized random batches too
    cb = NoisyLabelCorrector(noise_rate=noisy.mean(), batch_size=128, random_state=3).fit(x, noisy_y)
    assert detection_quality(cb.noisy_mask_, noisy)["recall"] >= 0.9


def test_rate_zero_changes_nothing_and_bad_rates_raise():
    x, _, noisy_y = planted(n=100)
    c = NoisyLabelCorrector(0.0).fit(x, noisy_y)
    assert not c.noisy_mask_.any() and (c.labels_ == noisy_y).all()
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="noise rate"):
            NoisyLabelCorrector(bad).fit(x, noisy_y)
        with pytest.raises(ValueError, match="noise rate"):
            NoisyLabelCorrection(bad)
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        noisy_scores(torch.zeros(3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="labels must be"):
        noisy_scores(torch.zeros(3, 2), torch.zeros(4, dtype=torch.long))


def test_deterministic():
    x, _, noisy_y = planted(n=300, seed=4)
    a = NoisyLabelCorrector(0.2, batch_size=64, random_state=7).fit(x, noisy_y)
    b = NoisyLabelCorrector(0.2, batch_size=64, random_state=7).fit(x, noisy_y)
    assert (a.labels_ == b.labels_).all() and (a.noisy_mask_ == b.noisy_mask_).all()
    np.testing.assert_array_equal(a.scores_, b.scores_)


def test_mark_lowest_counts_and_ties():
    s = torch.tensor([3.0, 1.0, 1.0, math.inf, 0.0])
    assert mark_lowest(s, 0.4).tolist() == [False, True, False, False, True]
    assert mark_lowest(s, 0.0).sum() == 0
    assert mark_lowest(s, 0.99).tolist() == [True] * 5  # round(4.95) = 5: even +inf is marked


def test_edge_batches_never_nan():
    z = torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(0))
    # every image its own class: all singletons, nothing can be judged
    labels = torch.tensor([0, 1, 2, 3])
    new, mask, scores = correct_labels(z, labels, 0.25)
    assert torch.isinf(scores).all() and mask.sum() == 1 and not torch.isnan(scores).any()
    # one class only: the "other classes" term is 0, relabelling can only keep the class
    labels = torch.zeros(4, dtype=torch.long)
    new, mask, scores = correct_labels(z, labels, 0.5, num_classes=3)
    assert torch.isfinite(scores).all() and mask.sum() == 2 and (new == 0).all()
    # identical embeddings: scores 1 - 1 = 0, no NaN
    same = torch.ones(4, 1, 3)
    _, _, scores = correct_labels(same, torch.tensor([0, 0, 1, 1]), 0.5)
    assert torch.allclose(scores, torch.zeros(4), atol=1e-6)


def test_relabel_goes_to_nearest_trusted_centre_and_never_to_absent_classes():
    z = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.95, 0.05]])
    labels = torch.tensor([0, 0, 2, 2, 2])       # point 4 sits among class 0; class 1 absent
    mask = torch.tensor([False, False, False, False, True])
    assert relabel_to_nearest(z, labels, mask, num_classes=3).tolist() == [0, 0, 2, 2, 0]
    new, marked, _ = correct_labels(z, labels, 0.2, num_classes=3)
    assert marked.tolist() == mask.tolist() and new.tolist() == [0, 0, 2, 2, 0]


def test_callback_warmup_and_precision_recall_bookkeeping():
    x, y, noisy_y = planted(n=256, rate=0.25, seed=5)
    clean = torch.tensor(y)
    cb = NoisyLabelCorrection(0.25, warmup_steps=1, num_classes=4, clean_labels=clean)
    z = torch.tensor(x, dtype=torch.float32)[:, None, :].repeat(1, 2, 1)
    lab = torch.tensor(noisy_y)
    index = torch.arange(256)
    assert torch.equal(cb.relabel(0, z[:128], lab[:128], index[:128]), lab[:128])  # warm-up
    assert cb.summary() == {}
    marks, new = [], []
    for lo in (0, 128):
        sl = slice(lo, lo + 128)
        out = cb.relabel(1, z[sl], lab[sl], index[sl])
        new.append(out)
        marks.append(correct_labels(z[sl], lab[sl], 0.25, 4)[1])
    noisy = lab != clean
    marked = torch.cat(marks)
    expect = detection_quality(marked, noisy)
    resumed = NoisyLabelCorrection(0.25, warmup_steps=1, num_classes=4, clean_labels=clean)
    resumed.load_state_dict(cb.state_dict())  # what a checkpoint carries mid-epoch
    assert resumed.summary() == cb.summary()
    state = {"metrics": {}}
    cb.on_epoch_end(0, state)
    m = state["metrics"]
    assert m["noise_precision"] == pytest.approx(expect["precision"])
    assert m["noise_recall"] == pytest.approx(expect["recall"])
    assert m["noise_fixed"] == pytest.approx(float((torch.cat(new)[noisy] == clean[noisy]).float().mean()))
    assert m["noise_seen"] == 256 and cb.history[0]["epoch"] == 0
    assert cb.summary() == {}  # reset after the epoch


def test_detection_quality_by_hand():
    q = detection_quality(np.array([1, 1, 0, 0, 1], bool), np.array([1, 0, 1, 0, 1], bool))
    assert (q["tp"], q["fp"], q["fn"]) == (2, 1, 1)
    assert q["precision"] == pytest.approx(2 / 3) and q["recall"] == pytest.approx(2 / 3)
    q = detection_quality(np.zeros(3, bool), np.zeros(3, bool))
    assert q["precision"] == 1.0 and q["recall"] == 1.0


def test_cleanlab_baseline_detects_planted_flips():
    pytest.importorskip("cleanlab")
    x, y, noisy_y = planted(n=400, rate=0.2, seed=6)
    q = detection_quality(cleanlab_detect(x, noisy_y, seed=0), noisy_y != y)
    assert q["recall"] >= 0.8 and q["precision"] >= 0.8


def test_corrector_refuses_a_nan_cell_and_mismatched_lengths():
    x, _, noisy_y = planted(n=100)
    x[7, 3] = np.nan
    with pytest.raises(ValueError, match="1 rows with NaN or inf"):
        NoisyLabelCorrector(0.2).fit(x, noisy_y)
    x[7, 3] = 0.0
    with pytest.raises(ValueError, match="one id per row"):
        NoisyLabelCorrector(0.2).fit(x, noisy_y[:-1])
    with pytest.raises(ValueError, match="integer ids"):
        NoisyLabelCorrector(0.2).fit(x, noisy_y.astype(float))
    with pytest.raises(ValueError, match="non-negative"):
        NoisyLabelCorrector(0.2).fit(x, noisy_y - 1)
    with pytest.raises(ValueError, match="batch_size"):
        NoisyLabelCorrector(0.2, batch_size=0).fit(x, noisy_y)


def test_corrector_follows_scikit_learn_conventions():
    from sklearn.base import clone

    c = NoisyLabelCorrector(0.3, batch_size=64, random_state=2)
    assert c.get_params() == {"noise_rate": 0.3, "batch_size": 64, "random_state": 2}
    assert clone(c).get_params() == c.get_params()
    x, _, noisy_y = planted(n=200)
    assert np.array_equal(clone(c).fit(x, noisy_y).labels_, c.fit(x, noisy_y).labels_)


def test_apply_to_a_noisy_run_through_the_cli(tmp_path, capsys):
    import json

    from spreadcon.cli import main

    run_dir = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--encoder", "cnn-test", "--epochs", "1", "--no-progress",
                 "--set", "noise_rate=0.2", "--set", "tensorboard=false", "--out", str(run_dir)]) == 0
    assert main(["apply", "noisy", str(run_dir), "--rate", "0.2", "--out", str(tmp_path / "off")]) == 0
    summary = json.loads((tmp_path / "off" / "train_summary.json").read_text())
    n_train = len(np.load(run_dir / "embeddings" / "train.npz")["label"])
    assert summary["marked"] == round(0.2 * n_train) and summary["tp"] + summary["fp"] == summary["marked"]
    assert summary["stamp"]["file"] == "best.pt"
    csv = np.loadtxt(tmp_path / "off" / "train_corrected.csv", delimiter=",", skiprows=1)
    assert csv.shape == (n_train, 4) and csv[:, 3].sum() == summary["marked"]
    capsys.readouterr()
    assert main(["apply", "noisy", str(run_dir), "--rate", "1.5"]) == 2
    err = capsys.readouterr().err
    assert "noise rate must lie in [0, 1)" in err and "Traceback" not in err
