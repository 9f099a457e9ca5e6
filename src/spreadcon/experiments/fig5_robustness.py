"""Figure 5 (left): strata recovery (F1) and worst-group accuracy with Group DRO on recovered strata.

    spreadcon reproduce fig5-robustness [--scale small|full] [--seeds 3] [--data-root DIR]

GEORGE-style (Sohoni et al. 2020), with the apps' methods: one training run per (dataset, loss,
seed) on the dataset's preset below, then `spreadcon.apps.robustness.apply_to_run` on it: per-class
UMAP + clustering of the training embeddings into pseudo-strata (`StrataRecovery`), then three end
models scored on the true test groups: ERM, Group DRO on the recovered strata, Group DRO on the
true groups (the upper bound). The end models train the network with the trainer's Group DRO
objective (`NetworkGroupDRO`: eta 0.01, C = 2, group-balanced sampling, 15 epochs, selection by the worst
validation (pseudo-)group, from scratch), as GEORGE and Sagawa et al. do; `end_model.mode =
"linear-frozen"` is the fast option (a linear layer on the frozen embeddings). summary.json holds
recovery F1, the three worst-group accuracies and the weighted averages per dataset and loss.
The paper: recovery F1 (L_CE / L_SC / L_spread) Waterbirds 56.3 / 47.2 / 59.0, ISIC 74.0 / 92.5 /
93.8; worst-group Waterbirds 88.4 / 86.5 / 89.0, ISIC (AUROC) 92.0 / 93.3 / 92.6.
Small scale: spurious-MNIST (a digit task with a 95%-correlated colour background) and
mnist-scenes (MNIST digits composited onto CIFAR-10 vehicle or animal scenes, 95%-correlated in
train, 50% in val/test: docs/datasets.md; needs --data-root with cifar-10-batches-py), a narrow
`cnn`, joint CE head, 6 epochs. Full scale: Waterbirds, ResNet50, contrastive loss then probe
(needs --data-root). The recovery reads the last checkpoint (`checkpoint`): a group-balanced
validation split scores every background-only model at 50%, so best.pt would stay at epoch 1.
Expected: L_spread's recovered strata at least as good as L_SC's, and Group DRO on them above
ERM on worst-group accuracy (a sanity check, not evidence, where ERM's worst group is 0 on every
seed; likewise "recovered within 5 points of the true groups" where recovery F1 is 100).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Sequence

from spreadcon.apps.gdro import GroupDRO
from spreadcon.apps.gdro_network import NetworkGroupDRO
from spreadcon.apps.robustness import apply_to_run
from spreadcon.apps.strata import StrataRecovery
from spreadcon.evaluation import evaluate_run
from spreadcon.experiments import charts, common
from spreadcon.experiments.claims import Claim, by_seed, compare, groups, one_sample, verdict, winner_claims
from spreadcon.experiments.paper import FIG5_RECOVERY_F1, FIG5_WORST_GROUP, LOSS_NAMES, paper_value
from spreadcon.experiments.recipes import RESNET50, merge
from spreadcon.experiments.runner import Context, Experiment, RunSpec
from spreadcon.experiments.table import markdown, summarise
from spreadcon.io import atomic_write, save_json

# Training settings per dataset; tau 0.5 and alpha 0.5 are the paper's final values for MNIST,
# Waterbirds and ISIC.
PRESETS: dict[str, dict[str, Any]] = {
    # CPU scale: a small CNN trained jointly with the CE head (the paper's MNIST protocol)
    "spurious-mnist": {"encoder": "cnn", "encoder_options": {"widths": [16, 32, 64], "out_dim": 64},
                       "protocol": "joint", "epochs": 6, "lr": 1e-3},
    # the Waterbirds-like benchmark of real images (docs/datasets.md; CIFAR-10 under --data-root)
    "mnist-scenes": {"encoder": "cnn", "encoder_options": {"widths": [16, 32, 64], "out_dim": 64},
                     "protocol": "joint", "epochs": 6, "lr": 1e-3},
    # the paper's protocol for the real datasets: ResNet50, contrastive loss alone, then a probe
    "waterbirds": RESNET50,
    "isic": RESNET50,
}
small: dict[str, Any] = {
    "seeds": 3,
    # spurious-mnist needs nothing; mnist-scenes composites onto CIFAR-10 scenes under --data-root
    "datasets": {"spurious-mnist": {}, "mnist-scenes": {}},
    "losses": ("ce", "supcon", "spread"),
    "train": {"alpha": 0.5, "temperature": 0.5},
    "presets": PRESETS,
    "recovery": {},            # StrataRecovery parameters (defaults: GEORGE's)
    # the end models: "network" (NetworkGroupDRO: the trainer's Group DRO objective, from scratch,
    # shared by the losses' runs where it does not depend on them) or "linear-frozen" (GroupDRO)
    "end_model": {"mode": "network", "epochs": 15, "lr": 3e-3, "weight_decay": 0.1, "batch_size": 64,
                  "adjustment": 2.0, "group_sampling": True, "init": "scratch"},
    "normalize": True,
    "checkpoint": "last",
    "pictures_seed": 0,        # draw the class pictures of the runs of this seed
}
full: dict[str, Any] = {**small, "datasets": {"waterbirds": {}}}


def plan(cfg: dict[str, Any], seeds: Sequence[int], rows: list) -> list[RunSpec]:
    specs = []
    for ds in cfg["datasets"]:
        if ds not in cfg["presets"]:
            raise ValueError(f"no training preset for dataset {ds!r} (presets: {sorted(cfg['presets'])}); "
                             f"add one under the config's 'presets'")
        for loss in cfg["losses"]:
            protocol = "ce" if loss == "ce" else cfg["presets"][ds].get("protocol", "joint")
            train = merge(cfg["train"], cfg["presets"][ds], {"dataset": ds, "protocol": protocol},
                                 {"loss": loss} if loss != "ce" else None)
            specs += [common.train_spec(f"{ds}/{loss}", train, seed, {"dataset": ds, "loss": loss}) for seed in seeds]
    return specs


def end_model(cfg: dict[str, Any], seed: int) -> NetworkGroupDRO | GroupDRO:
    """The end-model template of the config: NetworkGroupDRO (mode "network") or GroupDRO."""
    options = dict(cfg["end_model"])
    mode = options.pop("mode", "linear-frozen")
    if mode == "network":
        return NetworkGroupDRO(**options)
    return GroupDRO(**options, random_state=seed)


def execute(spec: RunSpec, ctx: Context) -> dict[str, Any]:
    cfg = ctx.config
    run_dir = common.train_run(spec, ctx)
    out: dict[str, Any] = {**evaluate_run(run_dir, transfer=False, geometry=False), "run_dir": str(run_dir)}
    result = apply_to_run(run_dir, recovery=StrataRecovery(**cfg["recovery"], random_state=spec.seed),
                          end_model=end_model(cfg, spec.seed), normalize=cfg["normalize"],
                          out_dir=run_dir / "robustness", runs_dir=ctx.runs_dir / "end-models",
                          pictures=spec.seed == cfg["pictures_seed"],
                          picture_prefix=f"{spec.labels['loss']} seed {spec.seed}: ", checkpoint=cfg["checkpoint"])
    metric = "worst_group_auroc" if spec.labels["dataset"] == "isic" else "worst_group_accuracy"
    out.update(recovery_f1=result["recovery_train"]["f1"], recovery_ari=result["recovery_train"]["ari"],
               metric=metric, robustness=result["methods"], robustness_config=result["config"])
    for method, values in result["methods"].items():
        out[f"{method}_worst_group"] = values[metric]
        out[f"{method}_average"] = values["average_accuracy"]
    return out


# summary.json: per dataset and loss, these row metrics (mean, std, n over seeds)
SUMMARY = {"recovery_f1": "recovery_f1", "recovery_ari": "recovery_ari", "worst_group_erm": "erm_worst_group",
           "worst_group_gdro_recovered": "gdro_pseudo_worst_group", "worst_group_gdro_true": "gdro_true_worst_group",
           "average_gdro_recovered": "gdro_pseudo_average", "average_gdro_true": "gdro_true_average",
           "average_erm": "erm_average"}


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """{dataset: {loss: {name: {"mean", "std", "n"}}}} of SUMMARY's metrics, as fractions."""
    out: dict[str, Any] = {}
    for name, metric in SUMMARY.items():
        for (ds, loss), stat in summarise(rows, ("dataset", "loss"), metric).items():
            std = None if stat.n < 2 else stat.std
            out.setdefault(ds, {}).setdefault(loss, {})[name] = {"mean": stat.mean, "std": std, "n": stat.n}
    return out


