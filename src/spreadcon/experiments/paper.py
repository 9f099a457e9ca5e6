"""The paper's reported numbers, as data (Chen et al., "The Details Matter", ICLR 2022 submission).

Copied once from the paper (and ../shared/SPEC.md); every table that `spreadcon reproduce`
writes puts these beside what spreadcon measured. Percentages as printed in the paper
(accuracy, or AUROC for ISIC). Loss keys follow `spreadcon.losses.LOSSES` ("simclr" is L_SS,
"supcon" L_SC, "spread" L_spread, "attract" L_attract) plus "ce" for cross-entropy.
Numbers only read from plots (Figures 5 centre/right, 6, 7) are not given; the claims the text
makes about them are in `CLAIMS`.
"""

from __future__ import annotations

LOSS_NAMES = {"simclr": "L_SS", "supcon": "L_SC", "supcon-authors": "L_SC (authors)", "spread": "L_spread",
              "spread-authors": "L_spread (authors)", "attract": "L_attract", "ce": "L_CE"}

# Figure 4 (left): end-model performance, % (AUROC for ISIC).
FIG4_END_MODEL: dict[str, dict[str, float]] = {
    "cifar10": {"simclr": 89.7, "supcon": 90.9, "spread": 91.5},
    "cifar10-coarse": {"simclr": 97.7, "supcon": 96.5, "spread": 98.1},
    "cifar100": {"simclr": 68.0, "supcon": 67.5, "spread": 69.1},
    "cifar100-coarse": {"simclr": 76.9, "supcon": 77.2, "spread": 78.3},
    "cifar100-coarse-u": {"simclr": 72.1, "supcon": 71.6, "spread": 72.4},
    "mnist": {"simclr": 99.1, "supcon": 99.3, "spread": 99.2},
    "mnist-coarse": {"simclr": 99.1, "supcon": 99.4, "spread": 99.4},
    "waterbirds": {"simclr": 77.8, "supcon": 73.9, "spread": 77.9},
    "isic": {"simclr": 87.8, "supcon": 88.7, "spread": 90.0},
}

# Figure 4 (right): coarse-to-fine transfer accuracy, %.
FIG4_TRANSFER: dict[str, dict[str, float]] = {
    "cifar10-coarse": {"simclr": 71.7, "supcon": 52.5, "spread": 76.1},
    "cifar100-coarse": {"simclr": 62.0, "supcon": 62.4, "spread": 63.9},
    "cifar100-coarse-u": {"simclr": 61.9, "supcon": 59.5, "spread": 62.4},
    "mnist-coarse": {"simclr": 97.1, "supcon": 98.8, "spread": 99.0},
}

# Table 2 (Appendix F.1): L_attract alone, end-model accuracy, %.
TABLE2_ATTRACT: dict[str, dict[str, float]] = {
    "cifar10": {"simclr": 89.7, "supcon": 90.9, "attract": 91.3, "spread": 91.5},
    "cifar100": {"simclr": 68.0, "supcon": 67.5, "attract": 68.9, "spread": 69.1},
}

# Figure 5 (left): strata-recovery F1 and worst-group performance (AUROC for ISIC), %.
FIG5_RECOVERY_F1: dict[str, dict[str, float]] = {
    "waterbirds": {"ce": 56.3, "supcon": 47.2, "spread": 59.0},
    "isic": {"ce": 74.0, "supcon": 92.5, "spread": 93.8},
}
FIG5_WORST_GROUP: dict[str, dict[str, float]] = {
    "waterbirds": {"ce": 88.4, "supcon": 86.5, "spread": 89.0},
    "isic": {"ce": 92.0, "supcon": 93.3, "spread": 92.6},
}

# Figure 2 (CIFAR10 test set, t-SNE panel annotations): mean intra-class cosine similarity and
# the cosine similarity with the class centre of a common-stratum and a rare-stratum dog.
FIG2_GEOMETRY: dict[str, dict[str, float]] = {
    "supcon": {"intra_class_cosine": 0.88, "common_centre_cosine": 0.98, "rare_centre_cosine": 0.76},
    "spread": {"intra_class_cosine": 0.49, "common_centre_cosine": 0.92, "rare_centre_cosine": 0.22},
}

