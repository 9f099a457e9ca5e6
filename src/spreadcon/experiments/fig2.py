"""Figure 2: L_spread keeps classes spread out where L_SC collapses them.

    spreadcon reproduce fig2 [--scale small|full] [--seeds 3]

The paper (CIFAR10 test set, t-SNE): mean intra-class cosine similarity 0.88 for L_SC against
0.49 for L_spread; a common-stratum dog has cosine 0.98 (L_SC) / 0.92 (L_spread) with its class
centre, a rare-stratum dog 0.76 / 0.22: rare strata sit further out under L_spread.

Here the strata are labelled, so "common" and "rare" are measured, not picked by eye: per class,
the points of its largest and of its smallest training stratum, averaged over classes. Small
scale: MNIST-5k-Coarse-U (per coarse class the strata keep 100/50/20/10/10% of their training
digits), the recipe of fig4 (a projection head, so the geometry is measured at h and at z), joint
CE head. Full scale: CIFAR100-Coarse-U (500/250/100/50/50 points per subclass) and CIFAR10 (no
labelled strata: intra-class cosine and pictures only).
Expected: intra-class cosine lower for L_spread; rare-stratum centre cosine lower for L_spread,
with a larger common-rare gap; within each loss (L_spread above all), rare strata farther from
the class centre than common ones (each claim paired over seeds: `spreadcon.experiments.claims`).
Pictures: t-SNE of test embeddings by class and by stratum.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spreadcon.experiments import charts, common
from spreadcon.experiments.claims import Claim, by_seed, compare, difference, groups, winner_claims
from spreadcon.experiments.paper import FIG2_GEOMETRY, LOSS_NAMES
from spreadcon.experiments.recipes import SMALL_TRAIN, VIT, merge
from spreadcon.experiments.runner import Experiment
from spreadcon.experiments.table import summarise

small: dict[str, Any] = {
    "seeds": 3,
    "losses": ("supcon", "spread"),
    "train": SMALL_TRAIN,
    "datasets": {"mnist5k-coarse-u": {"spread": {"alpha": 0.25}}},
    "tsne_points": 1500,  # test points in each t-SNE picture
}
full: dict[str, Any] = {
    "seeds": 3,
    "losses": ("supcon", "spread"),
    "train": VIT,
    "datasets": {"cifar10": {"spread": {"temperature": 0.9, "alpha": 0.67}},
                 "cifar100-coarse-u": {"spread": {"alpha": 0.25}}},
    "tsne_points": 3000,
}
METRICS = ("intra_class_cosine", "common_centre_cosine", "rare_centre_cosine", "coarse_accuracy")
# With a projection head the unsuffixed metrics read h (the backbone output the probes use) and
# these read z, the layer the loss shapes (the paper has no projection head: its one embedding is both).
Z_METRICS = ("intra_class_z_cosine", "common_centre_z_cosine", "rare_centre_z_cosine")
LAYER_WORDS = {"": "h, the backbone output", " at z": "z, the layer the loss reads"}  # claim suffix -> words
LAYERS = {"": (LAYER_WORDS[""], METRICS), " at z": (LAYER_WORDS[" at z"], Z_METRICS)}


def report(rows: list[dict[str, Any]], cfg: dict[str, Any], out: Path) -> str:
    lines = []
    for where, (words, metrics) in LAYERS.items():
        if not any(metrics[0] in r for r in rows):
            continue
        lines += [f"## Geometry of test embeddings at {words} (cosine similarities; mean ± std over seeds)\n",
                  "| dataset | loss | " + " | ".join(metrics) + " | paper (CIFAR10): intra / common / rare |",
                  "|---|---|" + "---|" * (len(metrics) + 1)]
        for ds in dict.fromkeys(r["dataset"] for r in rows):
            for loss in dict.fromkeys(r["loss"] for r in rows):
                sub = [r for r in rows if r["dataset"] == ds and r["loss"] == loss]
                if not sub:
                    continue
                cells = [summarise(sub, (), m).get((), None) for m in metrics]
                text = [c.format(1.0, 3) if c is not None else "–" for c in cells]
                p = FIG2_GEOMETRY.get(loss)
                ptext = " / ".join(f"{p[k]:.2f}" for k in ("intra_class_cosine", "common_centre_cosine",
                                                              "rare_centre_cosine")) if p else "–"
                lines.append(f"| {ds} | {LOSS_NAMES.get(loss, loss)} | " + " | ".join(text) + f" | {ptext} |")
        lines.append("")
    lines.append("coarse_accuracy is the end model's test accuracy on the training (coarse) labels, as a fraction.")
    charts.tsne_pictures(rows, out, max_points=cfg["tsne_points"], names=LOSS_NAMES)
    return "\n".join(lines) + "\n"


def claims(rows: list[dict[str, Any]], cfg: dict[str, Any]) -> list[Claim]:
    out: list[Claim] = []
    for where, (_, metrics) in LAYERS.items():
        if not any(metrics[0] in r for r in rows):
            continue
        intra, common_, rare = metrics[:3]
        out += (winner_claims(rows, group="dataset", metric=intra, winner="spread", against=("supcon",),
                              what=f"has the lower intra-class cosine{where}", higher=False, scale=1.0)
                + winner_claims(rows, group="dataset", metric=rare, winner="spread", against=("supcon",),
                                what=f"puts rare strata further from the class centre{where}", higher=False,
                                scale=1.0)
                + rare_vs_common(rows, common_, rare, where))
    return out


def rare_vs_common(rows: list[dict[str, Any]], common_: str, rare: str, where: str) -> list[Claim]:
    """Within each loss: rare strata sit farther from the class centre than common ones (a lower
    centre cosine; the paper: 0.22 vs 0.92 under L_spread, 0.76 vs 0.98 under L_SC); and
    L_spread's common - rare gap is larger than L_SC's (0.70 vs 0.22). Paired over seeds."""
    out = []
    for cell in groups(rows, ("dataset", "loss")):
        r, c = by_seed(rows, rare, **cell), by_seed(rows, common_, **cell)
        if r and c:
            name = LOSS_NAMES.get(cell["loss"], cell["loss"])
            out.append(compare("paper", f"{cell['dataset']}: under {name} rare strata sit farther from the class "
                               f"centre than common ones{where}", r, c, "rare - common centre cosine",
                               higher=False, scale=1.0))
    for cell in groups(rows, "dataset"):
        gap = {loss: difference(by_seed(rows, common_, **cell, loss=loss), by_seed(rows, rare, **cell, loss=loss))
               for loss in ("spread", "supcon")}
        if gap["spread"] and gap["supcon"]:
            out.append(compare("paper", f"{cell['dataset']}: the common - rare gap is larger under L_spread than "
                               f"under L_SC{where}", gap["spread"], gap["supcon"], "gap(L_spread) - gap(L_SC)",
                               scale=1.0))
    return out


EXPERIMENTS = [Experiment(
    name="fig2", summary="Figure 2: intra-class cosine and rare vs common strata, L_SC vs L_spread (+ t-SNE)",
    cpu_minutes=15, module=__name__, config=lambda scale: merge(small if scale == "small" else full),
    smoke=lambda cfg: {**common.smoke_grid(cfg, 1), "tsne_points": 100},
    plan=lambda cfg, seeds, rows: common.grid_plan(cfg, seeds, ("geometry",)),
    execute=common.train_and_evaluate, report=report, validate=common.validate_train_spec,
    claims=claims,
)]
