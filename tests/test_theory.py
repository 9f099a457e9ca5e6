"""The paper's closed forms (Appendix C.2, Lemma 3) against simulation, and the Section 4.1 plot."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spreadcon import theory


# --- Appendix C.2 ------------------------------------------------------------------------------
@pytest.mark.parametrize("p_z,p_z2", [(0.24, 0.02), (0.5, 0.5), (0.1, 0.3), (0.0, 0.2)])
def test_presence_probabilities_sum_to_one_and_are_probabilities(p_z, p_z2):
    n = np.array([0, 1, 5, 50, 2000])
    probs = theory.presence_probabilities(p_z, p_z2, n)
    assert set(probs) == set(theory.CASES)
    total = sum(probs.values())
    np.testing.assert_allclose(total, 1.0, atol=1e-12)
    for v in probs.values():
        assert np.all(v >= -1e-12) and np.all(v <= 1 + 1e-12)
    assert probs["neither"][0] == 1.0  # an empty subsample contains nothing


def test_presence_probabilities_closed_form_by_hand():
    # n = 1 draw: exactly one stratum or neither; both is impossible.
    probs = theory.presence_probabilities(0.3, 0.2, 1)
    assert probs["both"] == pytest.approx(0.0, abs=1e-15)
    assert probs["only_z"] == pytest.approx(0.3)
    assert probs["only_z2"] == pytest.approx(0.2)
    assert probs["neither"] == pytest.approx(0.5)
    # n = 2: both = 2 p p' (one draw each, either order)
    assert theory.presence_probabilities(0.3, 0.2, 2)["both"] == pytest.approx(2 * 0.3 * 0.2)


@pytest.mark.parametrize("n", [5, 20, 100])
def test_presence_probabilities_match_simulated_subsamples(n):
    p = np.array([0.24, 0.24, 0.02, 0.24, 0.24, 0.02])
    trials = 20000
    freq = theory.simulate_presence(p, 0, 2, n, trials=trials, seed=n)
    closed = theory.presence_probabilities(p[0], p[2], n)
    for case in theory.CASES:
        sd = math.sqrt(max(closed[case] * (1 - closed[case]), 1e-4) / trials)
        assert abs(freq[case] - closed[case]) < 5 * sd, (case, freq[case], closed[case])


def test_subsampling_a_finite_training_set_approaches_the_iid_model():
    p = np.array([0.45, 0.05, 0.5])
    closed = theory.presence_probabilities(p[0], p[1], 40)
    freq = theory.simulate_presence(p, 0, 1, 40, trials=20000, seed=1, population=100_000)
    assert freq["both"] == pytest.approx(closed["both"], abs=0.02)
    # without replacement from a small set, presence is strictly likelier than i.i.d. draws
    small = theory.simulate_presence(p, 0, 1, 40, trials=20000, seed=1, population=100)
    assert small["both"] > closed["both"] + 0.05


def test_simulation_is_seeded():
    p = [0.5, 0.3, 0.2]
    assert theory.simulate_presence(p, 0, 2, 7, seed=3) == theory.simulate_presence(p, 0, 2, 7, seed=3)


@pytest.mark.parametrize("bad", [dict(p_z=0.7, p_z2=0.5, n=3), dict(p_z=-0.1, p_z2=0.5, n=3),
                                 dict(p_z=0.1, p_z2=0.5, n=-1)])
def test_presence_probabilities_reject_bad_input(bad):
    with pytest.raises(ValueError):
        theory.presence_probabilities(**bad)


def test_simulate_presence_rejects_bad_input():
    with pytest.raises(ValueError, match="probability vector"):
        theory.simulate_presence([0.5, 0.6], 0, 1, 3)
    with pytest.raises(ValueError, match="different strata"):
        theory.simulate_presence([0.5, 0.5], 1, 1, 3)


# --- Lemma 3 -----------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [2, 3, 10])
def test_simplex_is_regular_and_centred(k):
    v = theory.simplex(k)
    gram = v @ v.T
    expected = torch.full((k, k), -1.0 / (k - 1), dtype=torch.float64).fill_diagonal_(1.0)
    torch.testing.assert_close(gram, expected)
    torch.testing.assert_close(v.sum(0), torch.zeros(k, dtype=torch.float64))


def test_bounds_by_hand():
    # K = 2: c_K = -1, original task: log(e + e^-1) - 1
    assert theory.original_task_bound(2) == pytest.approx(math.log(math.e + math.exp(-1)) - 1)
    # K = 10, m = 5 strata per class (C = 50): log(5e + 45 e^{-1/9}) - 1
    assert theory.coarse_to_fine_bound(10, 5) == pytest.approx(math.log(5 * math.e + 45 * math.exp(-1 / 9)) - 1)
    # more strata per class cannot be told apart by collapsed embeddings: the bound grows like log m
    assert theory.coarse_to_fine_bound(10, 5) > theory.coarse_to_fine_bound(10, 1) + math.log(5) - 0.1


@pytest.mark.parametrize("k,m", [(2, 1), (2, 3), (10, 1), (10, 5), (20, 5)])
def test_collapsed_embeddings_reach_the_bound_with_deterministic_labels(k, m):
    bound = theory.coarse_to_fine_bound(k, m) if m > 1 else theory.original_task_bound(k)
    assert theory.collapsed_error(k, m) == pytest.approx(bound, rel=1e-12)


@pytest.mark.parametrize("k,m", [(2, 3), (10, 1), (5, 4)])
def test_no_norm_bounded_classifier_beats_the_bound(k, m):
    # Lemma 4: W_z = v_S(z) is optimal under ||W_z|| <= 1; a fitted classifier lands on the bound
    fitted = theory.collapsed_error(k, m, fit_classifier=True, steps=200, n_per_stratum=1)  # exact: p = 1
    bound = theory.coarse_to_fine_bound(k, m)
    assert fitted >= bound - 1e-6
    assert fitted == pytest.approx(bound, abs=1e-3)


@pytest.mark.parametrize("p_correct", [0.9, 0.6, 0.0])
def test_noisy_labels_raise_the_error_as_the_proof_says(p_correct):
    k, m = 4, 3
    measured = theory.collapsed_error(k, m, p_correct=p_correct, n_per_stratum=4000, seed=0)
    exact = theory.collapsed_exact_error(k, m, p_correct)
    assert measured >= theory.coarse_to_fine_bound(k, m)
    # sampling error of the wrong-label fraction, scaled by (1 - c_K)
    sd = (1 - theory.simplex_dot(k)) * math.sqrt(p_correct * (1 - p_correct) / (k * m * 4000))
    assert abs(measured - exact) < 5 * sd + 1e-12
    # the upper end of Lemma 3's proof: at p_correct = 0 the error is log(...) - c_K
    if p_correct == 0.0:
        assert measured == pytest.approx(theory.coarse_to_fine_bound(k, m) + 1 - theory.simplex_dot(k))


def test_lemma3_rejects_bad_input():
    with pytest.raises(ValueError):
        theory.simplex(1)
    with pytest.raises(ValueError):
        theory.coarse_to_fine_bound(3, 0)
    with pytest.raises(ValueError):
        theory.collapsed_error(3, 2, p_correct=1.5)


# --- Section 4.1 -------------------------------------------------------------------------------
def test_strata_model_probabilities_and_samples():
    model = theory.StrataModel(num_classes=3, within=(0.5, 0.3, 0.2), seed=1)
    assert model.p.sum() == pytest.approx(1.0)
    x, y, s = model.sample(3000, torch.Generator().manual_seed(0))
    assert x.shape == (3000, model.dim) and x.dtype == torch.float32
    torch.testing.assert_close(y, s // 3)
    freq = torch.bincount(s, minlength=9).double() / 3000
    np.testing.assert_allclose(freq.numpy(), model.p, atol=0.03)


def test_strata_centre_distance_by_hand():
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    stratum = torch.tensor([0, 0, 1, 1])
    assert theory.strata_centre_distance(emb, stratum, 0, 1) == pytest.approx(math.sqrt(1 + 4))


def test_thought_experiment_rows_record_the_subsample_case_and_plot(tmp_path):
    pytest.importorskip("spreadcon.losses")
    rows = theory.thought_experiment((0.01, 1.0), losses=("supcon",), seeds=(0,), steps=5, n_train=400,
                                     n_eval_per_stratum=20)
    assert len(rows) == 2 * 2  # fractions x pairs
    assert {r["pair"] for r in rows} == {"common-common", "common-rare"}
    full = [r for r in rows if r["t"] == 1.0]
    assert all(r["case"] == "both" for r in full)  # the whole training set holds every stratum
    assert all(0 <= r["delta"] <= 2 for r in rows)  # centres of unit vectors are in the unit ball
    # seeded: the same call gives the same numbers
    again = theory.thought_experiment((0.01, 1.0), losses=("supcon",), seeds=(0,), steps=5, n_train=400,
                                      n_eval_per_stratum=20)
    assert [r["delta"] for r in rows] == [r["delta"] for r in again]
    path = theory.plot_thought_experiment(rows, tmp_path / "fig" / "thought.png", n_train=400, trials=200)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tables_for_the_reproduce_command():
    rows = theory.lemma3_table(((3, 2),), (1.0,))
    assert len(rows) == 1 and rows[0]["task"] == "coarse-to-fine"
    assert rows[0]["measured"] == pytest.approx(rows[0]["bound"]) == pytest.approx(rows[0]["exact"])
    assert rows[0]["measured_fitted_W"] == pytest.approx(rows[0]["bound"], abs=1e-3)
    p = theory.StrataModel().p
    table = theory.presence_table(p, {"common-rare": (0, 2)}, (0.01, 0.1), 2000, trials=2000)
    assert len(table) == 2 * len(theory.CASES)
    for t in (0.01, 0.1):
        part = [r for r in table if r["t"] == t]
        assert sum(r["closed_form"] for r in part) == pytest.approx(1.0)
        assert sum(r["simulated_iid"] for r in part) == pytest.approx(1.0)


def test_one_generative_model_for_theory_and_the_strata_dataset():
    from spreadcon.data import load
    from spreadcon.data.synthetic import StrataModel

    assert theory.StrataModel is StrataModel  # Section 2.1 exists once
    ds = load("strata", seed=4, K=3, m=2, d=5, stratum_sep=2.0, stratum_probs=[3.0, 1.0])
    model = StrataModel(num_classes=3, within=(3.0, 1.0), dim=5, stratum_sep=2.0, seed=4)
    np.testing.assert_allclose(model.means.numpy(), np.array(ds.meta["centres"]), atol=1e-6)
    np.testing.assert_allclose(model.p, ds.meta["stratum_probs"], atol=1e-6)
    np.testing.assert_allclose(model.p, [0.25, 1 / 12] * 3)
    # the strata of one class sit at stratum_sep around a class centre of norm class_sep
    centres = model.means.view(3, 2, 5)
    gap = (centres[:, 0] - centres[:, 1]).norm(dim=1)
    assert (gap <= 2 * 2.0 + 1e-9).all() and (gap > 0).all()
    assert theory.section41_model().within == (0.48, 0.48, 0.04)
    for bad in ({"num_classes": 1}, {"within": (1.0, 0.0)}, {"stratum_sep": -1.0}, {"dim": True}):
        with pytest.raises(ValueError):
            StrataModel(**bad)
