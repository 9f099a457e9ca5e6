"""What each result says, in a few sentences whose every number is computed from its results.json.

One function per results folder: `FINDINGS[folder](data) -> markdown` (a bullet, possibly with
sub-bullets), where `data` is the folder's parsed results.json. The prose is fixed here; the
numbers, and every comparison word ("higher", "not distinguishable", "beats every baseline"), come
from the rows. Claims written in an older format are never read: comparisons are recomputed from
the rows, paired over seeds with a 95% interval (`spreadcon.experiments.claims`). Rows written
before `embedding` was recorded take it from the folder's train config (a projection head in
encoder_options: "projection"). `spreadcon.experiments.readme` assembles the README from these.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from spreadcon.experiments import fig3, fig5_coreset, fig5_noise, sweep, theory
from spreadcon.experiments.claims import FAILS, HOLDS, by_seed, describe, outcome, paired_difference
from spreadcon.experiments.paper import HYPERPARAMETERS, LOSS_NAMES, SMALL_ANALOGUE
from spreadcon.experiments.recipes import VALIDATED_ALPHA
from spreadcon.experiments.table import mean_std

Rows = list[dict[str, Any]]
PROTOCOL_WORDS = {"paper": "Paper protocol (one embedding: the loss, the CE head and the probe read it)",
                  "projection": "Projection protocol (h -> MLP -> z: the loss reads z, the probe h)"}
FLOORS = ("raw-pixels", "random-init")


# --- reading rows -------------------------------------------------------------------------------
def default_embedding(data: dict[str, Any]) -> str:
    """The protocol of rows that do not record one: the folder's train config's."""
    train = (data.get("config") or {}).get("train") or {}
    if train.get("embedding"):
        return str(train["embedding"])
    return "projection" if (train.get("encoder_options") or {}).get("proj_dim") is not None else "paper"


def rows_of(data: dict[str, Any]) -> Rows:
    """The folder's rows, each with its `embedding`."""
    default = default_embedding(data)
    return [{**r, "embedding": r.get("embedding", default)} for r in data.get("rows", [])]


def pick(rows: Rows, **match: Any) -> Rows:
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def stat(rows: Rows, metric: str, *, scale: float = 100.0, digits: int = 1, **match: Any) -> str:
    """'mean ± std' over seeds of `metric` in the matching rows ('–' when none)."""
    return mean_std(r[metric] for r in pick(rows, **match) if metric in r).format(scale, digits)


def mean(rows: Rows, metric: str, **match: Any) -> float:
    return mean_std(r[metric] for r in pick(rows, **match) if metric in r).mean


def name(value: Any, names: dict[Any, str] | None = None) -> str:
    return (names or LOSS_NAMES).get(value, str(value))


def versus(rows: Rows, metric: str, a: Any, b: Any, *, key: str = "loss", scale: float = 100.0,
           names: dict[Any, str] | None = None, **match: Any) -> str:
    """'A x ± s against B y ± s (A - B = d (95% CI lo to hi, n paired seeds): A higher | B higher |
    not distinguishable)': the cells row[key] == a and == b, and their paired difference over seeds."""
    na, nb = name(a, names), name(b, names)
    diff = paired_difference(by_seed(rows, metric, **match, **{key: a}), by_seed(rows, metric, **match, **{key: b}))
    word = {HOLDS: f"{na} higher", FAILS: f"{nb} higher"}.get(outcome(diff), "not distinguishable")
    digits = 1 if scale == 100 else 3
    return (f"{na} {stat(rows, metric, scale=scale, digits=digits, **match, **{key: a})} against "
            f"{nb} {stat(rows, metric, scale=scale, digits=digits, **match, **{key: b})} "
            f"({describe(diff, f'{na} - {nb}', scale=scale)}: {word})")


def link(folder: str) -> str:
    return f"[results/{folder}/results.json](results/{folder}/results.json)"


def has(rows: Rows, metric: str, *losses: str, **match: Any) -> bool:
    return all(any(metric in r for r in pick(rows, loss=loss, **match)) for loss in losses)


