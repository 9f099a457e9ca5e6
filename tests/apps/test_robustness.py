"""The robustness pipeline (spreadcon.apps.robustness) and `spreadcon apply robustness RUN_DIR`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spreadcon.apps.gdro import GroupDRO
from spreadcon.apps.robustness import robustness
from spreadcon.apps.strata import StrataRecovery


def embedded_spurious(n: int, seed: int, agree: float):
    """Embeddings where the spurious attribute a splits each class into two clusters.

    dims 0-1: the class, weakly (overlapping); dims 2-3: the attribute a, strongly (a = y with
    probability `agree`); group = 2 y + a. Rows are not normalised (normalize=False below)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    a = np.where(rng.random(n) < agree, y, 1 - y)
    X = np.column_stack([
        (2 * y - 1)[:, None] * [0.7, 0.7] + rng.normal(size=(n, 2)),
        (2 * a - 1)[:, None] * [3.0, 0.0] + 0.2 * rng.normal(size=(n, 2)),
    ])
    logits = np.column_stack([-X[:, 2], X[:, 2]])  # a "run head" that reads the spurious feature only
    return {"embedding": X, "label": y, "group": 2 * y + a, "logits": logits}


@pytest.fixture(scope="module")
def splits():
    return {"train": embedded_spurious(2000, 0, 0.95), "val": embedded_spurious(800, 1, 0.95),
            "test": embedded_spurious(2000, 2, 0.5)}


SETTINGS = {"recovery": StrataRecovery(reducer=None, clusterer="kmeans", k_range=(2, 4)),
            "end_model": GroupDRO(eta=0.1, epochs=20), "normalize": False}


def test_pipeline_recovers_groups_and_group_dro_on_them_beats_erm(splits):
    result, rec = robustness(splits, **SETTINGS)
    assert result["n_clusters"] == [2, 2]
    assert result["recovery_train"]["f1"] > 0.95 and result["recovery_train"]["ari"] > 0.9
    m = result["methods"]
    assert m["erm"]["worst_group_accuracy"] < 0.5
    assert m["gdro_pseudo"]["worst_group_accuracy"] > m["erm"]["worst_group_accuracy"] + 0.2
    assert m["gdro_true"]["worst_group_accuracy"] > 0.6
    assert m["run_head"]["worst_group_accuracy"] < 0.05  # it only reads the attribute
    assert set(m["erm"]["group_accuracy"]) == {0, 1, 2, 3}
    json.dumps(result)  # the result is JSON-ready


def test_pipeline_is_deterministic(splits):
    a, _ = robustness(splits, **SETTINGS)
    b, _ = robustness(splits, **SETTINGS)
    assert a == b


def test_pipeline_rejects_a_single_class_and_missing_splits(splits):
    one = {s: {k: v[d["label"] == 0] for k, v in d.items()} for s, d in splits.items()}
    with pytest.raises(ValueError, match="single class"):
        robustness(one, **SETTINGS)
    with pytest.raises(ValueError, match="missing or empty"):
        robustness({"train": splits["train"], "val": splits["val"]}, **SETTINGS)
    bad = dict(splits, train=dict(splits["train"], group=splits["train"]["group"][:-1]))
    with pytest.raises(ValueError, match="one id per row"):
        robustness(bad, **SETTINGS)


def test_pipeline_names_bad_embeddings_and_groups_missing_from_test(splits):
    nan = dict(splits, val=dict(splits["val"], embedding=splits["val"]["embedding"].copy()))
    nan["val"]["embedding"][5] = np.nan
    with pytest.raises(ValueError, match="the val embeddings has 1 rows with NaN"):
        robustness(nan, **SETTINGS)
    keep = splits["test"]["group"] != 3
    no_group = dict(splits, test={k: v[keep] for k, v in splits["test"].items()})
    with pytest.raises(ValueError, match=r"groups \[3\] of the train split have no members in the test split"):
        robustness(no_group, **SETTINGS)


def test_the_templates_are_cloned_not_fitted(splits):
    settings = dict(SETTINGS, end_model=GroupDRO(eta=0.1, epochs=2))
    result, rec = robustness(splits, **settings)
    assert rec is not settings["recovery"] and not hasattr(settings["recovery"], "classes_")
    assert not hasattr(settings["end_model"], "linear_")
    assert result["config"]["end_model"]["eta"] == 0.1 and result["config"]["recovery"]["clusterer"] == "kmeans"
    assert {"average_accuracy", "group_accuracy", "worst_group_auroc"} <= set(result["methods"]["gdro_true"])


