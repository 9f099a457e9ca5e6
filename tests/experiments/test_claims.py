"""spreadcon.experiments.claims: paired differences with a Student-t interval, verdicts that can
fail, and the experiments' claims on hand-made rows."""

from __future__ import annotations

import math

import pytest

from spreadcon.experiments import claims, fig2, fig3, fig4, fig5_noise, fig5_robustness, sweep
from spreadcon.experiments.claims import FAILS, HOLDS, UNCLEAR, outcome, paired_difference, verdict

T2 = 4.302652729911275    # Student t, 97.5% quantile, 2 degrees of freedom (tables: 4.303)
T1 = 12.706204736174698   # 1 degree of freedom (tables: 12.706)


def test_paired_difference_by_hand():
    a = {0: 0.92, 1: 0.94, 2: 0.93, 7: 0.5}   # seed 7 only in a: left out
    b = {0: 0.90, 1: 0.91, 2: 0.905, 9: 0.1}
    d = paired_difference(a, b)               # differences 0.02, 0.03, 0.025: mean 0.025, sd 0.005
    half = T2 * 0.005 / math.sqrt(3)
    assert d["n"] == 3 and d["seeds"] == [0, 1, 2] and d["mean"] == pytest.approx(0.025)
    assert d["low"] == pytest.approx(0.025 - half) and d["high"] == pytest.approx(0.025 + half)
    two = paired_difference({0: 0.5, 1: 0.7}, {0: 0.4, 1: 0.5})  # 0.1, 0.2: mean 0.15, sd 0.0707
    assert two["low"] == pytest.approx(0.15 - T1 * math.sqrt(0.005) / math.sqrt(2))


def test_verdicts_hold_fail_or_cannot_tell():
    up = paired_difference({0: 0.92, 1: 0.94, 2: 0.93}, {0: 0.90, 1: 0.91, 2: 0.905})
    assert outcome(up) == HOLDS and outcome(up, higher=False) == FAILS
    down = paired_difference({0: 0.90, 1: 0.91, 2: 0.905}, {0: 0.92, 1: 0.94, 2: 0.93})
    assert outcome(down) == FAILS
    noisy = paired_difference({0: 0.91, 1: 0.895, 2: 0.92}, {0: 0.90, 1: 0.90, 2: 0.90})  # +0.01, -0.005, +0.02
    assert noisy["low"] < 0 < noisy["high"] and outcome(noisy) == UNCLEAR
    one = paired_difference({0: 0.99}, {0: 0.10})
    assert one["n"] == 1 and one["low"] == -math.inf and one["high"] == math.inf and outcome(one) == UNCLEAR
    assert outcome(paired_difference({0: 1.0}, {1: 0.0})) == UNCLEAR  # no seed in common
    assert outcome(up, margin=0.02) == UNCLEAR and outcome(up, margin=0.01) == HOLDS  # 0.0128 to 0.0374
    assert outcome(up, margin=0.05) == FAILS


def test_verdict_text_carries_the_numbers():
    up = paired_difference({0: 0.92, 1: 0.94, 2: 0.93}, {0: 0.90, 1: 0.91, 2: 0.905})
    assert verdict([(up, "A - B")]) == "holds: A - B = +2.5 points (95% CI +1.3 to +3.7, 3 paired seeds)"
    one = paired_difference({0: 0.5}, {0: 0.25})
    assert verdict([(one, "A - B")], scale=1.0) == ("not distinguishable: A - B = +0.250 (one paired seed: "
                                                    "no interval)")
    # against several rivals: holds only when it holds against each, fails when it fails against any
    assert verdict([(up, "A - B"), (one, "A - C")]).startswith(UNCLEAR)
    down = paired_difference({0: 0.90, 1: 0.91, 2: 0.905}, {0: 0.92, 1: 0.94, 2: 0.93})
    assert verdict([(up, "A - B"), (down, "A - C")]).startswith(FAILS)


def _rows(metric: str, by_loss: dict[str, list[float]], **labels) -> list[dict]:
    return [{**labels, "loss": loss, "seed": s, metric: v}
            for loss, vals in by_loss.items() for s, v in enumerate(vals)]