def floors_text(rows: Rows, metric: str, **match: Any) -> str:
    """'; floors: raw pixels x, random init y' where the floors ran."""
    found = [f"{f.replace('-', ' ')} {stat(rows, metric, loss=f, **match)}" for f in FLOORS
             if has(rows, metric, f, **match)]
    return f"; floors: {', '.join(found)}" if found else ""


# --- coarse-to-fine transfer (fig4-transfer, small and medium) -----------------------------------
def transfer_cell(rows: Rows, ds: str, emb: str, alpha: dict[str, Any] | None = None) -> str:
    """One (dataset, protocol) cell: L_spread against L_SC (and L_SS), at z too, the authors' variants."""
    m, where = "fine_transfer_accuracy", {"dataset": ds, "embedding": emb}
    parts = [versus(rows, m, "spread", "supcon", **where)]
    if has(rows, m, "spread", "simclr", **where):
        parts.append(versus(rows, m, "spread", "simclr", **where))
    if has(rows, m, "spread-authors", "supcon-authors", **where):
        parts.append("the authors' variants: " + versus(rows, m, "spread-authors", "supcon-authors", **where))
    text = "; ".join(parts) + floors_text(rows, m, **where)
    if emb == "projection" and has(rows, "fine_transfer_z_accuracy", "spread", "supcon", **where):
        text += "; probed at z: " + versus(rows, "fine_transfer_z_accuracy", "spread", "supcon", **where)
    cosine = "intra_class_z_cosine" if emb == "projection" else "intra_class_cosine"
    found = [f"{name(loss)} {stat(rows, cosine, scale=1.0, digits=2, loss=loss, **where)}"
             for loss in ("supcon", "spread", "spread-authors") if has(rows, cosine, loss, **where)]
    if found:  # collapse, where the loss acts: what the transfer differences follow
        text += f"; intra-class cosine{' at z' if emb == 'projection' else ''}: {', '.join(found)}"
    return f"  - {ds}{alpha_note(alpha, ds, emb)}: {text}."


def alpha_note(alpha: dict[str, Any] | None, ds: str, emb: str) -> str:
    """' (alpha 0.5)': L_spread's alpha in the (dataset, protocol) cell, from the folder's config."""
    if not alpha:
        return ""
    opts = alpha.get(ds) or {}
    value = ((opts.get("embeddings") or {}).get(emb) or {}).get("spread", {}).get("alpha",
                                                                              (opts.get("spread") or {}).get("alpha"))
    return "" if value is None else f" (L_spread's alpha {value:g})"


def transfer(folder: str, what: str) -> Callable[[dict[str, Any]], str]:
    """The bullet of a fig4-transfer folder: one sub-bullet per (protocol, dataset), the paper's first."""
    def bullet(data: dict[str, Any]) -> str:
        rows = rows_of(data)
        lines = [f"- **{what}** ({link(folder)}; test accuracy on the fine labels of a linear probe on the "
                 "frozen embedding, %, mean ± std over seeds):"]
        for emb in ("paper", "projection"):
            mine = [r for r in rows if r["embedding"] == emb]
            lines.append(f"  - *{PROTOCOL_WORDS[emb]}*" + ("" if mine else ": not in this results.json yet "
                                                            "(regenerate it: the command is in its table.md)."))
            datasets = (data.get("config") or {}).get("datasets")
            lines += ["  " + transfer_cell(mine, ds, emb, datasets) for ds in dict.fromkeys(r["dataset"] for r in mine)
                      if has(mine, "fine_transfer_accuracy", "spread", "supcon", dataset=ds)]
        return "\n".join(lines)
    return bullet


# --- geometry (fig2, fig3) ---------------------------------------------------------------------
def _layers(emb: str) -> list[tuple[str, str]]:
    """[(metric suffix, words)]: the layer the loss reads first."""
    return [("_z", "at z, the layer the loss reads"), ("", "at h")] if emb == "projection" else [("", "")]


