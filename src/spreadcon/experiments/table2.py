"""Table 2 (Appendix F.1): L_attract on its own against L_SS, L_SC and L_spread.

    spreadcon reproduce table2-attract [--scale small|full] [--seeds 3]

The paper (end-model accuracy, ViT, joint CE head): CIFAR10 89.7 / 90.9 / 91.3 / 91.5 and
CIFAR100 68.0 / 67.5 / 68.9 / 69.1 for L_SS / L_SC / L_attract / L_spread: L_attract beats L_SC,
L_spread beats both. L_attract uses tau 0.5 (the paper gives no other value); L_spread the
paper's (tau, alpha) per dataset. Small scale: MNIST-5k (10 digits) and digits, the recipe of
fig4 (recipes.SMALL_TRAIN).
Expected at small scale: all four within about a point of each other on these easy tasks; the
ordering, not the level, is what to compare.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spreadcon.experiments import charts, common
from spreadcon.experiments.claims import Claim, winner_claims
from spreadcon.experiments.paper import LOSS_NAMES, TABLE2_ATTRACT, paper_value
from spreadcon.experiments.recipes import DIGITS, SMALL_TRAIN, VIT, merge
from spreadcon.experiments.runner import Experiment
from spreadcon.experiments.table import markdown

LOSSES = ("simclr", "supcon", "attract", "spread")
small: dict[str, Any] = {
    "seeds": 3,
    "losses": LOSSES,
    "train": SMALL_TRAIN,
    "floors": True,   # raw-pixel and random-init probes beside the losses (common.floor_specs)
    "datasets": {"mnist5k": {"spread": {"alpha": 0.5}}, "digits": {**DIGITS, "spread": {"alpha": 0.5}}},
}
full: dict[str, Any] = {
    "seeds": 3,
    "losses": LOSSES,
    "train": VIT,
    "datasets": {"cifar10": {"spread": {"temperature": 0.9, "alpha": 0.67}},
                 "cifar100": {"spread": {"alpha": 0.33}}},
}


def report(rows: list[dict[str, Any]], cfg: dict[str, Any], out: Path) -> str:
    charts.bar_chart(rows, group="dataset", hue="loss", metric="coarse_accuracy", path=out / "table2.png",
                     title="Table 2: L_attract alone")
    return ("## End-model test accuracy (%)\n\n"
            + markdown(rows, row_key="dataset", col_key="loss", metric="coarse_accuracy", col_names=LOSS_NAMES,
                       paper=lambda d, l: paper_value(TABLE2_ATTRACT, d, l))
            + "\nPaper columns for mnist5k/digits: none (the paper's Table 2 has CIFAR10 and CIFAR100 only).\n")


def claims(rows: list[dict[str, Any]], cfg: dict[str, Any]) -> list[Claim]:
    return (winner_claims(rows, group="dataset", metric="coarse_accuracy", winner="attract", against=("supcon",),
                          what="beats L_SC")
            + winner_claims(rows, group="dataset", metric="coarse_accuracy", winner="spread",
                            against=("attract", "supcon", "simclr"), what="beats L_attract, L_SC and L_SS"))


EXPERIMENTS = [Experiment(
    name="table2-attract", summary="Table 2: L_attract alone vs L_SS, L_SC, L_spread (end-model accuracy)",
    cpu_minutes=50, module=__name__, config=lambda scale: merge(small if scale == "small" else full),
    smoke=lambda cfg: common.smoke_grid(cfg, 1),
    plan=lambda cfg, seeds, rows: common.grid_plan(cfg, seeds, ()),
    execute=common.train_and_evaluate, report=report, validate=common.validate_train_spec,
    claims=claims,
)]
