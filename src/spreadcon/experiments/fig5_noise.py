"""Figure 5 (centre): noisy contrastive labels, with and without the geometric correction.

    spreadcon reproduce fig5-noise [--scale small|full] [--seeds 3] [--data-root DIR]

Symmetric noise on the contrastive head's labels (TrainConfig.noise_rate); the cross-entropy head
trains on a clean labelled fraction (20% in the paper). One row per (method, noise rate, labelled
fraction, seed); methods:

    supcon       L_SC, no correction
    supcon+fix   L_SC + the geometric correction (`spreadcon.apps.noisy.NoisyLabelCorrection`)
    spread+fix   L_spread + the geometric correction
    spread       L_spread, no correction

The expectation-based debiased loss of Appendix F.3.1 (`spreadcon.losses.debiased`) is not
offered: the trainer cannot build it (it is not in spreadcon.losses.LOSSES, and build_loss would
not pass it the noise rate). At rate 0 the correction is a no-op, so "+fix" rows share the
uncorrected run. End accuracy is evaluate_run's coarse_accuracy (CE head, best validation epoch).
"Recovered" is (acc(method, r) - acc(supcon, r)) / (acc(supcon, 0) - acc(supcon, r)) on seed
means: the share of what noise cost L_SC that the method wins back. Detection precision/recall:
the correction's last epoch (metrics.jsonl), and on the final train embeddings of the uncorrected
L_SC run, the offline heuristic (NoisyLabelCorrector) and cleanlab's confident learning.
The paper (CIFAR10): uncorrected noise costs up to 10 points at 50% noise; the correction wins
back 4.8 points at 50% with L_SC; L_spread recovers 75% of the lost accuracy at 20% noise, L_SC 45%.
Small scale: digits, the recipe of fig4 (recipes.SMALL_TRAIN, batch 64). Expected: accuracy falls with noise for
uncorrected L_SC; the corrected runs fall less; "recovered" is printed per cell.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from matplotlib.figure import Figure

from spreadcon.apps.noisy import NoisyLabelCorrection, NoisyLabelCorrector, cleanlab_detect, detection_quality
from spreadcon.build import build_dataset
from spreadcon.evaluation import evaluate_run
from spreadcon.experiments import charts, common
from spreadcon.experiments.claims import Claim, by_seed, compare
from spreadcon.experiments.paper import CLAIMS
from spreadcon.experiments.recipes import DIGITS, SMALL_TRAIN, merge
from spreadcon.experiments.runner import Context, Experiment, RunSpec
from spreadcon.experiments.table import Stat, mean_std
from spreadcon.runs import Run, load_run

METHODS: dict[str, tuple[str, bool]] = {   # name -> (loss, geometric correction)
    "supcon": ("supcon", False),
    "supcon+fix": ("supcon", True),
    "spread+fix": ("spread", True),
    "spread": ("spread", False),
}
LABELS = {"supcon": "L_SC, no correction", "supcon+fix": "L_SC + geometric correction",
          "spread+fix": "L_spread + geometric correction", "spread": "L_spread, no correction"}

small: dict[str, Any] = {
    "seeds": 3,
    "dataset": "digits",
    "noise_rates": (0.0, 0.1, 0.2, 0.5),
    "labelled_fractions": (0.2,),
    "methods": tuple(METHODS),
    "correction_warmup_epochs": 2.0,   # no correction before the embedding means something
    # the validated recipe (docs/recipes.md) at the digits batch size, as in fig4
    "train": merge(SMALL_TRAIN, DIGITS,
                          {"alpha": 0.5, "temperature": 0.5, "ce_labels": "clean"}),
}
full: dict[str, Any] = {**small, "dataset": "cifar10", "train": {
    "encoder": "vit", "epochs": 600, "lr": 3e-4, "alpha": 0.67, "temperature": 0.9, "ce_labels": "clean"}}


def plan(cfg: dict[str, Any], seeds: Sequence[int], rows: list) -> list[RunSpec]:
    unknown = sorted(set(cfg["methods"]) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown noisy-label methods {unknown}; choose from {sorted(METHODS)}")
    specs = []
    for f in cfg["labelled_fractions"]:
        for r in cfg["noise_rates"]:
            for m in cfg["methods"]:
                loss, fix = METHODS[m]
                train = merge(cfg["train"], {"dataset": cfg["dataset"], "loss": loss, "noise_rate": r,
                                                    "labelled_fraction": f})
                extra = {"method": m}
                if fix and r > 0:
                    extra["correction"] = {"warmup_epochs": cfg["correction_warmup_epochs"]}
                specs += [common.train_spec(f"noise/{m}/r{r:g}/f{f:g}", train, s,
                                            {"method": m, "noise_rate": r, "labelled_fraction": f}, extra=extra)
                          for s in seeds]
    return specs


def training(spec: RunSpec) -> RunSpec:
    """The training run of a row: rows that differ only in their method's name share it."""
    params = {k: v for k, v in spec.params.items() if k != "method"}
    trained_as = spec.params["method"] if "correction" in params else spec.params["train"].get("loss", "spread")
    train = params["train"]
    name = f"noise/{trained_as}/r{train.get('noise_rate', 0.0):g}/f{train.get('labelled_fraction', 1.0):g}"
    return RunSpec(name, params, spec.seed)