def _rare_common(rows: Rows, loss: str, z: str, ds: str) -> str:
    """Within one loss: rare - common strata's cosine to their class centre, paired over seeds."""
    rare = by_seed(rows, f"rare_centre{z}_cosine", dataset=ds, loss=loss)
    common = by_seed(rows, f"common_centre{z}_cosine", dataset=ds, loss=loss)
    diff = paired_difference(rare, common)
    word = {HOLDS: "closer to the centre", FAILS: "further from the centre"}.get(outcome(diff), "not distinguishable")
    return f"{name(loss)} {describe(diff, 'rare - common', scale=1.0)} ({word})"


def fig2(data: dict[str, Any]) -> str:
    """Intra-class cosine, L_SC against L_spread, and rare against common strata within each loss."""
    rows = rows_of(data)
    lines = [f"- **Class collapse and rare strata** (Figure 2; {link('fig2')}; cosine similarities):"]
    for emb in dict.fromkeys(r["embedding"] for r in rows):
        for ds in dict.fromkeys(r["dataset"] for r in pick(rows, embedding=emb)):
            for z, words in _layers(emb):
                where = {"dataset": ds, "embedding": emb}
                if not has(rows, f"intra_class{z}_cosine", "spread", "supcon", **where):
                    continue
                intra = versus(rows, f"intra_class{z}_cosine", "spread", "supcon", scale=1.0, **where)
                rare = "; ".join(_rare_common(rows, loss, z, ds) for loss in ("supcon", "spread"))
                lines.append(f"  - {ds}, {emb} protocol{', ' + words if words else ''}: intra-class cosine "
                             f"{intra}; rare strata's cosine to the class centre minus common ones' (the paper: "
                             f"rare further under L_spread, 0.22 against 0.92): {rare}.")
    return "\n".join(lines)


def fig3_bullet(data: dict[str, Any]) -> str:
    """Spearman rho between a stratum's size and its tightness, per loss and layer, mean over seeds."""
    rows = rows_of(data)
    per, parts = fig3.strata_rows(rows), []
    for suffix, (words, measures) in fig3.LAYERS.items():
        for loss in dict.fromkeys(r["loss"] for r in per):
            rhos = fig3.rho_by_seed([r for r in per if r["loss"] == loss], measures[0])
            if rhos:
                parts.append(f"{name(loss)} at {words.split(',')[0]} {mean_std(rhos.values()).format(1.0, 2)}")
    return (f"- **Strata by size** (Figure 3; {link('fig3')}): Spearman rho between a stratum's training size "
            f"and its tightness (cosine to its own centre), per seed, mean ± std over seeds (the paper: larger "
            f"strata are tighter, rho > 0): {', '.join(parts)}.")


# --- end model (fig4-end-model, table2) --------------------------------------------------------
def end_model(data: dict[str, Any]) -> str:
    """Per (protocol, dataset): the losses' range, L_spread against L_SC, and who sits below the floor."""
    rows, m = rows_of(data), "coarse_accuracy"
    lines = [f"- **End model** (Figure 4 left; {link('fig4-end-model')}; test accuracy of the CE head, %):"]
    for emb in ("paper", "projection"):
        for ds in dict.fromkeys(r["dataset"] for r in pick(rows, embedding=emb)):
            where = {"dataset": ds, "embedding": emb}
            trained = [r for r in pick(rows, **where) if r["loss"] not in FLOORS]
            means = {r["loss"]: mean(rows, m, loss=r["loss"], **where) for r in trained}
            raw = mean(rows, m, loss="raw-pixels", **where) if has(rows, m, "raw-pixels", **where) else None
            below = [name(k) for k, v in means.items() if raw is not None and v < raw]
            lines.append(f"  - {ds}, {emb} protocol: losses at {100 * min(means.values()):.1f}-"
                         f"{100 * max(means.values()):.1f}; {versus(rows, m, 'spread', 'supcon', **where)}"
                         f"{floors_text(rows, m, **where)}"
                         + (f"; below the raw-pixel floor: {', '.join(below)}" if below else "") + ".")
    return "\n".join(lines)