def report(rows: list[dict[str, Any]], cfg: dict[str, Any], out: Path) -> str:
    save_json(summary(rows), out / "summary.json")
    names = {**LOSS_NAMES, "ce": "L_CE"}
    text = ["## Strata recovery F1 on the training split (%)\n",
            markdown(rows, row_key="dataset", col_key="loss", metric="recovery_f1", col_names=names,
                     paper=lambda d, l: paper_value(FIG5_RECOVERY_F1, d, l)),
            "\n## Worst-group test accuracy (%), Group DRO on the recovered strata\n",
            markdown(rows, row_key="dataset", col_key="loss", metric="gdro_pseudo_worst_group", col_names=names,
                     paper=lambda d, l: paper_value(FIG5_WORST_GROUP, d, l))]
    for method, what in (("erm", "ERM (no groups)"), ("gdro_true", "Group DRO on the true groups (upper bound)"),
                         ("run_head", "the trained run's own head")):
        if any(f"{method}_worst_group" in r for r in rows):
            text += [f"\n## Worst-group test accuracy (%), {what}\n",
                     markdown(rows, row_key="dataset", col_key="loss", metric=f"{method}_worst_group", col_names=names)]
    text += ["\n## Average test accuracy (%) weighted by the training group proportions, Group DRO on the "
             "recovered strata\n",
             markdown(rows, row_key="dataset", col_key="loss", metric="gdro_pseudo_average", col_names=names),
             "\n## Strata recovery ARI on the training split (%)\n",
             markdown(rows, row_key="dataset", col_key="loss", metric="recovery_ari", col_names=names),
             f"\nEnd models: {_end_model_text(cfg)}. summary.json holds these numbers per dataset and loss.\n"]
    copy_pictures(rows, cfg["pictures_seed"], out)
    charts.bar_chart(rows, group="loss", hue="dataset", metric="gdro_pseudo_worst_group",
                     path=out / "worst_group.png", title="Figure 5 (left): Group DRO on recovered strata")
    return "\n".join(text)


