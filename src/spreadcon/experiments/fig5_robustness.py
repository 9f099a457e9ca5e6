"""Figure 5 (left): strata recovery (F1) and worst-group accuracy with Group DRO on recovered strata.

    spreadcon reproduce fig5-robustness [--scale small|full] [--seeds 3] [--data-root DIR]

Wires `spreadcon.apps.robustness` (the ROBUST helper's GEORGE-style pipeline: per-class UMAP +
clustering of the training embeddings into pseudo-strata, then Group DRO on them; ERM and
true-group Group DRO beside it) into the runner: one training run per (loss, seed) with the
app's dataset preset, then the app's `apply_to_run` on it.
The paper: recovery F1 (L_CE / L_SC / L_spread) Waterbirds 56.3 / 47.2 / 59.0, ISIC 74.0 / 92.5 /
93.8; worst-group Waterbirds 88.4 / 86.5 / 89.0, ISIC (AUROC) 92.0 / 93.3 / 92.6.
Small scale: spurious-MNIST (a Waterbirds-like digit task with a 95%-correlated background; the
app's preset: narrow `cnn`, joint CE head, 6 epochs). Full scale: Waterbirds, ResNet50,
contrastive loss then probe (needs --data-root). Expected: L_spread's recovered strata at least
as good as L_SC's, and Group DRO on them above ERM on worst-group accuracy.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Sequence

from spreadcon.experiments import common
from spreadcon.experiments.paper import FIG5_RECOVERY_F1, FIG5_WORST_GROUP, LOSS_NAMES, paper_value
from spreadcon.experiments.runner import Context, Experiment, RunSpec
from spreadcon.experiments.table import markdown

small: dict[str, Any] = {"seeds": 3, "app": {"dataset": "spurious-mnist"}}
full: dict[str, Any] = {"seeds": 3, "app": {"dataset": "waterbirds"}}


def app_config(cfg: dict[str, Any]):
    from spreadcon.apps.robustness import RobustnessConfig, RobustnessExperiment

    base = RobustnessExperiment.smoke() if cfg.get("smoke") else RobustnessExperiment()
    app = dict(cfg["app"])
    if "robustness" in app:
        app["robustness"] = RobustnessConfig(**{**asdict(base.robustness), **app["robustness"]})
    return replace(base, **app)


def plan(cfg: dict[str, Any], seeds: Sequence[int], rows: list) -> list[RunSpec]:
    exp = app_config(cfg)
    specs = []
    for loss in exp.losses:
        for seed in seeds:
            train = exp.train_config(loss, seed, Path("unused")).to_dict()
            # The same params as a plain training run (common.train_spec), so the L_SC and L_spread
            # runs are shared with fig4 where the configs agree; the app's recovery and Group DRO
            # settings are an evaluation of the run, recorded in its row.
            params = {"train": common.resolve_train(train), "probe": dict(common.PROBE)}
            specs.append(RunSpec(f"{exp.dataset}/{loss}", params, seed, {"dataset": exp.dataset, "loss": loss},
                                 evals=("accuracy", "robustness")))
    return specs


def execute(spec: RunSpec, run_dir: Path, ctx: Context) -> dict[str, Any]:
    from spreadcon.apps.robustness import apply_to_run

    run = common.train(spec, run_dir, ctx)
    out = common.evaluate(run, RunSpec(spec.name, spec.params, spec.seed, evals=("accuracy",)))
    app = app_config(ctx.config or {"app": {}})
    config = replace(app.robustness, seed=spec.seed)
    # The app's checkpoint choice ("last"): spurious-MNIST's group-balanced validation split scores
    # every background-only model at 50%, so best.pt would stay at epoch 1.
    result = apply_to_run(run_dir, config, out_dir=run_dir / "robustness", pictures=spec.seed == 0,
                          picture_prefix=f"{spec.labels['loss']} seed {spec.seed}: ",
                          checkpoint=app.checkpoint)
    metric = "worst_group_auroc" if run.config.dataset == "isic" else "worst_group_accuracy"
    out.update(recovery_f1=result["recovery_train"]["f1"], recovery_ari=result["recovery_train"]["ari"],
               metric=metric, robustness=result["methods"], robustness_config=asdict(config))
    for method, values in result["methods"].items():
        out[f"{method}_worst_group"] = values[metric]
    return out


def report(rows: list[dict[str, Any]], cfg: dict[str, Any], out: Path) -> str:
    import shutil

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
    for row in rows:  # the class pictures of seed 0 (UMAP by true stratum and by recovered cluster)
        for png in (out.parent / "runs" / row["run"] / "robustness").glob("*.png") if row["seed"] == 0 else []:
            shutil.copy(png, out / f"{row['loss']}_{png.name}")
    common.bar_chart(rows, group="loss", hue="dataset", metric="gdro_pseudo_worst_group",
                     path=out / "worst_group.png", title="Figure 5 (left): Group DRO on recovered strata")
    return "\n".join(text)


def claims(rows: list[dict[str, Any]], cfg: dict[str, Any]) -> list[tuple[str, str]]:
    return (common.winner_claims(rows, group="dataset", metric="recovery_f1", winner="spread",
                                 against=("supcon", "ce"), what="recovers the hidden strata best (F1)")
            + common.winner_claims(rows, group="dataset", metric="gdro_pseudo_worst_group", winner="spread",
                                   against=("supcon", "ce"), what="gives the best worst-group accuracy with Group DRO")
            + [(f"{r[0]}: Group DRO on recovered strata beats ERM ({LOSS_NAMES.get(r[1], r[1])})", r[2])
               for r in _dro_vs_erm(rows)])


def _dro_vs_erm(rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    from spreadcon.experiments.table import mean_std

    out = []
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        for loss in dict.fromkeys(r["loss"] for r in rows):
            sub = [r for r in rows if r["dataset"] == ds and r["loss"] == loss and "erm_worst_group" in r]
            if sub:
                dro = mean_std(r["gdro_pseudo_worst_group"] for r in sub)
                erm = mean_std(r["erm_worst_group"] for r in sub)
                out.append((ds, loss, f"{'yes' if dro.mean > erm.mean else 'no'}; Group DRO {dro.format(100, 1)}, "
                                      f"ERM {erm.format(100, 1)}"))
    return out


def smoke(cfg: dict[str, Any]) -> dict[str, Any]:
    return {**cfg, "seeds": 1, "smoke": True}


EXPERIMENTS = [Experiment(
    name="fig5-robustness", summary="Figure 5 (left): strata recovery F1 and worst-group accuracy (GEORGE + Group DRO)",
    cpu_minutes=15, module=__name__, config=lambda scale: common.merge(small if scale == "small" else full),
    smoke=smoke, plan=plan, execute=execute, report=report, validate=common.validate_train_spec, claims=claims,
)]
