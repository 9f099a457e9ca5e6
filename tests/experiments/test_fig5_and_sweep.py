"""The Figure 5 experiments and the sweep's criterion: configs checked, rows shared, numbers derived."""

from __future__ import annotations

import dataclasses

import pytest

from spreadcon.experiments import fig5_coreset, fig5_noise, sweep
from spreadcon.experiments.runner import Context, RunSpec
from spreadcon.experiments.table import mean_std


def test_noise_plan_rejects_unknown_methods_and_shares_uncorrected_runs():
    cfg = fig5_noise.smoke(fig5_noise.small)
    with pytest.raises(ValueError, match="unknown noisy-label methods.*debiased"):
        fig5_noise.plan({**cfg, "methods": ("debiased",)}, [0], [])
    assert "debiased" not in fig5_noise.METHODS  # the trainer cannot build it: not offered
    specs = fig5_noise.plan({**cfg, "methods": ("supcon", "supcon+fix")}, [0], [])
    by = {(s.labels["method"], s.labels["noise_rate"]): fig5_noise.training(s).key for s in specs}
    assert by[("supcon", 0.0)] == by[("supcon+fix", 0.0)]  # the correction is a no-op at rate 0
    assert by[("supcon", 0.2)] != by[("supcon+fix", 0.2)]  # a callback run is another run
    assert len({s.key for s in specs}) == len(specs)  # but every row is its own


def test_recovered_share():
    def stat(mean):
        return mean_std([mean])

    summary = {("supcon", 0.0, 0.2): stat(0.9), ("supcon", 0.2, 0.2): stat(0.7), ("spread+fix", 0.2, 0.2): stat(0.85)}
    assert fig5_noise.recovered(summary, "spread+fix", 0.2, 0.2) == pytest.approx(0.75)
    assert fig5_noise.recovered(summary, "spread+fix", 0.0, 0.2) is None
    assert fig5_noise.recovered(summary, "supcon+fix", 0.2, 0.2) is None  # missing run


def test_coreset_config_is_checked():
    cfg = fig5_coreset.smoke(fig5_coreset.small)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        fig5_coreset.plan({**cfg, "sizes": (1.5,)}, [0], [])
    with pytest.raises(ValueError, match="unknown coreset methods"):
        fig5_coreset.plan({**cfg, "methods": ("magic",)}, [0], [])
    with pytest.raises(ValueError, match="early_epoch"):
        fig5_coreset.plan({**cfg, "scores": {**cfg["scores"], "early_epoch": 5}}, [0], [])
    assert [s.seed for s in fig5_coreset.plan(cfg, [0, 1], [])] == [0, 1]  # evaluation seeds, not shifted


def test_coreset_fresh_models_train_through_train_subset(tmp_path):
    """A coreset's fresh model is a plain `train()` run of the coreset's positions in the train split."""
    import numpy as np

    from spreadcon.config import TrainConfig

    if "train_subset" not in {f.name for f in dataclasses.fields(TrainConfig)}:
        pytest.skip("TrainConfig.train_subset is the trainer helper's change, not in this branch yet")
    cfg = fig5_coreset.smoke(fig5_coreset.small)
    ctx = Context(out=tmp_path, verbose=False, config=cfg)
    [spec] = fig5_coreset.plan(cfg, [0], [])
    index = np.arange(0, 400, 2)
    acc = fig5_coreset.fresh_accuracy(spec, ctx, index)
    [run_dir] = [p for p in (tmp_path / "runs").iterdir() if p.name.startswith("coreset-n200")]
    config = TrainConfig.from_json((run_dir / "config.json").read_text())
    assert np.array_equal(np.load(config.train_subset), index) and 0.0 <= acc <= 1.0
    assert fig5_coreset.fresh_accuracy(spec, ctx, index) == acc  # reused, same number


def _row(alpha, transfer, coarse, stage="alpha"):
    return {"loss": "spread", "temperature": 0.5, "alpha": alpha, "stage": stage,
            "fine_transfer_val_accuracy": transfer, "coarse_val_accuracy": coarse}


def test_sweep_criterion_is_lexicographic_with_ties_to_the_smaller_alpha():
    rows = [_row(0.25, 0.8, 0.9), _row(0.5, 0.8, 0.95), _row(0.67, 0.7, 0.99)]
    crit = ("fine_transfer_val_accuracy", "coarse_val_accuracy")
    assert sweep.best_alphas(rows, (0.25, 0.5, 0.67), 2, crit) == [0.5, 0.25]
    assert sweep.best_alphas(rows, (0.25, 0.5, 0.67), 1, ("coarse_val_accuracy",)) == [0.67]
    tie = [_row(0.25, 0.8, 0.9), _row(0.5, 0.8, 0.9)]
    assert sweep.selected(tie, crit)["spread"] == ("spread", 0.5, 0.25)


def test_sweep_without_taus_stops_after_the_alpha_stage():
    cfg = {**sweep.smoke(sweep.small), "taus": (), "baselines": ()}
    first = sweep.plan(cfg, [0], [])
    rows = [{**s.labels, "coarse_val_accuracy": 0.5} for s in first]
    assert [s.key for s in sweep.plan(cfg, [0], rows)] == [s.key for s in first]
    assert all(isinstance(s, RunSpec) and "val" in s.evals for s in first)


def test_sweep_alpha_stage_runs_at_the_recipes_temperature_and_the_tau_stage_skips_it():
    """A tuned recipe's tau (sweep-paper --scale medium) is the alpha stage's; E.2's 0.5 otherwise."""
    cfg = {**sweep.smoke(sweep.small), "alpha_tau": 0.3, "taus": (0.3, 0.5), "baselines": ()}
    first = sweep.plan(cfg, [0], [])
    assert {s.labels["temperature"] for s in first} == {0.3}
    assert {s.params["train"]["temperature"] for s in first} == {0.3}
    rows = [{**s.labels, "coarse_val_accuracy": 0.5 + s.labels["alpha"]} for s in first]
    tau_stage = sweep.plan(cfg, [0], rows)[len(first):]
    assert [(s.labels["temperature"], s.labels["stage"]) for s in tau_stage] == [(0.5, "tau")]
    assert {s.labels["temperature"] for s in sweep.plan(sweep.smoke(sweep.small), [0], [])} == {0.5}
    assert sweep.paper_medium["alpha_tau"] == sweep.paper_medium["train"].get("temperature", 0.5)