def copy_pictures(rows: list[dict[str, Any]], seed: int, out: Path) -> None:
    """The class pictures of `seed`'s runs (UMAP by true stratum and by recovered cluster) into out."""
    for row in rows:
        for png in (Path(row["run_dir"]) / "robustness").glob("*.png") if row["seed"] == seed else []:
            atomic_write(out / f"{row['loss']}_{png.name}", lambda tmp, src=png: shutil.copyfile(src, tmp))


def _end_model_text(cfg: dict[str, Any]) -> str:
    opts = dict(cfg["end_model"])
    if opts.pop("mode", "linear-frozen") == "network":
        return ("the network trained by the trainer under Group DRO (ERM for the ERM row), "
                + ", ".join(f"{k} {v}" for k, v in opts.items()))
    return "a linear layer on the frozen, normalised embeddings (linear-frozen), " + ", ".join(
        f"{k} {v}" for k, v in opts.items())


def claims(rows: list[dict[str, Any]], cfg: dict[str, Any]) -> list[Claim]:
    return (winner_claims(rows, group="dataset", metric="recovery_f1", winner="spread", against=("supcon", "ce"),
                          what="recovers the hidden strata best (F1)")
            + winner_claims(rows, group="dataset", metric="gdro_pseudo_worst_group", winner="spread",
                            against=("supcon", "ce"), what="gives the best worst-group accuracy with Group DRO")
            + dro_vs_erm(rows) + target_claims(rows))