def table2(data: dict[str, Any]) -> str:
    """L_attract against L_SC, and L_spread against L_attract, per dataset."""
    rows, m = rows_of(data), "coarse_accuracy"
    parts = [f"{ds}: {versus(rows, m, 'attract', 'supcon', dataset=ds)}; "
             f"{versus(rows, m, 'spread', 'attract', dataset=ds)}" for ds in dict.fromkeys(r["dataset"] for r in rows)]
    return (f"- **L_attract alone** (Table 2; {link('table2-attract')}; end-model test accuracy, %; the paper: "
            f"L_attract beats L_SC and L_spread beats both): " + "; ".join(parts) + ".")


# --- applications (fig5-*, fig6, fig7) -----------------------------------------------------------
def robustness(data: dict[str, Any]) -> str:
    """Per dataset: ERM's worst group, Group DRO with the true and the recovered groups, recovery F1."""
    rows, parts = rows_of(data), []
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        losses = list(dict.fromkeys(r["loss"] for r in pick(rows, dataset=ds)))
        f1 = ", ".join(f"{name(loss)} {stat(rows, 'recovery_f1', dataset=ds, loss=loss)}" for loss in losses)
        gdro = ", ".join(f"{name(loss)} {stat(rows, 'gdro_pseudo_worst_group', dataset=ds, loss=loss)}"
                         for loss in losses)
        one = {"dataset": ds, "loss": losses[0]}  # ERM and the true groups do not depend on the loss
        parts.append(f"{ds}: ERM {stat(rows, 'erm_worst_group', **one)}, Group DRO with the true groups "
                     f"{stat(rows, 'gdro_true_worst_group', **one)}, with the recovered ones {gdro}; recovery "
                     f"F1 {f1}")
    return (f"- **Worst-group robustness** (Figure 5 left; {link('fig5-robustness')}; worst-group test accuracy, "
            f"%): " + "; ".join(parts) + ".")


def noise(folder: str, what: str) -> Callable[[dict[str, Any]], str]:
    """Per CE-head fraction, at the largest noise rate: what noise costs uncorrected L_SC, and each
    method's share of that loss recovered (on seed means; fig5_noise.recovered)."""
    def bullet(data: dict[str, Any]) -> str:
        rows, parts = rows_of(data), []
        summary, rate = fig5_noise.summarise(rows), max(r["noise_rate"] for r in rows)
        for f in sorted({r["labelled_fraction"] for r in rows}):
            cost = versus(rows, "coarse_accuracy", rate, 0.0, key="noise_rate", method="supcon", labelled_fraction=f,
                          names={0.0: "clean", rate: f"{rate:.0%} noise"})
            shares = [(fig5_noise.LABELS[m], fig5_noise.recovered(summary, m, rate, f))
                      for m in ("supcon+fix", "spread", "spread+fix")]
            shares_text = ", ".join(f"{label} {100 * s:.0f}%" for label, s in shares if s is not None)
            parts.append(f"CE head on {f:.0%} of the labels, uncorrected L_SC: {cost}"
                         + (f"; share of that loss won back, on seed means: {shares_text}" if shares_text else
                            "; the loss is within the seed spread, so no share won back is defined"))
        return f"- **{what}** ({link(folder)}; end-model test accuracy, %): " + "; ".join(parts) + "."
    return bullet