# --- the command on a run folder ---------------------------------------------------------------
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from spreadcon.cli import main

    out = tmp_path_factory.mktemp("robust") / "run"
    argv = ["train", "--dataset", "spurious-mnist", "--encoder", "cnn-test", "--epochs", "1", "--no-progress",
            "--set", "subsample_fraction=0.2", "--set", "tensorboard=false", "--out", str(out)]
    assert main(argv) == 0
    return out


def test_apply_to_a_run_dir(run_dir, tmp_path):
    from spreadcon.cli import main

    code = main(["apply", "robustness", str(run_dir), "--reducer", "none", "--clusterer", "kmeans",
                 "--k-range", "2,3", "--gdro-epochs", "2", "--reweight-groups", "--adjustment", "2",
                 "--end-model", "linear-frozen", "--out", str(tmp_path)])
    assert code == 0
    result = json.loads((tmp_path / "robustness.json").read_text())
    assert result["run"]["loss"] == "spread" and len(result["n_clusters"]) == 2
    assert all(2 <= k <= 3 for k in result["n_clusters"])
    assert result["config"]["end_model"]["reweight_groups"] is True and result["config"]["end_model"]["adjustment"] == 2.0
    assert result["stamp"]["file"] == "best.pt" and len(result["stamp"]["sha256"]) == 64
    assert (tmp_path / "run_class0.png").exists()


def test_apply_network_end_models_train_reuse_and_score_on_true_groups(run_dir, tmp_path):
    from spreadcon.cli import main
    from spreadcon.config import TrainConfig

    argv = ["apply", "robustness", str(run_dir), "--reducer", "none", "--clusterer", "kmeans", "--k-range", "2,2",
            "--gdro-epochs", "1", "--no-pictures", "--out", str(tmp_path)]
    assert main(argv) == 0
    result = json.loads((tmp_path / "robustness.json").read_text())
    with np.load(tmp_path / "pseudo_groups.npz") as f:
        pseudo = dict(f)
    assert set(pseudo) == {"train_index", "train", "val_index", "val"} and len(pseudo["train"]) == len(pseudo["train_index"])
    assert len(np.unique(pseudo["train"])) == 4  # k = 2 in each of the two classes
    configs = {m: TrainConfig.from_json((tmp_path / "end_models" / result["methods"][m]["run_dir"].split("/")[-1]
                                         / "config.json").read_text()) for m in ("erm", "gdro_pseudo", "gdro_true")}
    assert configs["erm"].objective == "erm" and configs["erm"].groups is None
    assert configs["gdro_pseudo"].objective == "group_dro" and configs["gdro_pseudo"].groups.endswith("pseudo_groups.npz")
    assert configs["gdro_true"].groups == "group" and configs["gdro_true"].gdro_adjustment == 2.0
    assert all(c.protocol == "ce" and c.dataset == "spurious-mnist" for c in configs.values())
    for m in ("erm", "gdro_pseudo", "gdro_true"):
        scores = result["methods"][m]
        assert 0.0 <= scores["worst_group_accuracy"] <= scores["average_accuracy"] <= 1.0
    mtimes = {m: (tmp_path / "end_models").joinpath(result["methods"][m]["run_dir"].split("/")[-1], "best.pt")
              .stat().st_mtime for m in configs}
    assert main(argv) == 0  # the same recovery and settings: the end models are reused, not retrained
    again = json.loads((tmp_path / "robustness.json").read_text())
    assert {m: again["methods"][m]["run_dir"] for m in configs} == {m: result["methods"][m]["run_dir"] for m in configs}
    assert all((tmp_path / "end_models").joinpath(again["methods"][m]["run_dir"].split("/")[-1], "best.pt")
               .stat().st_mtime == t for m, t in mtimes.items())


@pytest.mark.parametrize("argv, message", [
    (["--eta", "nan"], "eta (the Group DRO step size) must be finite"),
    (["--eta", "1e6"], "in (0, 10]"),
    (["--k-range", "2"], "--k-range takes two integers"),
    (["--eta", "0", "--end-model", "linear-frozen"], "in (0, 10]"),
    (["--gdro-epochs", "0"], "epochs must be a positive integer"),
])
def test_apply_bad_options_are_one_line_errors(run_dir, tmp_path, capsys, argv, message):
    from spreadcon.cli import main

    code = main(["apply", "robustness", str(run_dir), "--reducer", "none", "--out", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err and err.startswith("spreadcon apply robustness: error:")