def dro_vs_erm(rows: list[dict[str, Any]]) -> list[Claim]:
    """Per dataset and loss: Group DRO on the recovered strata beats ERM on worst-group accuracy,
    paired over seeds; a sanity check where ERM's worst group is 0 on every seed (it cannot fail)."""
    out = []
    for cell in groups(rows, ("dataset", "loss")):
        dro, erm = by_seed(rows, "gdro_pseudo_worst_group", **cell), by_seed(rows, "erm_worst_group", **cell)
        if not dro or not erm:
            continue
        floor = all(v == 0.0 for v in erm.values())
        out.append(compare("sanity" if floor else "paper",
                           f"{cell['dataset']}: Group DRO on recovered strata beats ERM "
                           f"({LOSS_NAMES.get(cell['loss'], cell['loss'])})", dro, erm, "Group DRO - ERM",
                           note="ERM's worst group is 0 on every seed: this cannot fail" if floor else ""))
    return out


def seed_means(rows: list[dict[str, Any]], metric: str) -> dict[int, float]:
    """{seed: mean of `metric` over that seed's rows} (one value where the losses share the run)."""
    values: dict[int, list[float]] = {}
    for r in rows:
        if metric in r:
            values.setdefault(int(r["seed"]), []).append(float(r[metric]))
    return {s: sum(v) / len(v) for s, v in values.items()}


def target_claims(rows: list[dict[str, Any]], *, true_min: float = 0.80, gap: float = 0.05) -> list[Claim]:
    """Issue 14's targets per dataset: Group DRO with the true groups >= 80% worst-group (the
    interval over seeds above it), and with L_spread's recovered groups within 5 points of that
    (the interval of the paired true - recovered difference below it). The true-group end model
    of a seed is the same run for every loss: counted once. Where L_spread's recovery F1 is 100
    on every seed the recovered groups are the true ones: a sanity check."""
    out: list[Claim] = []
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        true = seed_means([r for r in rows if r["dataset"] == ds], "gdro_true_worst_group")
        if not true:
            continue
        out.append(("target", f"{ds}: Group DRO with the true groups reaches {100 * true_min:.0f}% worst-group "
                    "accuracy", verdict([(one_sample(true, true_min), f"worst group - {100 * true_min:.0f}%")])))
        recovered = by_seed(rows, "gdro_pseudo_worst_group", dataset=ds, loss="spread")
        if recovered:
            exact = all(v == 1.0 for v in by_seed(rows, "recovery_f1", dataset=ds, loss="spread").values())
            out.append(compare("sanity" if exact else "target", f"{ds}: Group DRO on L_spread's recovered groups is "
                               f"within {100 * gap:.0f} points of the true groups", true, recovered, "true - recovered",
                               higher=False, margin=gap,
                               note="recovery F1 is 100 on every seed: the recovered groups are the true ones"
                               if exact else ""))
    return out


def smoke(cfg: dict[str, Any]) -> dict[str, Any]:
    """Seconds: one seed, a test-size encoder, one epoch on 20% of the data, no UMAP."""
    presets = {ds: {**p, "encoder": "cnn-test", "encoder_options": {}, "epochs": 1, "subsample_fraction": 0.2}
               for ds, p in cfg["presets"].items()}
    end = {**cfg["end_model"], "epochs": 1} if cfg["end_model"].get("mode") == "network" else {"epochs": 2}
    return {**cfg, "seeds": 1, "presets": presets, "datasets": dict(list(cfg["datasets"].items())[:1]),
            "recovery": {"reducer": None, "clusterer": "kmeans", "k_range": (2, 3)}, "end_model": end}


EXPERIMENTS = [Experiment(
    name="fig5-robustness", summary="Figure 5 (left): strata recovery F1 and worst-group accuracy (GEORGE + Group DRO)",
    cpu_minutes=60, module=__name__, config=lambda scale: merge(small if scale == "small" else full),
    smoke=smoke, plan=plan, execute=execute, report=report, validate=common.validate_train_spec, claims=claims,
)]
