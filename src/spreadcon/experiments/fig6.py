"""Figure 6 (Appendix F.2): sample complexity of the contrastive head.

    spreadcon reproduce fig6-sample-complexity [--scale small|full] [--seeds 3]

The contrastive head trains on a random fraction f of the training set (its images and labels),
the cross-entropy head on 1% of the full training set's labels (so the CE head sees the same
number of labels at every f: labelled_fraction = 0.01 / f of the subsample). End-model test
accuracy against f for L_SS, L_SC and L_spread. The paper (CIFAR10, ViT): L_spread beats L_SS
by 13.9 and L_SC by 0.5 points at f = 10%, by 25.4 and 10.3 at f = 100%. Small scale: MNIST-5k,
the recipe of fig4 (recipes.SMALL_TRAIN); with about 35 labelled digits for the CE head. Expected: L_spread >= L_SC >= L_SS
at every f, the gap to L_SS growing with f. Floors per f: linear probes on the raw pixels and on a
random-init net, fit on the same labelled 1% (`spreadcon.evaluate.floors`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from spreadcon.experiments import charts, common
from spreadcon.experiments.claims import Claim, winner_claims
from spreadcon.experiments.paper import CLAIMS, LOSS_NAMES
from spreadcon.experiments.recipes import SMALL_TRAIN, VIT, merge
from spreadcon.experiments.runner import Experiment, RunSpec
from spreadcon.experiments.table import markdown

LOSSES = ("simclr", "supcon", "spread")
small: dict[str, Any] = {
    "seeds": 3,
    "losses": LOSSES,
    "fractions": (0.1, 0.25, 0.5, 1.0),
    "ce_fraction": 0.01,
    "train": SMALL_TRAIN,
    "datasets": {"mnist5k": {"spread": {"alpha": 0.5}}},
    "floors": True,  # the raw-pixel and random-init probes on the same 1% of the labels, per fraction
}
full: dict[str, Any] = {
    **small,
    "fractions": (0.1, 0.2, 0.5, 1.0),
    "train": VIT,
    "datasets": {"cifar10": {"spread": {"temperature": 0.9, "alpha": 0.67}}},
}


def _train(cfg: dict[str, Any], ds: str, loss: str, f: float) -> dict[str, Any]:
    """The grid cell's recipe with the contrastive head on a fraction f, the CE head on ce_fraction."""
    base = common.grid_train(cfg, ds, loss)
    return merge(base, {"subsample_fraction": float(f) * base.get("subsample_fraction", 1.0),
                               "labelled_fraction": min(1.0, cfg["ce_fraction"] / float(f))})


def plan(cfg: dict[str, Any], seeds: Sequence[int], rows: list) -> list[RunSpec]:
    specs = []
    for ds in cfg["datasets"]:
        for f in cfg["fractions"]:
            specs += [common.train_spec(f"{ds}/{loss}/f{f}", _train(cfg, ds, loss, f), seed,
                                        {"dataset": ds, "loss": loss, "fraction": f})
                      for loss in cfg["losses"] for seed in seeds]
            if cfg.get("floors"):  # on the subsample and labelled rows of the L_spread cell, per seed
                specs += common.floor_specs(f"{ds}/f{f}", _train(cfg, ds, "spread", f), seeds,
                                            {"dataset": ds, "fraction": f})
    return specs


def report(rows: list[dict[str, Any]], cfg: dict[str, Any], out: Path) -> str:
    charts.line_plot(rows, x="fraction", hue="loss", metric="coarse_accuracy", path=out / "sample_complexity.png",
                     title="Figure 6: contrastive head on a fraction of the data")
    return ("## End-model test accuracy (%) against the contrastive head's fraction of the training set\n\n"
            + markdown(rows, row_key="fraction", col_key="loss", metric="coarse_accuracy", col_names=LOSS_NAMES)
            + f"\nThe paper plots this (no table); its text: {CLAIMS['fig6-sample-complexity']}\n")


def smoke(cfg: dict[str, Any]) -> dict[str, Any]:
    return {**common.smoke_grid(cfg, 1), "fractions": (0.5, 1.0), "ce_fraction": 0.2}


def claims(rows: list[dict[str, Any]], cfg: dict[str, Any]) -> list[Claim]:
    return winner_claims(rows, group="fraction", metric="coarse_accuracy", winner="spread",
                         against=("supcon", "simclr"), what="is the most accurate at this fraction")


EXPERIMENTS = [Experiment(
    name="fig6-sample-complexity", summary="Figure 6: accuracy vs fraction of data for the contrastive head (CE on 1%)",
    cpu_minutes=45, module=__name__, config=lambda scale: merge(small if scale == "small" else full),
    smoke=smoke, plan=plan, execute=common.train_and_evaluate, report=report, validate=common.validate_train_spec,
    claims=claims,
)]