def correction(spec: RunSpec, ctx: Context) -> NoisyLabelCorrection:
    """The NoisyLabelCorrection callback of a corrected run (its detection counts against the clean labels)."""
    config = common.train_config(spec, ctx)
    ds = build_dataset(config)
    train = ds.get_split("train")
    steps = math.ceil(len(train) / config.batch_size)
    return NoisyLabelCorrection(config.noise_rate, num_classes=ds.num_classes,
                                warmup_steps=round(spec.params["correction"]["warmup_epochs"] * steps),
                                clean_labels=train.clean_label if train.clean_label is not None else train.label)


def execute(spec: RunSpec, ctx: Context) -> dict[str, Any]:
    run_spec = training(spec)
    run_dir = common.train_run(run_spec, ctx, [correction(run_spec, ctx)] if "correction" in run_spec.params else [])
    run = load_run(run_dir)
    row: dict[str, Any] = {**evaluate_run(run, transfer=False, geometry=False), "run_dir": str(run_dir)}
    last = run.metrics[-1] if run.metrics else {}
    row.update({k: last[k] for k in ("noise_precision", "noise_recall", "noise_fixed") if k in last})
    if spec.params["method"] == "supcon" and run.config.noise_rate > 0:
        row.update(offline_detection(run))
    return row


def offline_detection(run: Run) -> dict[str, Any]:
    """Detection P/R on the run's final train embeddings: the heuristic vs cleanlab."""
    train = run.embeddings("train")
    x, y = train["embedding"], train["label"]
    noisy = y != train.get("clean_label", y)
    ours = NoisyLabelCorrector(run.config.noise_rate, batch_size=run.config.batch_size,
                               random_state=run.config.seed).fit(x, y)
    quality = detection_quality(ours.noisy_mask_, noisy)
    out: dict[str, Any] = {"offline_precision": quality["precision"], "offline_recall": quality["recall"]}
    try:
        cl = detection_quality(cleanlab_detect(x, y, seed=run.config.seed), noisy)
        out.update(cleanlab_precision=cl["precision"], cleanlab_recall=cl["recall"])
    except (ImportError, ValueError) as err:  # cleanlab absent, or a class too small for the folds
        out["cleanlab_error"] = str(err)
    return out