def test_winner_claims_are_paired_per_group_and_carry_their_kind():
    rows = _rows("acc", {"spread": [0.95, 0.97, 0.96], "supcon": [0.90, 0.92, 0.915], "simclr": [0.5, 0.6, 0.55]},
                 dataset="d", embedding="paper")
    [(kind, claim, text)] = claims.winner_claims(rows, group=("dataset", "embedding"), metric="acc", winner="spread",
                                                 against=("supcon", "simclr"), what="wins")
    assert kind == "paper" and claim == "d (paper): L_spread wins"
    assert text.startswith("holds: L_spread - L_SC = +4.8 points (95% CI") and "L_spread - L_SS = +41.0" in text
    [(_, _, text)] = claims.winner_claims(rows, group="dataset", metric="acc", winner="simclr", against=("supcon",),
                                          what="wins")
    assert text.startswith("fails:")


def test_fig4_margin_target_needs_the_whole_interval_above_five_points():
    def rows(spread, supcon):
        return _rows("fine_transfer_accuracy", {"spread": spread, "supcon": supcon}, dataset="d",
                     embedding="projection")

    [(kind, claim, text)] = fig4.margin_claims(rows([0.61, 0.62, 0.625], [0.54, 0.54, 0.55]), points=5.0)
    assert kind == "target" and "at least 5 points" in claim and text.startswith("holds: L_spread - L_SC = +7.5")
    assert "needed: the whole interval above +5.0 points" in text
    assert fig4.margin_claims(rows([0.55, 0.56, 0.565], [0.54, 0.54, 0.55]), points=5.0)[0][2].startswith("fails")
    # a mean of 6.8 points, but the seeds scatter: the interval reaches below 5
    assert fig4.margin_claims(rows([0.60, 0.62, 0.61], [0.54, 0.54, 0.545]), points=5.0)[0][2].startswith(UNCLEAR)


def test_fig4_claims_compare_within_each_protocol_and_skip_cells_lacking_a_loss():
    """Both protocols on one dataset; the projection cell has no authors' variants (as at medium scale)."""
    rows = (_rows("fine_transfer_accuracy", {"spread": [0.95, 0.96, 0.97], "supcon": [0.90, 0.91, 0.92],
                                             "simclr": [0.93, 0.93, 0.94], "spread-authors": [0.96, 0.96, 0.97],
                                             "supcon-authors": [0.90, 0.90, 0.91]}, dataset="d", embedding="paper")
            + _rows("fine_transfer_accuracy", {"spread": [0.90, 0.91, 0.92], "supcon": [0.90, 0.91, 0.92]},
                    dataset="d", embedding="projection"))
    found = {claim: text for _, claim, text in fig4._transfer_claims(rows, {})}
    assert found["d (paper): L_spread (authors) transfers better than L_SC (authors)"].startswith(HOLDS)
    assert found["d (paper): L_spread transfers to the fine labels better than L_SC"].startswith(HOLDS)
    assert found["d (projection): L_spread transfers to the fine labels better than L_SC"].startswith(UNCLEAR)
    assert not any("(projection)" in c and "authors" in c for c in found)  # no rival there: skipped, not failed
    assert fig4._end_claims(rows, {}) == []  # no coarse accuracy in these rows: nothing to claim


def test_fig2_checks_rare_against_common_strata_within_each_loss():
    rows = [{"dataset": "d", "loss": loss, "seed": s, "intra_class_cosine": 0.5,
             "common_centre_cosine": common, "rare_centre_cosine": rare + 0.002 * s}
            for loss, common, rare in (("spread", 0.90, 0.30), ("supcon", 0.95, 0.96)) for s in range(3)]
    found = {claim: (kind, text) for kind, claim, text in fig2.claims(rows, {})}
    kind, text = found["d: under L_spread rare strata sit farther from the class centre than common ones"]
    assert kind == "paper" and text.startswith("holds: rare - common centre cosine = -0.598")
    assert found["d: under L_SC rare strata sit farther from the class centre than common ones"][1].startswith("fails")
    assert found["d: the common - rare gap is larger under L_spread than under L_SC"][1].startswith("holds")
    assert found["d: L_spread has the lower intra-class cosine"][1].startswith(UNCLEAR)  # equal on every seed


