"""Bad input to the estimators of spreadcon.apps, and failed applies that must leave nothing behind
(issue 25). One checker (`spreadcon.apps.checks`) serves every public fit / transform / predict:
each refusal is one ValueError line that names the argument."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from spreadcon.apps.gdro import GroupDRO
from spreadcon.apps.gdro_network import NetworkGroupDRO
from spreadcon.apps.noisy import NoisyLabelCorrector
from spreadcon.apps.robustness import robustness
from spreadcon.apps.strata import StrataRecovery, recovery_scores

RNG = np.random.default_rng(0)
X = np.concatenate([RNG.normal(size=(30, 3)), RNG.normal(size=(30, 3)) + 4])
Y = np.repeat([0, 1], 30)

FITS = {
    "strata": lambda X, y: StrataRecovery(reducer=None, clusterer="kmeans", k_range=(2, 2), n_init=1).fit(X, y),
    "gdro": lambda X, y: GroupDRO(epochs=1).fit(X, y, np.zeros(len(np.asarray(y)), np.int64)
                                             if np.ndim(y) == 1 else y),
    "noisy": lambda X, y: NoisyLabelCorrector(0.1).fit(X, y),
}


@pytest.mark.parametrize("fit", FITS)
@pytest.mark.parametrize("X_bad, y_bad, phrase", [
    (np.zeros((0, 3)), np.zeros(0, np.int64), r"X has 0 rows; pass at least 1 embedding"),
    (np.zeros(6), np.zeros(6, np.int64), r"X must be a 2-D array \[N, D\] of embeddings, got shape \(6,\)"),
    (np.zeros((6, 0)), np.zeros(6, np.int64), r"X has shape \(6, 0\): each row needs at least one feature"),
    (np.array([["a", "b"]] * 6), np.zeros(6, np.int64), r"X must hold real numbers \(embeddings\), got dtype <U1"),
    ([[1.0, 2.0], [3.0]], np.zeros(2, np.int64), r"X is not an array numpy can read"),
    (X, Y[:, None], r"y has shape \(60, 1\) but the embeddings have 60 rows, so it must be \(60,\); pass y\.ravel\(\)"),
    (X, Y[:-1], r"y has shape \(59,\) .* pass one id per row"),
    (X, Y * 1.0, r"y must hold integer ids, got dtype float64; pass y\.astype\(int\)"),
    (X, Y - 1, r"y must hold non-negative ids 0, 1, \.\.\., but row 0 holds -1"),
    (np.where(np.arange(180).reshape(60, 3) == 7, np.inf, X), Y, r"X has 1 rows with NaN or inf"),
])
def test_every_fit_checks_its_inputs_with_one_line_naming_the_argument(fit, X_bad, y_bad, phrase):
    with pytest.raises(ValueError, match=phrase) as err:
        FITS[fit](X_bad, y_bad)
    assert "\n" not in str(err.value)


def test_strata_recovery_on_zero_rows_and_on_new_points_of_another_width():
    with pytest.raises(ValueError, match="X has 0 rows"):
        StrataRecovery().fit(np.zeros((0, 4)), np.zeros(0, np.int64))
    with pytest.raises(ValueError, match=r"X must be a 2-D array \[N, D\] of embeddings, got shape \(0,\)"):
        StrataRecovery().fit([], [])
    rec = FITS["strata"](torch.tensor(X, requires_grad=True), torch.tensor(Y))  # tensors with grad are read
    for method in (rec.predict, rec.transform):
        with pytest.raises(ValueError, match="X has 4 features but the model was fitted on 3"):
            method(np.zeros((2, 4)), np.array([0, 1]))
        with pytest.raises(ValueError, match="X has 0 rows"):
            method(np.zeros((0, 3)), np.zeros(0, np.int64))
    with pytest.raises(ValueError, match=r"true must be a 1-d array of strata ids with at least one row"):
        recovery_scores([], [])
    assert recovery_scores([0, 0, 1], [-1, -1, 0])["f1"] == 1.0  # a clusterer's -1 (noise) is a cluster id


def test_group_dro_checks_groups_and_validation_arrays():
    with pytest.raises(ValueError, match="groups must hold non-negative ids"):
        GroupDRO(epochs=1).fit(X, Y, Y - 1)
    with pytest.raises(ValueError, match="y_val / groups_val were given without X_val"):
        GroupDRO(epochs=1).fit(X, Y, Y, y_val=Y)
    with pytest.raises(ValueError, match="X_val needs y_val"):
        GroupDRO(epochs=1).fit(X, Y, Y, X_val=X)
    with pytest.raises(ValueError, match="X_val has 2 features but the model was fitted on 3"):
        GroupDRO(epochs=1).fit(X, Y, Y, X_val=X[:, :2], y_val=Y, groups_val=Y)
    with pytest.raises(ValueError, match=r"groups_val has shape \(59,\)"):
        GroupDRO(epochs=1, select_by="average").fit(X, Y, Y, X_val=X, y_val=Y, groups_val=Y[1:])
    model = GroupDRO(epochs=1).fit(X, Y, Y)
    with pytest.raises(ValueError, match="X has 2 features but the model was fitted on 3"):
        model.predict(X[:, :2])


def test_group_dro_warns_about_validation_classes_absent_from_training():
    X_val = np.concatenate([X, RNG.normal(size=(10, 3)) - 4])
    y_val, g_val = np.concatenate([Y, np.full(10, 2)]), np.concatenate([Y, np.full(10, 2)])
    with pytest.warns(UserWarning, match=r"y_val holds classes \[2\] \(10 of 70 rows\) that y does not; the model "
                                         r"cannot predict them, so those rows are left out of model selection"):
        model = GroupDRO(epochs=20).fit(X, Y, Y, X_val=X_val, y_val=y_val, groups_val=g_val)
    assert model.unseen_val_classes_ == [2]
    reference = GroupDRO(epochs=20).fit(X, Y, Y, X_val=X, y_val=Y, groups_val=Y)
    assert model.best_score_ == reference.best_score_ > 0.5  # not pinned at 0.0 by class 2
    assert model.best_epoch_ == reference.best_epoch_
    with pytest.raises(ValueError, match=r"y_val holds only classes \[2\], none of which is in y"):
        GroupDRO(epochs=1).fit(X, Y, Y, X_val=X_val[-10:], y_val=y_val[-10:], groups_val=g_val[-10:])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert GroupDRO(epochs=1).fit(X, Y, Y, X_val=X, y_val=Y, groups_val=Y).unseen_val_classes_ == []


@pytest.mark.parametrize("options, phrase", [
    ({"batch_size": 0}, "batch_size must be a positive integer"), ({"batch_size": 2.5}, "batch_size"),
    ({"epochs": "3"}, "epochs must be a positive integer"), ({"lr": "fast"}, "lr must be finite"),
    ({"mode": "linear-frozen"}, "mode must be 'network'"), ({"group_sampling": 1}, "group_sampling must be true"),
])
def test_network_group_dro_checks_its_settings(options, phrase):
    with pytest.raises(ValueError, match=phrase):
        NetworkGroupDRO(**options)


def test_noisy_rate_must_be_a_number_and_robustness_names_missing_arrays():
    with pytest.raises(ValueError, match="noise rate must lie in"):
        NoisyLabelCorrector("0.2").fit(X, Y)
    split = {"embedding": X, "label": Y, "group": Y}
    with pytest.raises(ValueError, match=r"the val split has no label; each split needs embedding"):
        robustness({"train": split, "val": {"embedding": X, "group": Y}, "test": split})
    with pytest.raises(ValueError, match=r"the test groups must hold non-negative ids"):
        robustness({"train": split, "val": split, "test": dict(split, group=Y - 1)})


# --- `apply robustness` through the CLI: advice the command can follow, nothing left behind ------
@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    from spreadcon.cli import main

    out = tmp_path_factory.mktemp("short") / "run"
    assert main(["train", "--dataset", "strata", "--encoder", "mlp-test", "--epochs", "1", "--no-progress",
                 "--set", "dataset_options.n=300", "--set", "dataset_options.rare=1.0", "--set", "tensorboard=false",
                 "--out", str(out)]) == 0
    return out


def test_apply_robustness_on_a_short_run_advises_its_own_options_and_writes_nothing(short_run, tmp_path, capsys):
    from spreadcon.cli import main

    out = tmp_path / "robust"
    code = main(["apply", "robustness", str(short_run), "--reducer", "none", "--clusterer", "kmeans",
                 "--k-range", "10,10", "--no-pictures", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "recovered pseudo-groups" in err and "have train members but none among the" in err
    assert "--k-range 2,3" in err and "--end-model linear-frozen" in err and "select_by" not in err
    assert not out.exists()  # no pseudo_groups.npz, no end_models, no empty folder
    assert not (short_run / "robustness").exists()


def test_a_failed_apply_removes_or_restores_its_pseudo_groups(short_run, tmp_path, monkeypatch):
    from spreadcon.apps import robustness as module

    def fail(self, run, path, *, runs_dir):
        assert path.exists()  # written just before the end models train
        raise ValueError("the end models failed")

    monkeypatch.setattr(module.NetworkGroupDRO, "fit_run", fail)
    settings = {"recovery": StrataRecovery(reducer=None, clusterer="kmeans", k_range=(1, 1)),
                "end_model": NetworkGroupDRO(epochs=1), "pictures": False}
    out = tmp_path / "fresh"
    with pytest.raises(ValueError, match="the end models failed"):
        module.apply_to_run(short_run, out_dir=out, **settings)
    assert not out.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "pseudo_groups.npz").write_bytes(b"an earlier apply's groups")
    with pytest.raises(ValueError, match="the end models failed"):
        module.apply_to_run(short_run, out_dir=kept, **settings)
    assert sorted(p.name for p in kept.iterdir()) == ["pseudo_groups.npz"]
    assert (kept / "pseudo_groups.npz").read_bytes() == b"an earlier apply's groups"
