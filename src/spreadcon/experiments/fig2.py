"""Figure 2: L_spread keeps classes spread out where L_SC collapses them.

    spreadcon reproduce fig2 [--scale small|full] [--seeds 3]

The paper (CIFAR10 test set, t-SNE): mean intra-class cosine similarity 0.88 for L_SC against
0.49 for L_spread; a common-stratum dog has cosine 0.98 (L_SC) / 0.92 (L_spread) with its class
centre, a rare-stratum dog 0.76 / 0.22: rare strata sit further out under L_spread.

Here the strata are labelled, so "common" and "rare" are measured, not picked by eye: per class,
the points of its largest and of its smallest training stratum, averaged over classes. Small
scale: MNIST-5k-Coarse-U (per coarse class the strata keep 100/50/20/10/10% of their training
digits), the narrow `cnn` of fig4, joint CE head. Full scale: CIFAR100-Coarse-U (500/250/100/50/50
points per subclass) and CIFAR10 (no labelled strata: intra-class cosine and pictures only).
Expected: intra-class cosine lower for L_spread; rare-stratum centre cosine lower for L_spread,
with a larger common-rare gap. Pictures: t-SNE of test embeddings by class and by stratum.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spreadcon.experiments import common
from spreadcon.experiments.paper import FIG2_GEOMETRY, LOSS_NAMES
from spreadcon.experiments.runner import Experiment
from spreadcon.experiments.table import summarise

small: dict[str, Any] = {
    "seeds": 3,
    "losses": ("supcon", "spread"),
    "train": common.SMALL_TRAIN,
    "datasets": {"mnist5k-coarse-u": {"spread": {"alpha": 0.25}}},
    "tsne_points": 1500,  # test points in each t-SNE picture
}
full: dict[str, Any] = {
    "seeds": 3,
    "losses": ("supcon", "spread"),
    "train": common.VIT,
    "datasets": {"cifar10": {"spread": {"temperature": 0.9, "alpha": 0.67}},
                 "cifar100-coarse-u": {"spread": {"alpha": 0.25}}},
    "tsne_points": 3000,
}
METRICS = ("intra_class_cosine", "common_centre_cosine", "rare_centre_cosine", "accuracy")


def report(rows: list[dict[str, Any]], cfg: dict[str, Any], out: Path) -> str:
    lines = ["## Geometry of test embeddings (cosine similarities; mean ± std over seeds)\n",
             "| dataset | loss | " + " | ".join(METRICS) + " | paper (CIFAR10): intra / common / rare |",
             "|---|---|" + "---|" * (len(METRICS) + 1)]
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        for loss in dict.fromkeys(r["loss"] for r in rows):
            sub = [r for r in rows if r["dataset"] == ds and r["loss"] == loss]
            if not sub:
                continue
            cells = [summarise(sub, (), m).get((), None) for m in METRICS]
            text = [c.format(1.0, 3) if c is not None else "–" for c in cells]
            p = FIG2_GEOMETRY.get(loss)
            ptext = " / ".join(f"{p[k]:.2f}" for k in ("intra_class_cosine", "common_centre_cosine",
                                                          "rare_centre_cosine")) if p else "–"
            lines.append(f"| {ds} | {LOSS_NAMES.get(loss, loss)} | " + " | ".join(text) + f" | {ptext} |")
    lines.append("\naccuracy is the end model's test accuracy on the training (coarse) labels, as a fraction.")
    _pictures(rows, out, cfg["tsne_points"])
    return "\n".join(lines) + "\n"


def _pictures(rows: list[dict[str, Any]], out: Path, max_points: int, by_size: bool = False) -> None:
    """t-SNE of the seed-0 test embeddings of each run, coloured by class and by stratum (and,
    with by_size, by the training size of each point's stratum, from the run's "strata" rows)."""
    for row in rows:
        if row.get("seed") != 0:
            continue
        path = out.parent / "runs" / row["run"] / "embeddings" / "test.npz"
        sizes = {s["stratum"]: s["train_size"] for s in row.get("strata", [])} if by_size else None
        if path.exists():
            tsne_picture(path, out / f"tsne_{row['dataset']}_{row['loss']}.png", sizes=sizes,
                         title=f"{row['dataset']}, {LOSS_NAMES.get(row['loss'], row['loss'])}", max_points=max_points)


def tsne_picture(npz: Path, png: Path, *, title: str, max_points: int = 1500, seed: int = 0,
                 sizes: dict[int, int] | None = None) -> Path:
    """t-SNE of the embeddings in `npz` coloured by class label, by stratum and (given `sizes`,
    {stratum: training points}) by stratum size, as in the paper's Figure 3."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.manifold import TSNE

    with np.load(npz) as data:
        emb, label, stratum = data["embedding"], data["label"], data["stratum"]
    rng = np.random.default_rng(seed)
    keep = rng.permutation(len(emb))[:max_points]
    emb, label, stratum = emb[keep], label[keep], stratum[keep]
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    xy = TSNE(n_components=2, init="pca", random_state=seed, perplexity=min(30, len(emb) - 1)).fit_transform(emb)
    panels = [(label, "class", "tab10" if label.max() < 10 else "tab20"),
              (stratum, "stratum", "tab10" if stratum.max() < 10 else "tab20")]
    if sizes:
        panels.append((np.log10([max(1, sizes.get(int(v), 1)) for v in stratum]), "log10 stratum size", "viridis"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4))
    for ax, (colour, name, cmap) in zip(axes, panels):
        points = ax.scatter(xy[:, 0], xy[:, 1], c=colour, cmap=cmap, s=4)
        ax.set(title=f"{title}: by {name}", xticks=[], yticks=[])
        if cmap == "viridis":
            fig.colorbar(points, ax=ax)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def claims(rows: list[dict[str, Any]], cfg: dict[str, Any]) -> list[tuple[str, str]]:
    return (common.winner_claims(rows, group="dataset", metric="intra_class_cosine", winner="spread",
                                 against=("supcon",), what="has the lower intra-class cosine", higher=False, scale=1.0)
            + common.winner_claims(rows, group="dataset", metric="rare_centre_cosine", winner="spread",
                                   against=("supcon",), what="puts rare strata further from the class centre",
                                   higher=False, scale=1.0))


EXPERIMENTS = [Experiment(
    name="fig2", summary="Figure 2: intra-class cosine and rare vs common strata, L_SC vs L_spread (+ t-SNE)",
    cpu_minutes=6, module=__name__, config=lambda scale: common.merge(small if scale == "small" else full),
    smoke=lambda cfg: {**common.smoke_grid(cfg, 1), "tsne_points": 100},
    plan=lambda cfg, seeds, rows: common.grid_plan(cfg, seeds, ("accuracy", "geometry")),
    execute=common.train_and_evaluate, report=report, validate=common.validate_train_spec,
    claims=claims,
)]
