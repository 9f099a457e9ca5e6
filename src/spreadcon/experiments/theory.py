"""The theory (Appendix C.2, Lemma 3, Section 4.1) against simulation.

    spreadcon reproduce theory [--seeds 3]

1. Appendix C.2: the probabilities that two strata z, z' both / one / neither appear in a random
   subsample of n = tN points, closed form against their frequencies over simulated subsamples.
   Expected: agreement within Monte-Carlo error (a few 1e-3 with 20,000 trials).
2. Lemma 3: collapsed embeddings (regular simplex) have coarse-to-fine error >= log(m e +
   (C - m) e^{c_K}) - 1 and original-task error >= log(e + (K - 1) e^{c_K}) - 1. Measured: the
   cross-entropy of collapsed embeddings with Lemma 4's optimal classifier, and with a classifier
   fit under ||W_z|| <= 1. Expected: measured = the bound with deterministic labels, never below it.
3. Section 4.1's thought experiment: a small MLP trained with L_SC or L_spread on a fraction t
   of synthetic data from the paper's generative model (two common strata and a rare one per
   class); distances between the centres of a common-common and a common-rare pair as t grows.
   Expected: the rare stratum ends up further from the common ones than the common ones from
   each other, and L_spread keeps both distances larger than L_SC, which shrinks them.
`--scale full` is the same computation with more trials and fractions (CPU minutes either way).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from spreadcon import theory
from spreadcon.experiments.claims import HOLDS, FAILS, Claim, compare
from spreadcon.experiments.recipes import merge
from spreadcon.experiments.runner import Context, Experiment, RunSpec
from spreadcon.experiments.table import mean_std

small: dict[str, Any] = {
    "seeds": 3,
    "presence": {"cases": [[0.3, 0.3, 10], [0.3, 0.02, 50], [0.02, 0.02, 100], [0.1, 0.01, 200]], "trials": 20000},
    "lemma3": {"cases": [[2, 1], [2, 5], [10, 1], [20, 5]], "n_per_stratum": 200, "fit_steps": 300},
    "thought": {"fractions": [0.02, 0.05, 0.1, 0.2, 0.5, 1.0], "losses": ["supcon", "spread"], "n_train": 2000,
                "steps": 150},
}
full: dict[str, Any] = merge(small, {
    "presence": {"trials": 200000},
    "thought": {"fractions": [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0], "steps": 400},
})


def plan(cfg: dict[str, Any], seeds: Sequence[int], rows: list) -> list[RunSpec]:
    pres, lem, th = cfg["presence"], cfg["lemma3"], cfg["thought"]
    specs = [RunSpec(f"presence/p{a}-{b}/n{n}", {"part": "presence", "p": [a, b], "n": n, "trials": pres["trials"]},
                     0, {"part": "presence"}) for a, b, n in pres["cases"]]
    specs += [RunSpec(f"lemma3/K{k}/m{m}", {"part": "lemma3", "k": k, "m": m, "n_per_stratum": lem["n_per_stratum"],
                                            "fit_steps": lem["fit_steps"]}, 0, {"part": "lemma3"})
              for k, m in lem["cases"]]
    specs += [RunSpec(f"thought/{loss}", {"part": "thought", "loss": loss, **{k: v for k, v in th.items() if k != "losses"}},
                      s, {"part": "thought", "loss": loss}) for loss in th["losses"] for s in seeds]
    return specs


def execute(spec: RunSpec, ctx: Context) -> dict[str, Any]:
    p = spec.params
    if p["part"] == "presence":
        a, b = p["p"]
        closed = {k: float(v) for k, v in theory.presence_probabilities(a, b, p["n"]).items()}
        sim = theory.simulate_presence([a, b, 1 - a - b], 0, 1, p["n"], trials=p["trials"], seed=spec.seed)
        return {"p_z": a, "p_z2": b, "n": p["n"], "trials": p["trials"], "closed": closed, "simulated": sim,
                "max_abs_diff": max(abs(closed[c] - sim[c]) for c in theory.CASES)}
    if p["part"] == "lemma3":
        k, m = p["k"], p["m"]
        return {"k": k, "m": m, "bound": theory.coarse_to_fine_bound(k, m),
                "measured": theory.collapsed_error(k, m, n_per_stratum=p["n_per_stratum"], seed=spec.seed),
                "measured_fit": theory.collapsed_error(k, m, n_per_stratum=p["n_per_stratum"], fit_classifier=True,
                                                       steps=p["fit_steps"], seed=spec.seed)}
    rows = theory.thought_experiment(p["fractions"], losses=[p["loss"]], seeds=[spec.seed],
                                     n_train=p["n_train"], steps=p["steps"])
    return {"thought": rows}


def report(rows: list[dict[str, Any]], cfg: dict[str, Any], out: Path) -> str:
    lines = ["## 1. Appendix C.2: which strata a subsample holds (closed form / simulated)\n",
             "| p(z) | p(z') | n = tN | both | only z | only z' | neither | max abs diff |", "|---|---|---|---|---|---|---|---|"]
    for r in (r for r in rows if r["part"] == "presence"):
        cells = [f"{r['closed'][c]:.4f} / {r['simulated'][c]:.4f}" for c in theory.CASES]
        lines.append(f"| {r['p_z']} | {r['p_z2']} | {r['n']} | " + " | ".join(cells) + f" | {r['max_abs_diff']:.4f} |")
    lines += ["\n## 2. Lemma 3: error of collapsed embeddings against the lower bound\n",
              "| K classes | m strata/class | bound | measured (Lemma 4 classifier) | measured (fit, ||W_z|| <= 1) |",
              "|---|---|---|---|---|"]
    for r in (r for r in rows if r["part"] == "lemma3"):
        lines.append(f"| {r['k']} | {r['m']} | {r['bound']:.4f} | {r['measured']:.4f} | {r['measured_fit']:.4f} |")
    thought = [t for r in rows if r["part"] == "thought" for t in r["thought"]]
    if thought:
        lines += ["\n## 3. Section 4.1: distance between strata centres vs training fraction t (mean ± std over seeds)\n",
                  "| t | " + " | ".join(f"{l}: {p}" for l in dict.fromkeys(t["loss"] for t in thought)
                                         for p in ("common-common", "common-rare")) + " |"]
        cols = [(l, p) for l in dict.fromkeys(t["loss"] for t in thought) for p in ("common-common", "common-rare")]
        lines.append("|---|" + "---|" * len(cols))
        for frac in sorted({t["t"] for t in thought}):
            cells = [mean_std(t["delta"] for t in thought if (t["loss"], t["pair"], t["t"]) == (l, p, frac)).format(1, 3)
                     for l, p in cols]
            lines.append(f"| {frac} | " + " | ".join(cells) + " |")
        theory.plot_thought_experiment(thought, out / "thought_experiment.png", n_train=cfg["thought"]["n_train"])
    return "\n".join(lines) + "\n"


def claims(rows: list[dict[str, Any]], cfg: dict[str, Any]) -> list[Claim]:
    thought = [t for r in rows if r["part"] == "thought" for t in r["thought"]]
    return presence_claims(rows, cfg) + lemma3_claims(rows) + (thought_claims(thought) if thought else [])


def presence_claims(rows: list[dict[str, Any]], cfg: dict[str, Any]) -> list[Claim]:
    """Appendix C.2 against simulation, within 4 Monte-Carlo standard errors: a check of our
    closed form and simulator (a mathematical identity), not evidence about the paper."""
    pres = [r for r in rows if r["part"] == "presence"]
    if not pres:
        return []
    worst = max(r["max_abs_diff"] for r in pres)
    tol = 4 * (0.25 / min(r.get("trials", cfg["presence"]["trials"]) for r in pres)) ** 0.5
    return [("sanity", "Appendix C.2's closed-form presence probabilities match simulated subsamples",
             f"{HOLDS if worst <= tol else FAILS}: largest |closed - simulated| = {worst:.4f} "
             f"(4 Monte-Carlo standard errors: {tol:.4f})")]


def lemma3_claims(rows: list[dict[str, Any]]) -> list[Claim]:
    """Lemma 3 on collapsed embeddings whose labels are right by construction (p_correct = 1):
    with Lemma 4's classifier the bound is met exactly, so this checks our code, not the lemma."""
    lem = [r for r in rows if r["part"] == "lemma3"]
    if not lem:
        return []
    gap = min(min(r["measured"], r["measured_fit"]) - r["bound"] for r in lem)
    tight = max(abs(r["measured"] - r["bound"]) for r in lem)
    return [("sanity", "Lemma 3: collapsed embeddings never do better than the bound",
             f"{HOLDS if gap >= -1e-6 else FAILS}: smallest measured - bound = {gap:.4f}; with Lemma 4's "
             f"classifier (labels right by construction) the bound is met to {tight:.1e}")]


