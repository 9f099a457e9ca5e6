"""Figure 4: end-model performance (left) and coarse-to-fine transfer (right), per loss and protocol.

    spreadcon reproduce fig4-end-model [--scale small|full] [--seeds 3] [--data-root DIR]
    spreadcon reproduce fig4-transfer  [--scale small|medium|full] [--seeds 5] [--data-root DIR]

Protocol (SPEC.md, Section 5): the contrastive loss is trained jointly with a cross-entropy head
(the ViT protocol); the ResNet50 datasets (Waterbirds, ISIC) train the contrastive loss alone,
then a linear probe. End model: test accuracy of that head (AUROC for ISIC). Transfer: train on
coarse labels, freeze, fit a linear classifier on the fine labels (the strata), report fine test
accuracy. Model selection: best validation accuracy on the training labels. Each dataset's
L_spread (tau, alpha) is the paper's final choice (Appendix E.2) unless validated here;
`spread-authors` takes the same settings. L_SS and L_SC use tau 0.5.

Two protocols (TrainConfig.embedding), both at small and medium scale, the paper's first:
  paper       no projection head: the loss, the CE head and the probes read one embedding
              (recipes.PAPER_TRAIN: a 256-unit ReLU layer, then a 128-d Linear embedding);
  projection  h -> MLP -> z: the loss and the CE head read z, the probes read h (recipes.SMALL_TRAIN);
              transfer and geometry at z are reported too (`fine_transfer_z_accuracy`, ...).
Every row records its `embedding`; the floors (a probe on the raw pixels, and on the same net at
random init) are planned per dataset and protocol, since the random-init floor is the protocol's
architecture. Five losses, the ones the paper's numbers may have come from: L_SS, our exact L_SC,
the authors' released `supcon-authors`, our exact L_spread and the authors' `spread-authors`.

Small scale (embedded data; 2 CPU cores): MNIST-5k-Coarse stands in for MNIST-Coarse,
MNIST-5k-Coarse-U for CIFAR100-Coarse-U, spurious-MNIST for Waterbirds, digits for MNIST. Transfer:
5 seeds on mnist5k-coarse and mnist5k-coarse-u, 3 on digits-coarse; end model: 3 seeds. Medium
scale: real CIFAR-10-Coarse, 3 seeds, both protocols. Expected (the paper): L_spread >= L_SC on end
accuracy in most rows, and the best transfer in every coarse row; the claims compare losses within
one dataset and protocol, paired over seeds (`spreadcon.experiments.claims`), and a cell that
lacks a loss is skipped, not failed.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from spreadcon.experiments import charts, common
from spreadcon.experiments.claims import Claim, winner_claims
from spreadcon.experiments.paper import (
    FIG4_END_MODEL, FIG4_TRANSFER, LOSS_NAMES, SMALL_ANALOGUE, TRANSFER_ALPHA, paper_value,
)
from spreadcon.experiments.recipes import (
    DIGITS, MEDIUM_PAPER_TRAIN, MEDIUM_TRAIN, PAPER_ALPHA, PROTOCOLS, RESNET50, VALIDATED_ALPHA, VIT, merge,
)
from spreadcon.experiments.runner import Experiment, RunSpec
from spreadcon.experiments.table import markdown

LOSSES = ("simclr", "supcon", "supcon-authors", "spread", "spread-authors")
FULL_LOSSES = ("simclr", "supcon", "spread")
SMOKE_LOSSES = ("supcon", "spread")


def _alpha(dataset: str) -> dict[str, Any]:
    """A small dataset's L_spread settings per protocol: the validated alpha of each
    (recipes.VALIDATED_ALPHA, recipes.PAPER_ALPHA)."""
    return {"spread": {"alpha": VALIDATED_ALPHA[dataset]},
            "embeddings": {"paper": {"spread": {"alpha": PAPER_ALPHA[dataset]}}}}


# --- end model (Figure 4 left) ------------------------------------------------------------------
end_small: dict[str, Any] = {
    "seeds": 3,
    "losses": LOSSES,
    "embeddings": PROTOCOLS,
    "train": {},
    "floors": True,
    "datasets": {
        "mnist5k-coarse": _alpha("mnist5k-coarse"),
        "spurious-mnist": {"spread": {"alpha": 0.5}},   # joint CE head, as the robustness app's preset
        "digits": {**DIGITS, "spread": {"alpha": 0.5}},
    },
}

_VIT, _RESNET = VIT, RESNET50
end_full: dict[str, Any] = {
    "seeds": 3,
    "losses": FULL_LOSSES,
    "train": {},
    "datasets": {
        "cifar10": {**_VIT, "spread": {"temperature": 0.9, "alpha": 0.67}},
        "cifar10-coarse": {**_VIT, "spread": {"alpha": 0.16}},
        "cifar100": {**_VIT, "spread": {"alpha": 0.33}},
        "cifar100-coarse": {**_VIT, "spread": {"alpha": 0.25}},
        "cifar100-coarse-u": {**_VIT, "spread": {"alpha": 0.25}},
        "mnist": {**_VIT, "spread": {"alpha": 0.5}},
        "mnist-coarse": {**_VIT, "spread": {"alpha": 0.5}},
        "waterbirds": {**_RESNET, "spread": {"alpha": 0.5}},
        "isic": {**_RESNET, "spread": {"alpha": 0.5}},
    },
}

# --- coarse-to-fine transfer (Figure 4 right) ---------------------------------------------------
transfer_small: dict[str, Any] = {
    "seeds": 5,
    "losses": LOSSES,
    "embeddings": PROTOCOLS,
    "train": {},
    "evals": ("transfer", "geometry"),
    "floors": True,
    "datasets": {
        "mnist5k-coarse": _alpha("mnist5k-coarse"),
        "mnist5k-coarse-u": {"spread": {"alpha": 0.25}},
        "digits-coarse": {**DIGITS, "spread": {"alpha": 0.5}, "max_seeds": 3},
    },
}
# Medium scale (issue 16): real CIFAR-10-Coarse under --data-root, both protocols (recipes.MEDIUM_*).
transfer_medium: dict[str, Any] = {
    "seeds": 3,
    "losses": LOSSES,
    "embeddings": {"paper": MEDIUM_PAPER_TRAIN, "projection": MEDIUM_TRAIN},
    # the projection rows keep the four losses they ran with (a third seed added)
    "embedding_losses": {"projection": ("simclr", "supcon", "supcon-authors", "spread")},
    "train": {},
    "evals": ("transfer", "geometry"),
    "floors": True,
    # the projection rows keep the paper's alpha; the paper rows take E.2's under their own recipe
    # (sweep-paper --scale medium: recipes.PAPER_ALPHA)
    "datasets": {"cifar10-coarse": {
        "spread": {"alpha": TRANSFER_ALPHA["cifar10-coarse"]},
        "embeddings": {"paper": {"spread": {"alpha": PAPER_ALPHA["cifar10-coarse"]}}},
    }},
}
transfer_full: dict[str, Any] = {
    "seeds": 3,
    "losses": FULL_LOSSES,
    "train": {},
    "datasets": {ds: {**_VIT, "spread": {"alpha": a}} for ds, a in TRANSFER_ALPHA.items()},
}


def _config(small: dict[str, Any], full: dict[str, Any], medium: dict[str, Any] | None = None):
    return lambda scale: merge({"small": small, "medium": medium, "full": full}[scale])


# --- tables: one per protocol, the paper's first ------------------------------------------------
TITLES = {"paper": "Paper protocol (no projection head: the loss, the CE head and the probe read one embedding)",
          "projection": "Projection protocol (h -> MLP -> z: the loss and the CE head read z, the probe h)",
          None: "One embedding"}
AT_H, AT_Z = ", probed at h (the backbone output)", ", probed at z (the layer the loss reads; floors: see h)"
FLOOR_NAMES = ("raw-pixels", "random-init")


def by_protocol(rows: Sequence[dict[str, Any]]) -> list[tuple[str | None, list[dict[str, Any]]]]:
    """[(embedding, its rows)], the paper protocol first, then the others in row order."""
    found = list(dict.fromkeys(r.get("embedding") for r in rows))
    order = sorted(found, key=lambda e: (e != "paper", found.index(e)))
    return [(e, [r for r in rows if r.get("embedding") == e]) for e in order]


def protocol_tables(rows: Sequence[dict[str, Any]], metric: str, *, paper=None, scale: float = 100.0,
                    digits: int = 1, probed: bool = False) -> str:
    """`metric` as one markdown table per protocol (datasets down, losses across; the floors where
    they have the metric), the paper protocol first. probed: the metric is read where the probe
    reads (h under the projection protocol, or z for a "_z_" metric), and the title says which."""
    at_z = "_z_" in metric
    out = []
    for emb, sub in by_protocol(rows):
        sub = [r for r in sub if metric in r]
        if not sub:
            continue
        layer = (AT_Z if at_z else AT_H) if probed and emb == "projection" else ""
        title = TITLES.get(emb, f"Protocol {emb}") + layer
        out.append(f"### {title}\n\n" + markdown(sub, row_key="dataset", col_key="loss", metric=metric, paper=paper,
                                                col_names=LOSS_NAMES, scale=scale, digits=digits))
    return "\n".join(out)


def _chart(rows: list[dict[str, Any]], metric: str, path: Path, title: str) -> None:
    """Bars per (dataset, protocol) cell, one per loss."""
    cells = [{**r, "cell": f"{r['dataset']}\n{r.get('embedding') or ''}"} for r in rows]
    charts.bar_chart(cells, group="cell", hue="loss", metric=metric, path=path, title=title)


def _end_report(rows: list[dict[str, Any]], cfg: dict[str, Any], out: Path) -> str:
    _chart(rows, "coarse_accuracy", out / "end_model.png", "Figure 4 (left): end-model test accuracy")
    text = "## End-model test accuracy (%)\n\n" + protocol_tables(
        rows, "coarse_accuracy", paper=lambda d, l: paper_value(FIG4_END_MODEL, d, l))
    if any("auroc" in r for r in rows):
        text += "\n## AUROC (%) on the binary tasks\n\n" + protocol_tables(rows, "auroc")
    if any("worst_group_accuracy" in r for r in rows):
        text += "\n## Worst-group test accuracy (%)\n\n" + protocol_tables(rows, "worst_group_accuracy")
    return text + _analogue_note()


TRANSFER_EXTRA = (
    ("fine_transfer_z_accuracy", "Coarse-to-fine transfer probed at z (%)", 100.0),
    ("coarse_accuracy", "Coarse (training-label) test accuracy of the same runs (%)", 100.0),
    ("intra_class_cosine", "Intra-class cosine similarity of the test embeddings (the probed layer; lower: "
                           "less collapse)", 1.0),
    ("intra_class_z_cosine", "Intra-class cosine similarity at z", 1.0),
)


def _transfer_report(rows: list[dict[str, Any]], cfg: dict[str, Any], out: Path) -> str:
    _chart(rows, "fine_transfer_accuracy", out / "transfer.png", "Figure 4 (right): coarse-to-fine transfer")
    text = ("## Coarse-to-fine transfer: fine-label test accuracy of a linear probe on frozen embeddings (%)\n\n"
            + protocol_tables(rows, "fine_transfer_accuracy", paper=lambda d, l: paper_value(FIG4_TRANSFER, d, l),
                              probed=True))
    for metric, title, scale in TRANSFER_EXTRA:
        if any(metric in r for r in rows):
            text += f"\n## {title}\n\n" + protocol_tables(rows, metric, scale=scale, digits=1 if scale == 100 else 3,
                                                           probed=metric != "coarse_accuracy")
    return text + _analogue_note()


def _analogue_note() -> str:
    pairs = ", ".join(f"{small}: {paper}" for small, paper in SMALL_ANALOGUE.items())
    return ("\nPaper columns: the paper's number for the dataset, or for the paper dataset a small one "
            f"stands in for ({pairs}); those are different data and models, so compare the ordering of "
            "the losses, not the values. The paper has no projection head: its numbers belong beside "
            "the paper protocol's table.\n")


def _smoke(cfg: dict[str, Any]) -> dict[str, Any]:
    """One dataset, one seed, L_SC and L_spread under each protocol (a one-recipe config: its losses)."""
    out = common.smoke_grid(cfg, n_datasets=1)
    return {**out, "losses": SMOKE_LOSSES, "embedding_losses": {}} if cfg.get("embeddings") else out


def labelled_plan(cfg: dict[str, Any], seeds: Sequence[int], evals: Sequence[str]) -> list[RunSpec]:
    """The grid (common.grid_plan), each row labelled with its run's `embedding` (floors: their cell's)."""
    return [replace(s, labels={**s.labels, "embedding": common.spec_config(s).embedding})
            for s in common.grid_plan(cfg, seeds, evals)]


# --- claims: losses compared within one (dataset, protocol) cell, paired over seeds --------------
CELL = ("dataset", "embedding")


def _end_claims(rows: list[dict[str, Any]], cfg: dict[str, Any]) -> list[Claim]:
    acc = "coarse_accuracy"
    return (winner_claims(rows, group=CELL, metric=acc, winner="spread", against=("supcon",),
                          what="is more accurate than L_SC")
            + winner_claims(rows, group=CELL, metric=acc, winner="spread-authors", against=("supcon-authors",),
                            what="is more accurate than L_SC (authors)")
            + winner_claims(rows, group=CELL, metric=acc, winner="spread", against=("supcon", "simclr"),
                            what="has the best end-model accuracy of L_SS, L_SC and L_spread"))


def _transfer_claims(rows: list[dict[str, Any]], cfg: dict[str, Any]) -> list[Claim]:
    transfer = "fine_transfer_accuracy"
    return (winner_claims(rows, group=CELL, metric=transfer, winner="spread", against=("supcon",),
                          what="transfers to the fine labels better than L_SC")
            + winner_claims(rows, group=CELL, metric=transfer, winner="spread", against=("supcon-authors",),
                            what="transfers better than the authors' L_SC")
            + winner_claims(rows, group=CELL, metric=transfer, winner="spread-authors",
                            against=("supcon-authors",), what="transfers better than L_SC (authors)")
            + winner_claims(rows, group=CELL, metric="fine_transfer_z_accuracy", winner="spread",
                            against=("supcon",), what="transfers better than L_SC probed at z")
            + winner_claims(rows, group=CELL, metric=transfer, winner="spread", against=("supcon", "simclr"),
                            what="transfers best of L_SS, L_SC and L_spread")
            + margin_claims(rows, points=5.0))


def margin_claims(rows: list[dict[str, Any]], *, points: float) -> list[Claim]:
    """Issue 16's target, per cell: L_spread transfers at least `points` better than L_SC (the
    whole interval of the paired difference above `points`)."""
    return winner_claims(rows, group=CELL, metric="fine_transfer_accuracy", winner="spread", against=("supcon",),
                         what=f"transfers at least {points:g} points better than L_SC", kind="target",
                         margin=points / 100)


# Estimated wall time of `--scale small` from scratch on 2 CPU cores: about a minute per run on
# mnist5k-coarse and spurious-mnist, 40 s on mnist5k-coarse-u, 20 s on the 8x8 digits, seconds per
# floor. Transfer: 50 + 50 + 30 runs (about 95 minutes); end model: 30 + 30 + 30 runs (about 70, of
# which the 30 on mnist5k-coarse are fig4-transfer's own runs, trained once).
END_MODEL = Experiment(
    name="fig4-end-model",
    summary="Figure 4 (left): end-model accuracy of five losses, paper and projection protocols",
    cpu_minutes=70, module=__name__, config=_config(end_small, end_full), smoke=_smoke,
    plan=lambda cfg, seeds, rows: labelled_plan(cfg, seeds, ()),
    execute=common.train_and_evaluate, report=_end_report, validate=common.validate_train_spec,
    claims=_end_claims,
)
TRANSFER = Experiment(
    name="fig4-transfer",
    summary="Figure 4 (right): coarse-to-fine transfer of five losses, paper and projection protocols",
    cpu_minutes=100, module=__name__, config=_config(transfer_small, transfer_full, transfer_medium), smoke=_smoke,
    plan=lambda cfg, seeds, rows: labelled_plan(cfg, seeds, cfg.get("evals", ("transfer",))),
    execute=common.train_and_evaluate, report=_transfer_report, validate=common.validate_train_spec,
    claims=_transfer_claims, scales=("small", "medium", "full"),
)
EXPERIMENTS = [END_MODEL, TRANSFER]