def coreset(data: dict[str, Any]) -> str:
    """Per size: the best method by mean and whether the L_spread-difficulty coreset beats every baseline."""
    rows = fig5_coreset.flat(data["rows"])
    sizes = sorted({r["size"] for r in rows if r["method"] != "full"})
    methods = [m for m in dict.fromkeys(r["method"] for r in rows) if m not in ("strata", "full")]
    parts, wins, top = [], [], []
    for s in sizes:
        means = {m: mean(rows, "coarse_accuracy", method=m, size=s) for m in ["strata", *methods]}
        best = max(means, key=means.get)
        top += [s] if best == "strata" else []
        wins += [s] if all(outcome(paired_difference(by_seed(rows, "coarse_accuracy", method="strata", size=s),
                                                     by_seed(rows, "coarse_accuracy", method=m, size=s))) == HOLDS
                           for m in methods) else []
        parts.append(f"{s:.0%}: L_spread difficulty {100 * means['strata']:.2f}, best "
                     f"{fig5_coreset.LABELS[best]} {100 * means[best]:.2f}")
    at = lambda xs: ", ".join(f"{x:.0%}" for x in xs) or "no size"  # noqa: E731
    return (f"- **Coresets** (Figure 5 right; {link('fig5-coreset')}; test accuracy of a fresh model, %, over "
            f"{data.get('seeds')} seeds; the full set: {stat(rows, 'coarse_accuracy', digits=2, method='full')}): "
            f"against {len(methods)} baselines ({', '.join(methods)}), the L_spread-difficulty coreset has the "
            f"highest mean at {at(top)} and beats every baseline, paired over seeds, at {at(wins)}; by size, its "
            f"mean and the best method's: " + "; ".join(parts) + ".")


def fig6(data: dict[str, Any]) -> str:
    """Per data fraction: L_spread against L_SC, and L_SS's mean; the floors' range."""
    rows, m = rows_of(data), "coarse_accuracy"
    parts = [f"{f:.0%}: {versus(rows, m, 'spread', 'supcon', fraction=f)}, "
             f"L_SS {stat(rows, m, loss='simclr', fraction=f)}" for f in sorted({r["fraction"] for r in rows})]
    floors = [mean(rows, m, loss=fl, fraction=f) for fl in FLOORS for f in {r["fraction"] for r in rows}
              if has(rows, m, fl, fraction=f)]
    floor_text = f"; floors at {100 * min(floors):.1f}-{100 * max(floors):.1f}" if floors else ""
    return (f"- **Sample complexity** (Figure 6; {link('fig6-sample-complexity')}; the CE head on 1% of the labels, "
            f"the contrastive head on a fraction of the data; test accuracy, %): " + "; ".join(parts)
            + floor_text + ".")


# --- hyperparameters and theory ------------------------------------------------------------------
def sweep_bullet(folder: str, what: str) -> Callable[[dict[str, Any]], str]:
    """The selected (tau, alpha) by the folder's criterion, the spread of the criterion over the settings."""
    def bullet(data: dict[str, Any]) -> str:
        rows, crit = rows_of(data), list((data.get("config") or {}).get("criterion", ["coarse_val_accuracy"]))
        chosen = sweep.selected(rows, crit)
        spread_rows = [r for r in rows if r["loss"] == "spread"]
        means = {(r["temperature"], r.get("alpha")): mean(spread_rows, crit[0], temperature=r["temperature"],
                                                         alpha=r.get("alpha")) for r in spread_rows}
        _, tau, alpha = chosen["spread"]
        ds = rows[0]["dataset"]
        paper = HYPERPARAMETERS.get(SMALL_ANALOGUE.get(ds, ds))
        recipe = VALIDATED_ALPHA.get(ds)
        recipe_text = (f"; the projection recipe's alpha {recipe} (recipes.VALIDATED_ALPHA) scores "
                       f"{100 * means[(0.5, recipe)]:.1f}%" if (0.5, recipe) in means else "")
        return (f"- **{what}** ({link(folder)}; Appendix E.2's procedure on {ds}, {len({r['run'] for r in rows})} "
                f"runs, selection on `{crit[0]}`): selected (tau, alpha) = ({tau}, {alpha})"
                + (f", the paper's for {SMALL_ANALOGUE.get(ds, ds)} {paper}" if paper else "")
                + f"; over the {len(means)} L_spread settings tried the mean `{crit[0]}` spans "
                f"{100 * min(means.values()):.1f}-{100 * max(means.values()):.1f}%, a range of "
                f"{100 * (max(means.values()) - min(means.values())):.1f} points{recipe_text}.")
    return bullet


