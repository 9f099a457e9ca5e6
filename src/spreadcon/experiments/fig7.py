"""Figure 7 (Appendix F.3.2): label noise x the CE head's labelled fraction.

    spreadcon reproduce fig7-noise-grid [--scale small|full] [--seeds 3]

The fig5-noise experiment over more labelled fractions for the cross-entropy head (its runs at
20% are shared with fig5-noise). The paper: the geometric correction with L_spread is the most
consistent; with L_SC it is unreliable (L_SC memorises noisy labels early); the expectation-based
debiasing is unstable and sensitive to the given noise rate. Small scale: digits, the recipe
of fig4 (recipes.SMALL_TRAIN, batch 64). The debiased loss is not offered (see fig5_noise). Expected: the corrected L_spread line at or above uncorrected L_SC at every noise
rate and fraction, the gap shrinking as the CE head gets more clean labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spreadcon.experiments import common, fig5_noise
from spreadcon.experiments.paper import CLAIMS
from spreadcon.experiments.recipes import merge
from spreadcon.experiments.runner import Experiment

small: dict[str, Any] = {**fig5_noise.small, "labelled_fractions": (0.2, 0.5)}
full: dict[str, Any] = {**fig5_noise.full, "labelled_fractions": (0.2, 0.5, 1.0)}


def report(rows: list[dict[str, Any]], cfg: dict[str, Any], out: Path) -> str:
    return (fig5_noise.tables(rows, cfg, out / "fig7_noise_grid.png")
            + f"\nThe paper plots this (no table); its text: {CLAIMS['fig7-noise-grid']}\n")


def smoke(cfg: dict[str, Any]) -> dict[str, Any]:
    return {**fig5_noise.smoke(cfg), "labelled_fractions": (0.2, 0.5), "noise_rates": (0.2,)}


EXPERIMENTS = [Experiment(
    name="fig7-noise-grid", summary="Figure 7: label noise x CE-head labelled fraction, all correction methods",
    cpu_minutes=25, module=__name__, config=lambda scale: merge(small if scale == "small" else full),
    smoke=smoke, plan=fig5_noise.plan, execute=fig5_noise.execute, report=report,
    validate=common.validate_train_spec, claims=fig5_noise.claims,
)]