def distances(thought: list[dict[str, Any]], loss: str, t: float, pairs: tuple[str, ...]) -> dict[int, float]:
    """{seed: mean delta over the strata pairs of kind in `pairs`} for `loss` at training fraction t."""
    seeds = dict.fromkeys(x["seed"] for x in thought if x["loss"] == loss and x["t"] == t)
    return {s: mean_std(x["delta"] for x in thought if x["loss"] == loss and x["t"] == t and x["seed"] == s
                        and x["pair"] in pairs).mean for s in seeds}


def thought_claims(thought: list[dict[str, Any]]) -> list[Claim]:
    """Section 4.1 at the largest t, paired over seeds (a seed fixes the subsample and the
    initialisation for every loss)."""
    tmax = max(t["t"] for t in thought)
    losses = list(dict.fromkeys(t["loss"] for t in thought))
    out = [compare("paper", f"Section 4.1 ({loss}, t = {tmax}): the rare stratum sits further from a common one "
                   "than two common strata from each other", distances(thought, loss, tmax, ("common-rare",)),
                   distances(thought, loss, tmax, ("common-common",)), "common-rare - common-common", scale=1.0)
           for loss in losses]
    if {"spread", "supcon"} <= set(losses):
        both = ("common-common", "common-rare")
        out.append(compare("paper", f"Section 4.1 (t = {tmax}): L_spread keeps strata further apart than L_SC",
                           distances(thought, "spread", tmax, both), distances(thought, "supcon", tmax, both),
                           "L_spread - L_SC mean distance", scale=1.0))
    return out


def smoke(cfg: dict[str, Any]) -> dict[str, Any]:
    return merge(cfg, {"seeds": 1, "presence": {"cases": [[0.3, 0.02, 50]], "trials": 2000},
                              "lemma3": {"cases": [[2, 2]], "n_per_stratum": 20, "fit_steps": 20},
                              "thought": {"fractions": [0.1, 1.0], "n_train": 300, "steps": 10}})


EXPERIMENTS = [Experiment(
    name="theory", summary="Appendix C.2 probabilities vs simulation, Lemma 3 bounds, Section 4.1 thought experiment",
    cpu_minutes=5, module=__name__, config=lambda scale: merge(small if scale == "small" else full),
    smoke=smoke, plan=plan, execute=execute, report=report, claims=claims,
)]
