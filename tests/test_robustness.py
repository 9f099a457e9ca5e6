"""The robustness pipeline (spreadcon.apps.robustness) and `spreadcon apply robustness`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spreadcon.apps.robustness import RobustnessConfig, robustness, table


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


CONFIG = RobustnessConfig(reducer=None, clusterer="kmeans", k_range=(2, 4), normalize=False, eta=0.1, epochs=20)


def test_pipeline_recovers_groups_and_group_dro_on_them_beats_erm(splits):
    result, rec = robustness(splits, CONFIG)
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
    a, _ = robustness(splits, CONFIG)
    b, _ = robustness(splits, CONFIG)
    assert a == b


def test_pipeline_rejects_a_single_class_and_missing_splits(splits):
    one = {s: {k: v[d["label"] == 0] for k, v in d.items()} for s, d in splits.items()}
    with pytest.raises(ValueError, match="single class"):
        robustness(one, CONFIG)
    with pytest.raises(ValueError, match="missing or empty"):
        robustness({"train": splits["train"], "val": splits["val"]}, CONFIG)
    bad = dict(splits, train=dict(splits["train"], group=splits["train"]["group"][:-1]))
    with pytest.raises(ValueError, match="one id per row"):
        robustness(bad, CONFIG)


def test_table_formats_mean_and_std_in_percent():
    s = lambda m, sd: {"mean": m, "std": sd, "n": 3}  # noqa: E731
    summary = {"recovery_f1": s(0.5, 0.01), "recovery_ari": s(0.2, 0.0),
               **{f"{m}_worst_group_accuracy": s(0.7, 0.02) for m in ("erm", "gdro_pseudo", "gdro_true")},
               "gdro_pseudo_average_accuracy": s(0.9, 0.0)}
    text = table({"metric": "worst_group_accuracy", "summary": {"spread": summary},
                  "experiment": {"dataset": "d", "seeds": [0, 1, 2]}})
    assert "| L_spread | 50.0 ± 1.0 | 20.0 ± 0.0 | 70.0 ± 2.0 | 70.0 ± 2.0 | 70.0 ± 2.0 | - | 90.0 ± 0.0 |" in text


# --- the command: smoke experiment, then the offline mode on one of its runs ----------------
@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    from spreadcon.cli import main

    out = tmp_path_factory.mktemp("robust")
    assert main(["apply", "robustness", "--smoke", "--out", str(out)]) == 0
    return out


def test_smoke_experiment_writes_results_table_and_pictures(smoke):
    results = json.loads((smoke / "results.json").read_text())
    assert set(results["summary"]) == {"ce", "supcon", "spread"}
    assert len(results["runs"]) == 3
    for run in results["runs"]:
        assert 0 <= run["recovery_train"]["f1"] <= 1
        assert set(run["methods"]) == {"erm", "gdro_pseudo", "gdro_true", "run_head"}
    text = (smoke / "table.md").read_text()
    assert text.count("| L_") == 3 and "Group DRO, recovered groups" in text
    pictures = sorted(p.name for p in (smoke / "pictures").glob("*.png"))
    assert pictures == sorted(f"{loss}_seed_0_class{c}.png" for loss in ("ce", "supcon", "spread") for c in (0, 1))


def test_smoke_experiment_reuses_finished_runs(smoke):
    from spreadcon.cli import main

    best = smoke / "runs" / "spread-seed0" / "best.pt"
    before = best.stat().st_mtime_ns
    assert main(["apply", "robustness", "--smoke", "--losses", "spread", "--out", str(smoke)]) == 0
    assert best.stat().st_mtime_ns == before


def test_apply_to_a_run_dir(smoke, tmp_path):
    from spreadcon.cli import main

    run_dir = smoke / "runs" / "spread-seed0"
    code = main(["apply", "robustness", str(run_dir), "--reducer", "none", "--clusterer", "kmeans",
                 "--k-range", "2,3", "--gdro-epochs", "2", "--out", str(tmp_path)])
    assert code == 0
    result = json.loads((tmp_path / "robustness.json").read_text())
    assert result["run"]["loss"] == "spread" and len(result["n_clusters"]) == 2
    assert all(2 <= k <= 3 for k in result["n_clusters"])
    assert (tmp_path / "run_class0.png").exists()
