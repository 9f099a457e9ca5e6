"""Figure 3: points from large strata cluster tightly, points from small strata scatter.

    spreadcon reproduce fig3 [--scale small|full] [--seeds 3]

The paper shows a picture (CIFAR100-Coarse-U, L_spread) coloured by subclass size
(500/250/100/50 points). We measure what the picture shows, per stratum of the test split:
its points' mean cosine with their own stratum centre (tightness), with their class centre, and
the distance of the stratum centre from the class centre, against the stratum's training size.
Small scale: MNIST-5k-Coarse-U (strata keep 100/50/20/10/10% of their training digits), the
same runs as fig2. Expected (Section 4.1): tightness and class-centre cosine grow with stratum
size under L_spread; L_SC (shown beside it) pulls every stratum onto the class centre. The claim
takes Spearman's rho(size, tightness) over the strata of each seed's run and asks whether its
95% interval across seeds lies above zero (the strata of one run are not independent of each
other, the seeds are).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scipy.stats import spearmanr

from spreadcon.experiments import charts, common, fig2
from spreadcon.experiments.claims import Claim, groups, one_sample, verdict
from spreadcon.experiments.paper import LOSS_NAMES
from spreadcon.experiments.recipes import merge
from spreadcon.experiments.runner import Experiment
from spreadcon.experiments.table import mean_std

small: dict[str, Any] = fig2.small
full: dict[str, Any] = {**fig2.full, "datasets": {"cifar100-coarse-u": {"spread": {"alpha": 0.25}}}}
# (the t-SNE pictures use fig2's settings: the same runs, coloured by stratum)
MEASURES = ("stratum_centre_cosine", "class_centre_cosine", "centre_distance")
# with a projection head, MEASURES read h and these z (the layer the loss reads; see fig2.LAYERS)
Z_MEASURES = ("stratum_centre_z_cosine", "class_centre_z_cosine", "centre_z_distance")
LAYERS = {"": (fig2.LAYER_WORDS[""], MEASURES), " at z": (fig2.LAYER_WORDS[" at z"], Z_MEASURES)}


def strata_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (run, stratum) with the run's dataset, loss and seed."""
    return [{"dataset": r["dataset"], "loss": r["loss"], "seed": r["seed"], **s}
            for r in rows for s in r.get("strata", [])]


def report(rows: list[dict[str, Any]], cfg: dict[str, Any], out: Path) -> str:
    per, lines = strata_rows(rows), []
    for words, measures in LAYERS.values():
        if not any(measures[0] in r for r in per):
            continue
        lines += [f"## Per-stratum geometry at {words}, against training stratum size "
                  "(test split; mean ± std over strata and seeds)\n",
                  "| dataset | loss | train size | strata | " + " | ".join(measures) + " |",
                  "|---|---|---|---|" + "---|" * len(measures)]
        for ds in dict.fromkeys(r["dataset"] for r in per):
            for loss in dict.fromkeys(r["loss"] for r in per):
                sub = [r for r in per if r["dataset"] == ds and r["loss"] == loss]
                for size in sorted({r["train_size"] for r in sub}, reverse=True):
                    group = [r for r in sub if r["train_size"] == size]
                    n_strata = len({r["stratum"] for r in group})
                    cells = [mean_std(r[m] for r in group).format(1.0, 3) for m in measures]
                    lines.append(f"| {ds} | {LOSS_NAMES.get(loss, loss)} | {size} | {n_strata} | "
                                 + " | ".join(cells) + " |")
        lines.append("")
    charts.scatter_panels(per, x="train_size", hue="loss", names=LOSS_NAMES, path=out / "strata_by_size.png",
                          panels=[m for _, m in LAYERS.values() if per and m[0] in per[0]],
                          title="Figure 3: strata by size")
    charts.tsne_pictures(rows, out, max_points=cfg["tsne_points"], by_size=True, names=LOSS_NAMES)
    return "\n".join(lines) + "\n"


def rho_by_seed(per: list[dict[str, Any]], measure: str) -> dict[int, float]:
    """{seed: Spearman rho between a stratum's training size and `measure`, over that seed's strata}."""
    out = {}
    for seed in dict.fromkeys(r["seed"] for r in per):
        sub = [r for r in per if r["seed"] == seed and measure in r]
        if len({r["train_size"] for r in sub}) > 1:
            out[seed] = float(spearmanr([r["train_size"] for r in sub], [r[measure] for r in sub]).statistic)
    return out


def claims(rows: list[dict[str, Any]], cfg: dict[str, Any]) -> list[Claim]:
    """Per dataset, loss and layer: larger strata are tighter (per-seed rho > 0 across seeds)."""
    per, out = strata_rows(rows), []
    for where, (_, measures) in LAYERS.items():
        for cell in groups(per, ("dataset", "loss")):
            rhos = rho_by_seed([r for r in per if r["dataset"] == cell["dataset"] and r["loss"] == cell["loss"]],
                               measures[0])
            if rhos:
                out.append(("paper", f"{cell['dataset']}, {LOSS_NAMES.get(cell['loss'], cell['loss'])}: larger "
                            f"strata are tighter{where}",
                            verdict([(one_sample(rhos), "Spearman rho(size, tightness), mean over seeds")],
                                    scale=1.0)))
    return out


EXPERIMENTS = [Experiment(
    name="fig3", summary="Figure 3: strata tightness and distance from the class centre against stratum size",
    cpu_minutes=15, module=__name__, config=lambda scale: merge(small if scale == "small" else full),
    smoke=lambda cfg: {**common.smoke_grid(cfg, 1), "tsne_points": 100},
    plan=lambda cfg, seeds, rows: common.grid_plan(cfg, seeds, ("strata",)),
    execute=common.train_and_evaluate, report=report, validate=common.validate_train_spec, claims=claims,
)]
