"""Every experiment config: planned, validated, at every scale; every one runs in --smoke mode (CI
keeps the configs from rotting) and reuses its runs the second time."""

from __future__ import annotations

import json
import statistics

import pytest

from spreadcon.experiments import common, fig4, registry
from spreadcon.experiments.recipes import PAPER_ALPHA, VALIDATED_ALPHA
from spreadcon.experiments.runner import Context, RunSpec, output_dir, resolve_config, run_experiment

EXPERIMENTS = registry.experiments()


def test_registry_names_every_paper_result():
    assert set(EXPERIMENTS) == {
        "fig2", "fig3", "fig4-end-model", "fig4-transfer", "fig5-robustness", "fig5-noise", "fig5-coreset",
        "table2-attract", "fig6-sample-complexity", "fig7-noise-grid", "sweep", "sweep-paper", "theory", "demo", "defaults",
        "demo-alpha"}
    for exp in EXPERIMENTS.values():
        doc = __import__(exp.module, fromlist=["_"]).__doc__
        assert "spreadcon reproduce" in doc and "xpected" in doc, exp.name  # command + expected result


def test_medium_scale_exists_only_where_defined_and_plans_cifar_with_floors(capsys):
    with pytest.raises(ValueError, match="fig2 has no --scale medium; it has small, full"):
        resolve_config(EXPERIMENTS["fig2"], "medium", False)
    cfg = resolve_config(EXPERIMENTS["fig4-transfer"], "medium", False)
    specs = EXPERIMENTS["fig4-transfer"].plan(cfg, [0, 1, 2], [])
    cells = {(s.labels["embedding"], s.labels["loss"]) for s in specs}
    assert {loss for e, loss in cells if e == "paper"} == set(fig4.LOSSES) | set(fig4.FLOOR_NAMES)
    assert {loss for e, loss in cells if e == "projection"} == {"simclr", "supcon", "supcon-authors", "spread",
                                                                "raw-pixels", "random-init"}  # as before, 3 seeds
    assert all(s.params["train"]["dataset"] == "cifar10-coarse" for s in specs)
    assert all(s.params["train"]["subsample_fraction"] == 0.2 for s in specs if "floor" not in s.params)
    paper = [s.params["train"] for s in specs if s.labels["embedding"] == "paper"]
    assert all(t["encoder_options"] == fig4.MEDIUM_PAPER_TRAIN["encoder_options"] for t in paper)
    run_experiment(EXPERIMENTS["fig4-transfer"], Context(out="unused", dry_run=True, data_root="."), scale="medium")
    assert "39 runs planned, all valid" in capsys.readouterr().out  # (5 + 4 losses + 2 x 2 floors) x 3 seeds


@pytest.mark.parametrize("name", ["fig4-transfer", "fig4-end-model"])
def test_fig4_rows_record_their_embedding(name):
    for scale in EXPERIMENTS[name].scales:
        cfg = resolve_config(EXPERIMENTS[name], scale, False)
        specs = EXPERIMENTS[name].plan(cfg, [0], [])
        want = {"paper"} if scale == "full" else {"paper", "projection"}  # both protocols at small and medium
        assert {s.labels["embedding"] for s in specs} == want, scale
        for s in specs:
            assert common.spec_config(s).embedding == s.labels["embedding"]