# --- tables and the figure -------------------------------------------------------------------
def summarise(rows: list[dict[str, Any]]) -> dict[tuple[str, float, float], Stat]:
    """(method, rate, fraction) -> coarse_accuracy over seeds."""
    keys = dict.fromkeys((r["method"], r["noise_rate"], r["labelled_fraction"]) for r in rows)
    return {k: mean_std(r["coarse_accuracy"] for r in rows
                        if (r["method"], r["noise_rate"], r["labelled_fraction"]) == k) for k in keys}


def recovered(summary: dict[tuple[str, float, float], Stat], method: str, rate: float, fraction: float) -> float | None:
    """(acc(method, r) - acc(supcon, r)) / (acc(supcon, 0) - acc(supcon, r)) on seed means.

    None when undefined: rate 0, a missing run, or noise that cost L_SC no more than the seed
    spread (the larger std of the clean and noisy L_SC runs), where the ratio is only noise.
    """
    try:
        clean, noisy = summary[("supcon", 0.0, fraction)], summary[("supcon", rate, fraction)]
        acc = summary[(method, rate, fraction)].mean
    except KeyError:
        return None
    spread = max(0.0 if s.n < 2 else s.std for s in (clean, noisy))
    if rate == 0 or clean.mean - noisy.mean <= spread:
        return None
    return (acc - noisy.mean) / (clean.mean - noisy.mean)


def accuracy_table(rows: list[dict[str, Any]], fraction: float) -> list[str]:
    summary, rates = summarise(rows), sorted({r["noise_rate"] for r in rows})
    lines = [f"## CE head on {fraction:.0%} clean labels", "",
             "| method | " + " | ".join(f"noise {r:g}" for r in rates) + " |", "|---|" + "---|" * len(rates)]
    for m in dict.fromkeys(r["method"] for r in rows):
        cells = []
        for r in rates:
            s = summary.get((m, r, fraction))
            rec = recovered(summary, m, r, fraction) if m != "supcon" else None
            cells.append("-" if s is None else s.format(100, 1) + (f" ({rec:.0%})" if rec is not None else ""))
        lines.append(f"| {LABELS[m]} | " + " | ".join(cells) + " |")
    return lines + [""]


def detection_table(rows: list[dict[str, Any]]) -> list[str]:
    detectors = [("noise", "in training, last epoch"), ("offline", "heuristic on final L_SC embeddings"),
                 ("cleanlab", "cleanlab on final L_SC embeddings")]
    lines = ["## Detection of the noisy labels (precision / recall, mean over seeds)", "",
             "| detector | labelled | noise | precision | recall |", "|---|---|---|---|---|"]
    groups = dict.fromkeys((r["labelled_fraction"], r["noise_rate"], r["method"]) for r in rows)
    for f, rate, m in groups:
        sel = [x for x in rows if (x["labelled_fraction"], x["noise_rate"], x["method"]) == (f, rate, m)]
        for prefix, what in detectors:
            p, rc = (mean_std(x[f"{prefix}_{k}"] for x in sel if f"{prefix}_{k}" in x) for k in ("precision", "recall"))
            if p.n:
                lines.append(f"| {m}: {what} | {f:g} | {rate:g} | {p.mean:.3f} | {rc.mean:.3f} |")
    return lines + [""] if len(lines) > 4 else []


def tables(rows: list[dict[str, Any]], cfg: dict[str, Any], figure: Path) -> str:
    """The accuracy table per labelled fraction, the detection table and the figure."""
    lines = [f"Test accuracy of the CE head on {cfg['dataset']}, % (mean ± std over seeds). In brackets: "
             "recovered = share of the accuracy that noise cost L_SC which the method wins back, shown where "
             "that cost exceeds the seed spread.", ""]
    for f in sorted({r["labelled_fraction"] for r in rows}):
        lines += accuracy_table([r for r in rows if r["labelled_fraction"] == f], f)
    plot(rows, figure)
    return "\n".join(lines + detection_table(rows))


