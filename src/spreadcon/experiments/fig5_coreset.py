"""Figure 5 (right): coresets from L_spread strata difficulty against random, forgetting, EL2N, GraNd.

    spreadcon reproduce fig5-coreset [--scale small|full] [--seeds 3]

Wires `spreadcon.apps.coreset_experiment` (the CORESET helper's pipeline: L_spread runs on
t in {10, 20, 50}% subsamples score each point's difficulty; baselines score from full-data
cross-entropy runs; a fresh model trains on each coreset of {30, 50, 70, 90}%) into the runner
as one run per evaluation seed. The pipeline's score runs are shared by the seeds' folders only
through its own done markers, so each seed recomputes them: seeds here are evaluation seeds.
The paper (CIFAR10, ResNet18): +1.0 point over prior work at 30%, up to +5.2 over Toneva et al.;
competitive at large sizes. Small scale: digits and the app's narrow `cnn`. Expected: the
difficulty coreset at or above random and the score baselines at the smallest sizes.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Sequence

from spreadcon.experiments import common
from spreadcon.experiments.paper import CLAIMS
from spreadcon.experiments.runner import Context, Experiment, RunSpec

small: dict[str, Any] = {"seeds": 1, "app": {}}  # the app's own defaults (3 evaluation seeds inside)
full: dict[str, Any] = {"seeds": 1, "app": {
    "dataset": "cifar10", "encoder": "resnet18", "encoder_options": {}, "difficulty_epochs": 200,
    "score_epochs": 200, "early_epoch": 20, "eval_epochs": 200, "lr": 3e-4, "min_labels_per_class": 1}}


def app_config(cfg: dict[str, Any]):
    from spreadcon.apps.coreset_experiment import CoresetExperiment

    base = CoresetExperiment.smoke() if cfg.get("smoke") else CoresetExperiment()
    exp = CoresetExperiment(**{**asdict(base), **cfg["app"]})
    exp.validate()
    return exp


def plan(cfg: dict[str, Any], seeds: Sequence[int], rows: list) -> list[RunSpec]:
    exp = app_config(cfg)
    params = {f.name: getattr(exp, f.name) for f in fields(exp) if f.name != "device"}
    return [RunSpec(f"coreset/{exp.dataset}", {"app": params}, s, {"dataset": exp.dataset}) for s in seeds]


def execute(spec: RunSpec, run_dir: Path, ctx: Context) -> dict[str, Any]:
    import json

    import torch

    from spreadcon.apps.coreset_experiment import CoresetExperiment, run_experiment

    if not torch.cuda.is_available():
        torch.set_num_threads(1)
    app = dict(spec.params["app"])
    if spec.seed:  # another repetition: shift every seed of the pipeline
        for key in ("difficulty_seeds", "score_seeds", "eval_seeds"):
            app[key] = tuple(s + 100 * spec.seed for s in app[key])
    exp = CoresetExperiment(**{**app, "device": ctx.device or "auto"})
    if ctx.data_root is not None:
        raise ValueError("spreadcon.apps.coreset_experiment cannot take --data-root yet; only embedded datasets run here")
    rows = run_experiment(exp, run_dir, log=print if ctx.verbose else (lambda *a: None))
    info = json.loads((run_dir / "results.json").read_text()).get("info", {})
    return {"rows": rows, "info": info}


def validate(spec: RunSpec) -> None:
    from spreadcon.apps.coreset_experiment import CoresetExperiment

    exp = CoresetExperiment(**spec.params["app"])
    exp.validate()
    common.check_names(datasets=[exp.dataset], encoders=[exp.encoder], losses=["spread"])


def report(rows: list[dict[str, Any]], cfg: dict[str, Any], out: Path) -> str:
    from spreadcon.apps.coreset_experiment import plot, report as app_report

    flat = [{**r, "repetition": row["seed"]} for row in rows for r in row["rows"]]
    exp = app_config(cfg)
    exp.eval_seeds = tuple(sorted({r["seed"] for r in flat}))
    plot(flat, out / "fig5_coreset.png")
    return (app_report(flat, exp, rows[0].get("info", {}) if rows else {})
            + f"\nThe paper plots this (no table); its text: {CLAIMS['fig5-coreset']}\n")


def claims(rows: list[dict[str, Any]], cfg: dict[str, Any]) -> list[tuple[str, str]]:
    flat = [r for row in rows for r in row["rows"] if "test_acc" in r]
    return common.winner_claims(flat, group="size", key="method", metric="test_acc", winner="strata",
                                against=("random", "forgetting", "el2n", "grand"),
                                what="(strata-difficulty coreset) beats every baseline at this size")


def smoke(cfg: dict[str, Any]) -> dict[str, Any]:
    return {**cfg, "seeds": 1, "smoke": True, "app": {}}


EXPERIMENTS = [Experiment(
    name="fig5-coreset", summary="Figure 5 (right): coreset accuracy by size, strata difficulty vs baselines",
    cpu_minutes=20, module=__name__, config=lambda scale: common.merge(small if scale == "small" else full),
    smoke=smoke, plan=plan, execute=execute, report=report, validate=validate, claims=claims,
)]
