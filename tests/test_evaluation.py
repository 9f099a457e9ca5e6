"""spreadcon.evaluation: the one evaluation of a run, against float64 oracles on a real tiny run."""

from __future__ import annotations

import numpy as np
import pytest

from spreadcon.evaluation import METRICS, evaluate_run, metric_name, strata_rows


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from spreadcon.config import TrainConfig
    from spreadcon.train import train

    out = tmp_path_factory.mktemp("run") / "r"
    train(TrainConfig(dataset="digits-coarse", encoder="cnn-test", epochs=1, batch_size=256, lr=3e-3,
                      out_dir=str(out), device="cpu", progress=False, tensorboard=False))
    return out


def _unit(z):
    z = np.asarray(z, dtype=np.float64)
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def test_metrics_match_oracles(run_dir):
    from spreadcon.runs import load_run

    run = load_run(run_dir)
    test = run.embeddings("test")
    got = evaluate_run(run, probe_epochs=3)
    assert set(got) <= set(METRICS) and {"coarse_accuracy", "auroc", "fine_transfer_accuracy",
                                          "intra_class_cosine"} <= set(got)
    assert got["coarse_accuracy"] == np.mean(test["logits"].argmax(1) == test["label"])
    z, y, s = _unit(test["embedding"]), test["label"], test["stratum"]
    pairs = []  # every ordered pair i != j of one class: the off-diagonal of its Gram matrix
    for c in np.unique(y):
        gram = z[y == c] @ z[y == c].T
        pairs.append(gram[~np.eye(len(gram), dtype=bool)].mean())
    assert got["intra_class_cosine"] == pytest.approx(np.mean(pairs), abs=1e-9)
    assert 0.0 <= got["fine_transfer_accuracy"] <= 1.0


def test_centre_cosines_use_the_largest_and_smallest_training_strata(run_dir):
    from spreadcon.runs import load_run

    run = load_run(run_dir)
    test = run.embeddings("test")
    train_strata, counts = np.unique(run.dataset.get_split("train").stratum.numpy(), return_counts=True)
    sizes = dict(zip(train_strata.tolist(), counts.tolist()))
    z, y, s = _unit(test["embedding"]), test["label"], test["stratum"]
    common, rare = [], []
    for c in np.unique(y):
        centre = z[y == c].mean(0)
        cos = z @ centre / np.linalg.norm(centre)
        strata = [int(v) for v in np.unique(s[y == c])]
        if len({sizes[v] for v in strata}) > 1:
            common.append(cos[s == max(strata, key=sizes.get)].mean())
            rare.append(cos[s == min(strata, key=sizes.get)].mean())
    got = evaluate_run(run, transfer=False)
    if common:  # digits-coarse strata sizes differ by a point or two
        assert got["common_centre_cosine"] == pytest.approx(np.mean(common), abs=1e-9)
        assert got["rare_centre_cosine"] == pytest.approx(np.mean(rare), abs=1e-9)


def test_other_splits_and_checkpoints(run_dir):
    val = evaluate_run(run_dir, split="val", geometry=False, probe_epochs=3)
    assert "coarse_val_accuracy" in val and "fine_transfer_val_accuracy" in val and "coarse_accuracy" not in val
    # one epoch: the last checkpoint is the best one; "last" is embedded afresh, not read from the cache
    best = evaluate_run(run_dir, transfer=False, geometry=False)
    last = evaluate_run(run_dir, checkpoint="last", transfer=False, geometry=False)
    assert last["coarse_accuracy"] == pytest.approx(best["coarse_accuracy"])
    assert metric_name("intra_class_cosine", "val") == "intra_class_cosine_val"


def test_strata_rows(run_dir):
    from spreadcon.runs import load_run

    run = load_run(run_dir)
    rows = strata_rows(run)
    test = run.embeddings("test")
    assert sorted(r["stratum"] for r in rows) == sorted(np.unique(test["stratum"]).tolist())
    assert sum(r["train_size"] for r in rows) == len(run.dataset.get_split("train"))
    z, s = _unit(test["embedding"]), test["stratum"]
    first = rows[0]
    own = z[s == first["stratum"]]
    centre = own.mean(0)
    assert first["stratum_centre_cosine"] == pytest.approx(float((own @ centre / np.linalg.norm(centre)).mean()))