def report(rows: list[dict[str, Any]], cfg: dict[str, Any], out: Path) -> str:
    return tables(rows, cfg, out / "fig5_noise.png") + f"\nThe paper plots this (no table); its text: {CLAIMS['fig5-noise']}\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Accuracy against the noise rate, one line per method, one panel per labelled fraction."""
    summary = summarise(rows)
    fractions = sorted({r["labelled_fraction"] for r in rows})
    fig = Figure(figsize=(4.5 * len(fractions), 3.6))
    axes = fig.subplots(1, len(fractions), squeeze=False)
    for ax, fraction in zip(axes[0], fractions):
        for m in dict.fromkeys(r["method"] for r in rows):
            pts = sorted((k[1], v) for k, v in summary.items() if k[0] == m and k[2] == fraction)
            ax.errorbar([100 * r for r, _ in pts], [100 * s.mean for _, s in pts],
                        yerr=[0.0 if s.n < 2 else 100 * s.std for _, s in pts], marker="o", capsize=3, label=LABELS[m])
        ax.set(xlabel="label noise on the contrastive head (%)", ylabel="test accuracy (%)",
               title=f"CE head on {fraction:.0%} of labels")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    charts.save(fig, path)


def claims(rows: list[dict[str, Any]], cfg: dict[str, Any]) -> list[Claim]:
    """Per labelled fraction and noise rate > 0, paired over seeds: noise costs uncorrected L_SC
    accuracy, and L_spread + correction ends more accurate than L_SC + correction (the sign of
    "recovers more": both shares divide by the same cost of noise; the shares, on seed means,
    are quoted beside)."""
    summary, out = summarise(rows), []
    for f in sorted({r["labelled_fraction"] for r in rows}):
        cell = [r for r in rows if r["labelled_fraction"] == f]
        for rate in sorted({r["noise_rate"] for r in cell if r["noise_rate"] > 0}):
            acc = {(m, r): by_seed(cell, "coarse_accuracy", method=m, noise_rate=r)
                   for m in ("supcon", "spread+fix", "supcon+fix") for r in (0.0, rate)}
            where = f"CE head on {f:g} of labels, noise {rate:g}"
            if acc[("supcon", 0.0)] and acc[("supcon", rate)]:
                out.append(compare("paper", f"{where}: uncorrected L_SC loses accuracy", acc[("supcon", rate)],
                                   acc[("supcon", 0.0)], "noisy - clean", higher=False))
            if acc[("spread+fix", rate)] and acc[("supcon+fix", rate)]:
                rec = {m: recovered(summary, m, rate, f) for m in ("spread+fix", "supcon+fix")}
                share = ("" if None in rec.values() else f"recovered {rec['spread+fix']:.0%} vs "
                         f"{rec['supcon+fix']:.0%} on seed means; ") + "paper at 20% noise: 75% vs 45%"
                out.append(compare("paper", f"{where}: L_spread + correction recovers more than L_SC + correction",
                                   acc[("spread+fix", rate)], acc[("supcon+fix", rate)],
                                   "L_spread + correction - L_SC + correction", note=share))
    return out


def smoke(cfg: dict[str, Any]) -> dict[str, Any]:
    """Seconds: a test-size encoder, one epoch, a third of the data, two rates, two methods."""
    return {**cfg, "seeds": 1, "noise_rates": (0.0, 0.2), "methods": ("supcon", "spread+fix"),
            "correction_warmup_epochs": 0.0,
            "train": {**cfg["train"], "encoder": "cnn-test", "encoder_options": {}, "embedding": "paper", "epochs": 1,
                      "subsample_fraction": 0.3, "batch_size": 64}}


EXPERIMENTS = [Experiment(
    name="fig5-noise", summary="Figure 5 (centre): accuracy under label noise, geometric correction vs none",
    cpu_minutes=25, module=__name__, config=lambda scale: merge(small if scale == "small" else full),
    smoke=smoke, plan=plan, execute=execute, report=report, validate=common.validate_train_spec, claims=claims,
)]