@pytest.mark.parametrize("name", ["fig4-transfer", "fig4-end-model"])
def test_fig4_small_plans_five_losses_under_both_protocols_with_floors_per_protocol(name):
    exp = EXPERIMENTS[name]
    cfg = resolve_config(exp, "small", False)
    specs = exp.plan(cfg, list(range(cfg["seeds"])), [])
    for ds in cfg["datasets"]:
        for emb in ("paper", "projection"):
            cell = [s for s in specs if s.labels["dataset"] == ds and s.labels["embedding"] == emb]
            seeds = 3 if name == "fig4-end-model" or ds == "digits-coarse" else 5  # issue 26: 5 on the mnist5k sets
            assert sorted({s.labels["loss"] for s in cell}) == sorted(fig4.LOSSES + fig4.FLOOR_NAMES)
            assert all(len([s for s in cell if s.labels["loss"] == loss]) == seeds for loss in fig4.LOSSES)
            floors = [s.params["train"] for s in cell if "floor" in s.params]
            assert floors and all(common.spec_config(RunSpec("f", {"train": t}, 0)).embedding == emb for t in floors)
            train = {s.labels["loss"]: common.spec_config(s) for s in cell if s.seed == 0 and "floor" not in s.params}
            spread, authors = train["spread"], train["spread-authors"]  # the same L_spread settings
            assert (spread.alpha, spread.temperature) == (authors.alpha, authors.temperature)
    mnist = {(s.labels["embedding"]): common.spec_config(s).alpha for s in specs
             if s.labels["dataset"] == "mnist5k-coarse" and s.labels["loss"] == "spread"}
    assert mnist == {"paper": PAPER_ALPHA["mnist5k-coarse"], "projection": VALIDATED_ALPHA["mnist5k-coarse"]}


def test_fig4_smoke_is_two_losses_under_two_protocols():
    cfg = resolve_config(EXPERIMENTS["fig4-transfer"], "small", True)
    specs = EXPERIMENTS["fig4-transfer"].plan(cfg, [0], [])
    trained = [(s.labels["embedding"], s.labels["loss"]) for s in specs if "floor" not in s.params]
    assert trained == [(e, loss) for e in ("paper", "projection") for loss in ("supcon", "spread")]
    assert len(specs) == 8  # and the two floors of each protocol


def test_fig6_floors_sit_on_the_data_of_each_fraction():
    """Figure 6's floors probe the same subsample and labelled 1% as the trained cell beside them."""
    cfg = resolve_config(EXPERIMENTS["fig6-sample-complexity"], "small", False)
    specs = EXPERIMENTS["fig6-sample-complexity"].plan(cfg, [0], [])
    for f in cfg["fractions"]:
        cell = [s for s in specs if s.labels["fraction"] == f]
        trained = {s.labels["loss"]: s.params["train"] for s in cell if "floor" not in s.params}
        floors = [s.params["train"] for s in cell if "floor" in s.params]
        assert sorted(s.labels["loss"] for s in cell if "floor" in s.params) == ["random-init", "raw-pixels"]
        for t in floors:
            for key in ("subsample_fraction", "labelled_fraction", "dataset", "encoder"):
                assert t.get(key) == trained["spread"].get(key)
        assert floors[0].get("labelled_fraction", 1.0) * floors[0].get("subsample_fraction", 1.0) == \
            pytest.approx(cfg["ce_fraction"])


def test_fig5_summary_has_the_issue_keys_per_dataset_and_loss():
    from spreadcon.experiments.fig5_robustness import summary

    rows = [{"dataset": "spurious-mnist", "loss": "spread", "seed": s, "recovery_f1": 0.9 + 0.02 * s,
             "erm_worst_group": 0.1, "gdro_pseudo_worst_group": 0.7, "gdro_true_worst_group": 0.8,
             "gdro_pseudo_average": 0.85} for s in range(3)]
    out = summary(rows)["spurious-mnist"]["spread"]
    assert {"recovery_f1", "worst_group_erm", "worst_group_gdro_recovered", "worst_group_gdro_true",
            "average_gdro_recovered"} <= set(out)
    assert out["recovery_f1"]["mean"] == pytest.approx(0.92) and out["recovery_f1"]["n"] == 3
    assert out["recovery_f1"]["std"] == pytest.approx(statistics.stdev([0.9, 0.92, 0.94]))
    assert out["worst_group_erm"]["std"] == pytest.approx(0.0)


def test_dataset_override():
    cfg = resolve_config(EXPERIMENTS["fig4-transfer"], "small", False, "digits-coarse")
    assert list(cfg["datasets"]) == ["digits-coarse"] and cfg["datasets"]["digits-coarse"]["batch_size"] == 64
    assert resolve_config(EXPERIMENTS["sweep"], "small", False, "digits")["dataset"] == "digits"
    with pytest.raises(ValueError, match="does not take a dataset"):
        resolve_config(EXPERIMENTS["theory"], "small", False, "digits")
    assert output_dir("r", "sweep", "full", True, "digits").name == "sweep-digits-full-smoke"