def theory_bullet(data: dict[str, Any]) -> str:
    """Appendix C.2 against simulation, Lemma 3 against its bound, Section 4.1's distances."""
    rows = data["rows"]
    pres, lem = pick(rows, part="presence"), pick(rows, part="lemma3")
    thought = [t for r in pick(rows, part="thought") for t in r["thought"]]
    tmax = max((t["t"] for t in thought), default=None)
    pairs = ("common-common", "common-rare")
    dist = {loss: mean_std(theory.distances(thought, loss, tmax, pairs).values()).format(1.0, 3)
            for loss in dict.fromkeys(t["loss"] for t in thought)}
    return (f"- **Theory** ({link('theory')}): Appendix C.2's closed-form presence probabilities against simulated "
            f"subsamples, largest difference {max(r['max_abs_diff'] for r in pres):.4f}; Lemma 3's bound against "
            f"collapsed embeddings, smallest measured - bound "
            f"{min(min(r['measured'], r['measured_fit']) - r['bound'] for r in lem):.4f} (both checks of our code); "
            f"Section 4.1's thought experiment at t = {tmax}, mean distance between strata: "
            + ", ".join(f"{name(k)} {v}" for k, v in dist.items()) + ".")


# --- the default recipes (issue 24) -------------------------------------------------------------
def defaults(folder: str, what: str) -> Callable[[dict[str, Any]], str]:
    """Per dataset: the recipe `spreadcon train` picked, L_SC's and L_spread's transfer, and how each
    compares with the better floor (paired over seeds)."""
    def bullet(data: dict[str, Any]) -> str:
        rows, m = rows_of(data), "fine_transfer_accuracy"
        lines = [f"- **`spreadcon train` with its defaults, {what}** ({link(folder)}; transfer to the fine "
                 "labels, %, against the better floor, paired over seeds):"]
        for ds in dict.fromkeys(r["dataset"] for r in rows):
            recipe = next(r["recipe"] for r in rows if r["dataset"] == ds)
            best_floor = max(FLOORS, key=lambda f: mean(rows, m, dataset=ds, loss=f))
            parts = [versus(rows, m, loss, best_floor, dataset=ds) for loss in ("supcon", "spread")
                     if has(rows, m, loss, best_floor, dataset=ds)]
            lines.append(f"  - {ds} (recipe {recipe}): " + "; ".join(parts) + floors_text(rows, m, dataset=ds) + ".")
        return "\n".join(lines)
    return bullet


FINDINGS: dict[str, Callable[[dict[str, Any]], str]] = {
    "fig4-transfer": transfer("fig4-transfer", "Coarse-to-fine transfer, small scale (Figure 4 right)"),
    "fig4-transfer-medium": transfer("fig4-transfer-medium", "Coarse-to-fine transfer on real CIFAR-10-Coarse "
                                     "(`--scale medium`)"),
    "fig2": fig2,
    "fig3": fig3_bullet,
    "fig4-end-model": end_model,
    "table2-attract": table2,
    "fig5-robustness": robustness,
    "fig5-noise": noise("fig5-noise", "Noisy labels"),
    "fig7-noise-grid": noise("fig7-noise-grid", "Label noise across labelled fractions"),
    "fig5-coreset": coreset,
    "fig6-sample-complexity": fig6,
    "sweep": sweep_bullet("sweep", "Hyperparameters"),
    "demo-alpha": sweep_bullet("demo-alpha", "The demo's alpha"),
    "theory": theory_bullet,
    "defaults": defaults("defaults", "on the coarse datasets in the package"),
    "defaults-npz": defaults("defaults-npz", "on data brought through `npz` (7,500 MNIST test digits, coarse "
                             "label even vs odd: scripts/make_npz_example.py)"),
    "defaults-medium": defaults("defaults-medium", "on real MNIST-Coarse and CIFAR-10-Coarse (10% of their "
                                "training splits, `--scale medium`)"),
}