def test_fig3_takes_one_rho_per_seed():
    def run(seed, sign):
        return {"dataset": "d", "loss": "spread", "seed": seed, "strata": [
            {"stratum": k, "train_size": size, "stratum_centre_cosine": sign * size / 100 + 0.01 * k}
            for k, size in enumerate((10, 20, 50, 100))]}

    [(kind, claim, text)] = fig3.claims([run(s, 1) for s in range(3)], {})
    assert kind == "paper" and claim == "d, L_spread: larger strata are tighter"
    assert text.startswith("holds: Spearman rho(size, tightness), mean over seeds = +1.000")
    assert fig3.claims([run(s, -1) for s in range(3)], {})[0][2].startswith("fails")
    assert fig3.claims([run(0, 1)], {})[0][2].startswith(UNCLEAR)  # one seed, however many strata


def test_fig5_claims_that_cannot_fail_are_sanity_checks():
    rows = [{"dataset": "d", "loss": loss, "seed": s, "gdro_true_worst_group": 0.80 + 0.02 * s, "erm_worst_group": 0.0,
             "gdro_pseudo_worst_group": 0.79 if loss == "spread" else 0.5, "recovery_f1": 1.0}
            for loss in ("ce", "spread") for s in range(3)]
    out = {claim: (kind, text) for kind, claim, text in fig5_robustness.claims(rows, {})}
    kind, text = out["d: Group DRO on recovered strata beats ERM (L_spread)"]
    assert kind == "sanity" and "ERM's worst group is 0 on every seed" in text
    kind, text = out["d: Group DRO with the true groups reaches 80% worst-group accuracy"]
    assert kind == "target" and text.startswith(UNCLEAR) and "3 paired seeds" in text  # 80, 82, 84: counted once
    kind, text = out["d: Group DRO on L_spread's recovered groups is within 5 points of the true groups"]
    assert kind == "sanity" and "the recovered groups are the true ones" in text
    rows = [dict(r, erm_worst_group=0.4, recovery_f1=0.7) for r in rows]
    out = {claim: kind for kind, claim, _ in fig5_robustness.claims(rows, {})}
    assert out["d: Group DRO on recovered strata beats ERM (L_spread)"] == "paper"
    assert out["d: Group DRO on L_spread's recovered groups is within 5 points of the true groups"] == "target"


def test_fig5_noise_claims_pair_seeds():
    rows = [{"method": m, "noise_rate": r, "labelled_fraction": 0.2, "seed": s, "coarse_accuracy": acc + 0.005 * s}
            for m, r, acc in (("supcon", 0.0, 0.95), ("supcon", 0.5, 0.80), ("spread+fix", 0.5, 0.90),
                              ("supcon+fix", 0.5, 0.85), ("spread+fix", 0.0, 0.95), ("supcon+fix", 0.0, 0.95))
            for s in range(3)]
    (k1, c1, v1), (k2, c2, v2) = fig5_noise.claims(rows, {})
    assert "uncorrected L_SC loses accuracy" in c1 and v1.startswith("holds: noisy - clean = -15.0 points")
    assert "recovers more" in c2 and v2.startswith("holds") and "recovered 67% vs 33% on seed means" in v2


def test_sweep_claim_holds_when_it_selects_the_papers_setting_and_is_unclear_when_within_noise():
    def row(alpha, s, val):
        return {"loss": "spread", "temperature": 0.5, "alpha": alpha, "seed": s, "coarse_val_accuracy": val}

    cfg = {"dataset": "mnist5k-coarse", "criterion": ("coarse_val_accuracy",)}  # the paper: (0.5, 0.5)
    rows = [row(0.5, s, 0.9) for s in range(3)] + [row(0.25, s, 0.8) for s in range(3)]
    assert sweep.claims(rows, cfg)[0][2].startswith("holds: selected (0.5, 0.5)")
    close = [row(0.5, s, 0.9) for s in range(3)] + [row(0.25, s, v) for s, v in enumerate((0.91, 0.89, 0.92))]
    assert sweep.claims(close, cfg)[0][2].startswith(UNCLEAR)
    far = [row(0.5, s, 0.8 + 0.001 * s) for s in range(3)] + [row(0.25, s, 0.9) for s in range(3)]
    assert sweep.claims(far, cfg)[0][2].startswith("fails")