def test_bad_input_names_what_to_pass(run_dir, tmp_path):
    with pytest.raises(ValueError, match="split='dev'"):
        evaluate_run(run_dir, split="dev")
    with pytest.raises(FileNotFoundError, match="is not a run folder"):
        evaluate_run(tmp_path / "nothing")
    with pytest.raises(ValueError, match="unknown metric 'accuracy'"):
        metric_name("accuracy", "test")


def test_with_a_projection_head_probes_read_h_and_z_is_reported_beside(tmp_path):
    """The standard protocol: the cache keeps the backbone output h ("features") next to z, the
    evaluation probes h, and the z numbers carry their own names."""
    from spreadcon.config import TrainConfig
    from spreadcon.evaluate.probes import coarse_to_fine
    from spreadcon.runs import load_run
    from spreadcon.train import train

    run_dir = train(TrainConfig(dataset="digits-coarse", encoder="cnn-test", epochs=1, batch_size=256,
                                encoder_options={"proj_dim": 8}, embedding="projection", out_dir=str(tmp_path / "r"), device="cpu",
                                progress=False, tensorboard=False))
    run = load_run(run_dir)
    test, train_split = run.embeddings("test"), run.embeddings("train")
    assert test["embedding"].shape[1] == 8 and test["features"].shape[1] != 8
    got = evaluate_run(run, probe_epochs=3)
    assert {"fine_transfer_accuracy", "fine_transfer_z_accuracy", "intra_class_z_cosine"} <= set(got) <= set(METRICS)
    import torch

    at_h = coarse_to_fine(*(torch.from_numpy(a) for a in (train_split["features"], train_split["stratum"],
                                                          test["features"], test["stratum"])),
                          epochs=3, seed=run.config.seed, num_classes=run.dataset.num_strata)
    assert got["fine_transfer_accuracy"] == pytest.approx(at_h["fine_accuracy"])


def test_geometry_with_a_projection_head_reads_h_and_z_each_under_its_own_name(tmp_path):
    """Figures 2-3 at both layers: the unsuffixed names are h's, the "_z" names are z's, each equal
    to the same computation on that layer's cached test embeddings."""
    import torch

    from spreadcon.config import TrainConfig
    from spreadcon.evaluate.geometry import cosine_to_class_centre, intra_class_cosine
    from spreadcon.runs import load_run
    from spreadcon.train import train

    run_dir = train(TrainConfig(dataset="mnist5k-coarse-u", encoder="cnn-test", epochs=1, batch_size=256,
                                encoder_options={"proj_dim": 8}, embedding="projection", subsample_fraction=0.3,
                                out_dir=str(tmp_path / "r"), device="cpu", progress=False, tensorboard=False))
    run = load_run(run_dir)
    test = {k: torch.from_numpy(v) for k, v in run.embeddings("test").items()}
    got = evaluate_run(run, transfer=False, geometry=True)
    for layer, suffix in (("features", ""), ("embedding", "_z")):
        assert got[f"intra_class{suffix}_cosine"] == pytest.approx(
            float(intra_class_cosine(test[layer], test["label"])), abs=1e-6)
    rows = strata_rows(run)
    first = rows[0]
    for layer, suffix in (("features", ""), ("embedding", "_z")):
        cos = cosine_to_class_centre(test[layer], test["label"])
        members = test["stratum"] == first["stratum"]
        assert first[f"class_centre{suffix}_cosine"] == pytest.approx(float(cos[members].mean()), abs=1e-6)
    assert {"rare_centre_z_cosine", "common_centre_z_cosine"} <= set(got)
    assert first["class_centre_cosine"] != first["class_centre_z_cosine"]