# Appendix E.2: the final (tau, alpha) of L_spread per dataset, and the coarse-to-fine alphas (tau 0.5).
HYPERPARAMETERS: dict[str, tuple[float, float]] = {
    "cifar10": (0.9, 0.67), "cifar10-coarse": (0.5, 0.16), "cifar100": (0.5, 0.33),
    "cifar100-coarse": (0.5, 0.25), "cifar100-coarse-u": (0.5, 0.25), "mnist": (0.5, 0.5),
    "mnist-coarse": (0.5, 0.5), "isic": (0.5, 0.5), "waterbirds": (0.5, 0.5),
}
TRANSFER_ALPHA: dict[str, float] = {
    "cifar10-coarse": 0.25, "cifar100-coarse": 0.25, "cifar100-coarse-u": 0.25, "mnist-coarse": 0.5,
}
SWEEP_ALPHAS = (0.16, 0.25, 0.33, 0.5, 0.67)
SWEEP_TAUS = (0.1, 0.3, 0.5, 0.7, 0.9)

# What the text claims about figures whose numbers are only plotted.
CLAIMS: dict[str, str] = {
    "fig2": "L_spread gives lower intra-class cosine similarity (0.49 vs 0.88) and puts rare strata "
            "further from the class centre (0.22 vs 0.76) than L_SC (Section 3, Figure 2).",
    "fig3": "Points from large strata cluster tightly; points from small strata scatter "
            "(CIFAR100-Coarse-U, Figure 3).",
    "fig4-end-model": "L_spread is best in 7 of 9 datasets and ties in 1 (Figure 4 left).",
    "fig4-transfer": "L_spread transfers best from coarse to fine labels on all 4 datasets, "
                     "+23.6 points over L_SC on CIFAR10-Coarse (Figure 4 right).",
    "fig5-robustness": "Strata recovered from L_spread embeddings are the best (F1), and Group DRO "
                       "on them lifts Waterbirds worst-group accuracy by 2.5 points over L_SC "
                       "and 0.6 over L_CE (Figure 5 left).",
    "fig5-noise": "Uncorrected noise costs up to 10 points at 50% noise; the geometric correction "
                  "recovers 4.8 points at 50% with L_SC, L_spread 0.9 more at 50% and 1.6 more "
                  "at 20%; L_spread recovers 75% of the lost performance at 20% noise, L_SC 45% "
                  "(CIFAR10, CE head on 20% of labels; Figure 5 centre).",
    "fig5-coreset": "Spread-difficulty coresets beat prior work by 1.0 point at 30% of CIFAR10 and "
                    "Toneva et al. by up to 5.2 points; competitive at large sizes (Figure 5 right).",
    "table2-attract": "L_attract alone beats L_SC but L_spread beats both (Table 2).",
    "fig6-sample-complexity": "With the CE head on 1% of labels, L_spread beats L_SS by 13.9 and "
                              "L_SC by 0.5 points at 10% of labels for the contrastive head, and "
                              "by 25.4 and 10.3 points at 100% (CIFAR10, Figure 6).",
    "fig7-noise-grid": "Geometric correction with L_spread is the most consistent across noise "
                       "rates and CE-head label fractions; with L_SC it is unreliable; the "
                       "expectation-based debiasing is unstable (Figure 7).",
    "sweep": "Appendix E.2: alpha swept at tau 0.5, then tau swept for the two best alphas.",
    "theory": "Appendix C.2 (Lemma 3) subsampling probabilities; collapsed embeddings have "
              "coarse-to-fine error >= log(m e + (C - m) e^(c_K)) - 1; common strata sit closer "
              "together than rare ones as the training fraction t grows (Section 4.1).",
}

# Which paper dataset each small, embedded dataset stands in for (tables put them side by side).
SMALL_ANALOGUE: dict[str, str] = {
    "digits": "mnist", "digits-coarse": "mnist-coarse", "mnist5k": "mnist",
    "mnist5k-coarse": "mnist-coarse", "mnist5k-coarse-u": "cifar100-coarse-u",
    "spurious-mnist": "waterbirds",
}


def paper_value(table: dict[str, dict[str, float]], dataset: str, loss: str) -> float | None:
    """The paper's number for `dataset` (or the paper dataset it stands in for) and `loss`."""
    row = table.get(dataset) or table.get(SMALL_ANALOGUE.get(dataset, ""), {})
    return row.get(loss)