def test_grid_train_precedence():
    cfg = {"train": {"epochs": 3, "alpha": 0.9}, "losses": ["supcon", "spread"],
           "datasets": {"d": {"epochs": 5, "spread": {"alpha": 0.25}}}}
    assert common.grid_train(cfg, "d", "spread") == {"epochs": 5, "alpha": 0.25, "dataset": "d", "loss": "spread"}
    assert common.grid_train(cfg, "d", "supcon")["alpha"] == 0.9  # L_spread's alpha only on spread
    assert common.grid_train(cfg, "d", "spread-authors")["alpha"] == 0.25  # and on the authors' variant


def test_grid_train_per_protocol():
    """recipe < cfg["train"] < dataset keys < the dataset's keys for this protocol < spread keys."""
    cfg = {"train": {"epochs": 3}, "losses": ["spread"],
           "embeddings": {"paper": {"lr": 1.0, "epochs": 9}, "projection": {"lr": 2.0}},
           "datasets": {"d": {"spread": {"alpha": 0.16}, "max_seeds": 1,
                              "embeddings": {"paper": {"spread": {"alpha": 0.25}, "lr": 4.0}}}}}
    assert common.grid_train(cfg, "d", "spread", "paper") == {"lr": 4.0, "epochs": 3, "alpha": 0.25, "dataset": "d",
                                                              "loss": "spread"}
    assert common.grid_train(cfg, "d", "spread", "projection") == {"lr": 2.0, "epochs": 3, "alpha": 0.16,
                                                                   "dataset": "d", "loss": "spread"}
    assert common.dataset_seeds(cfg, "d", [0, 1, 2]) == [0]
    names = [s.name for s in common.grid_plan({**cfg, "floors": True}, [0, 1], ())]
    assert names == ["d/paper/spread", "d/spread", "d/paper/raw-pixels", "d/paper/random-init", "d/raw-pixels",
                     "d/random-init"]


def test_a_bad_name_in_a_config_is_named():
    with pytest.raises(ValueError, match="unknown dataset 'digitz'"):
        common.validate_train_spec(RunSpec("x", {"train": {"dataset": "digitz"}}, 0))


@pytest.mark.parametrize("name", sorted(n for n, e in EXPERIMENTS.items() if "full" in e.scales))
def test_full_scale_config_is_valid(name, capsys):
    run_experiment(EXPERIMENTS[name], Context(out="unused", dry_run=True, data_root="."), scale="full")
    assert "all valid" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_small_scale_config_is_valid_and_fits_the_cpu_budget(name):
    exp = EXPERIMENTS[name]
    run_experiment(exp, Context(out="unused", dry_run=True, verbose=False, data_root="."))
    assert 0 < exp.cpu_minutes <= 120  # the strong recipes (issue 16): at most two hours of 2 cores


# --- smoke: every experiment really runs, in seconds ---------------------------------------------
@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_smoke(name, tmp_path):
    ctx = Context(out=tmp_path, smoke=True, verbose=False)
    out = run_experiment(EXPERIMENTS[name], ctx)
    result = json.loads((out / "results.json").read_text())
    assert result["rows"] and result["smoke"] is True
    assert (out / "table.md").read_text().startswith(f"# {name}")
    assert all(len(c) == 3 and c[0] in ("paper", "target", "sanity") for c in result["claims"])
    # a second call reuses every training run: no checkpoint is written again
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/*.pt")}
    again = run_experiment(EXPERIMENTS[name], ctx)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/*.pt")} == before
    rows = json.loads((again / "results.json").read_text())["rows"]
    strip = lambda r: {k: v for k, v in r.items() if k not in ("seconds", "train_seconds")}  # noqa: E731
    assert [strip(r) for r in rows] == [strip(r) for r in result["rows"]]  # evaluation is deterministic
