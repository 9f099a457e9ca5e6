"""Figure 5 (right): coresets from L_spread strata difficulty against random, forgetting, EL2N, GraNd.

    spreadcon reproduce fig5-coreset [--scale small|full] [--seeds 3] [--data-root DIR]

Difficulty (ours, Section 5.3): L_spread runs on random t in {10, 20, 50}% subsamples (3 seeds
each), the CE head on a labelled fraction of each; each run's final model classifies every
training point and `spreadcon.apps.coreset.difficulty_counts` counts the runs that got it right.
Baselines score from full-data cross-entropy runs (forgetting counts over epochs; EL2N and GraNd
of the model at `early_epoch`; `spreadcon.apps.coreset_scores`). Every coreset of {30, 50, 70, 90}%
trains a fresh model with cross-entropy through `spreadcon.train.train` (TrainConfig.train_subset,
the coreset's positions in the train split; selection on the validation split like every run),
and its test coarse_accuracy is the row. The score runs are shared by every evaluation seed (the
runner's seeds); one row per evaluation seed holds every (method, size) of that seed.
The paper (CIFAR10, ResNet18): +1.0 point over prior work at 30%, up to +5.2 over Toneva et al.;
competitive at large sizes. Small scale: digits and the recipe of fig4 (recipes.SMALL_TRAIN, batch 64). Expected: the difficulty
coreset at or above random and the score baselines at the smallest sizes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from torch import Tensor, nn

from spreadcon.apps.coreset import difficulty_counts, random_coreset, strata_coreset, top_score_coreset
from spreadcon.apps.coreset_scores import forgetting_counts, grand_scores, model_el2n, model_logits
from spreadcon.build import build_dataset
from spreadcon.data import StrataDataset
from spreadcon.data.views import default_views
from spreadcon.evaluation import evaluate_run
from spreadcon.experiments import charts, common
from spreadcon.experiments.claims import Claim, winner_claims
from spreadcon.experiments.paper import CLAIMS
from spreadcon.experiments.recipes import DIGITS, SMALL_TRAIN, merge
from spreadcon.experiments.runner import Context, Experiment, RunSpec
from spreadcon.experiments.table import mean_std
from spreadcon.io import save_npy
from spreadcon.runs import load_run

METHODS = ("strata", "random", "forgetting", "el2n", "grand", "forgetting-cb", "el2n-cb", "grand-cb")
LABELS = {"strata": "L_spread difficulty (ours)", "random": "random (class-balanced)",
          "forgetting": "forgetting (Toneva et al.)", "el2n": "EL2N (Paul et al.)",
          "grand": "GraNd (Paul et al.)", "forgetting-cb": "forgetting, class-balanced",
          "el2n-cb": "EL2N, class-balanced", "grand-cb": "GraNd, class-balanced",
          "full": "full training set"}

small: dict[str, Any] = {
    "seeds": 3,                          # evaluation seeds: selection order and the fresh models
    "dataset": "digits",
    "methods": METHODS,
    "sizes": (0.3, 0.5, 0.7, 0.9),
    "train": merge(SMALL_TRAIN, DIGITS),   # the recipe of fig4; epochs below
    "difficulty": {"fractions": (0.1, 0.2, 0.5), "seeds": (0, 1, 2), "epochs": 20, "labelled_fraction": 0.01,
                   "min_labels_per_class": 2, "alpha": 0.5, "temperature": 0.5},
    "scores": {"seeds": (0, 1), "epochs": 20, "early_epoch": 3},
    "eval_epochs": 20,
}
full: dict[str, Any] = {**merge(small, {
    "dataset": "cifar10", "difficulty": {"epochs": 200, "min_labels_per_class": 1},
    "scores": {"epochs": 200, "early_epoch": 20}, "eval_epochs": 200}), "train": {"encoder": "resnet18", "lr": 3e-4}}


def check(cfg: dict[str, Any]) -> None:
    """ValueError naming the setting that cannot work."""
    unknown = sorted(set(cfg["methods"]) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown coreset methods {unknown}; choose from {list(METHODS)}")
    for key, values in (("coreset size", cfg["sizes"]), ("subsample fraction", cfg["difficulty"]["fractions"])):
        bad = [v for v in values if not 0.0 < v <= 1.0]
        if bad:
            raise ValueError(f"{key} must be a fraction in (0, 1], got {bad}")
    sc = cfg["scores"]
    if not 1 <= sc["early_epoch"] <= sc["epochs"]:
        raise ValueError(f"early_epoch must lie in 1..scores.epochs={sc['epochs']}, got {sc['early_epoch']}")
    if not (cfg["difficulty"]["seeds"] and sc["seeds"]):
        raise ValueError("give at least one seed for the difficulty and the score runs")


def base_train(cfg: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return merge(cfg["train"], {"dataset": cfg["dataset"]}, changes)


def plan(cfg: dict[str, Any], seeds: Sequence[int], rows: list) -> list[RunSpec]:
    check(cfg)
    return [common.train_spec(f"coreset/{cfg['dataset']}", base_train(cfg, protocol="ce", epochs=cfg["eval_epochs"]),
                              s, {"dataset": cfg["dataset"]}) for s in seeds]


def full_train_split(cfg: dict[str, Any], ctx: Context) -> tuple[StrataDataset, Any, Tensor]:
    """(the dataset as loaded, its train split, the split's prepared images [N, C, H, W]): what
    every score is about."""
    ds = build_dataset(common.train_config(RunSpec("data", {"train": base_train(cfg)}, 0), ctx))
    train = ds.get_split("train")
    return ds, train, default_views(ds).prepare(train.x)


def logits_only(model: nn.Module) -> nn.Module:
    """The module x -> logits of a run's model (which returns (embedding, logits)), for the score functions."""
    class Logits(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(x)[1]

    return Logits()


def difficulty_scores(cfg: dict[str, Any], ctx: Context, data: tuple) -> tuple[np.ndarray, dict[str, float]]:
    """Difficulty counts [N_train] (runs whose final model is right) and the labelled fraction used per t."""
    d, (ds, train, x) = cfg["difficulty"], data
    correct, used = [], {}
    for t in d["fractions"]:
        n_sub = max(1, round(t * len(train)))
        used[f"{t:g}"] = min(1.0, max(d["labelled_fraction"], d["min_labels_per_class"] * ds.num_classes / n_sub))
        spec_train = base_train(cfg, loss="spread", alpha=d["alpha"], temperature=d["temperature"], epochs=d["epochs"],
                                subsample_fraction=t, labelled_fraction=used[f"{t:g}"])
        for seed in d["seeds"]:
            run_dir = common.train_run(common.train_spec(f"coreset/difficulty/t{t:g}", spec_train, seed, {}), ctx)
            model = load_run(run_dir, checkpoint="last").model
            correct.append((model_logits(logits_only(model), x).argmax(1) == train.label).numpy())
    return difficulty_counts(np.stack(correct)), used


def baseline_scores(cfg: dict[str, Any], ctx: Context, data: tuple) -> dict[str, np.ndarray]:
    """forgetting, el2n, grand [N_train] from full-data cross-entropy runs."""
    sc, (_, train, x) = cfg["scores"], data
    histories, early = [], []
    for seed in sc["seeds"]:
        spec_train = base_train(cfg, protocol="ce", epochs=sc["epochs"], track_examples=True,
                                keep_checkpoints=[sc["early_epoch"]])
        run_dir = common.train_run(common.train_spec("coreset/scores-ce", spec_train, seed, {}), ctx)
        histories.append(np.load(run_dir / "example_correct.npy"))
        early.append(logits_only(load_run(run_dir, checkpoint=sc["early_epoch"]).model))
    wanted = {m.removesuffix("-cb") for m in cfg["methods"]}
    scores = {"forgetting": forgetting_counts(np.stack(histories)).astype(np.float64)}
    if "el2n" in wanted:
        scores["el2n"] = model_el2n(early, x, train.label)
    if "grand" in wanted:
        scores["grand"] = grand_scores(early, x, train.label)
    return scores


def select(method: str, size: float, labels: np.ndarray, scores: dict[str, np.ndarray], seed: int) -> np.ndarray:
    """Positions in the train split of one coreset."""
    if method == "strata":
        return strata_coreset(scores["strata"], labels, size, seed=seed)
    if method == "random":
        return random_coreset(labels, size, seed=seed)
    if method.endswith("-cb"):
        return top_score_coreset(scores[method.removesuffix("-cb")], size, labels=labels, seed=seed)
    return top_score_coreset(scores[method], size, seed=seed)


def subset_file(index: np.ndarray, ctx: Context) -> Path:
    """OUT/subsets/<hash of the positions>.npy: named by content, so a run's config names its coreset."""
    index = np.asarray(index, dtype=np.int64)
    path = ctx.runs_dir.parent / "subsets" / f"{hashlib.sha1(index.tobytes()).hexdigest()[:16]}.npy"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        save_npy(index, path)
    return path


def fresh_accuracy(spec: RunSpec, ctx: Context, index: np.ndarray | None) -> float:
    """Test coarse_accuracy of a fresh CE model trained on train positions `index` (None: all)."""
    train = dict(spec.params["train"])
    name = "coreset/full"
    if index is not None:
        train["train_subset"] = str(subset_file(index, ctx))
        name = f"coreset/n{len(index)}"
    run_dir = common.train_run(common.train_spec(name, train, spec.seed, {}), ctx)
    return evaluate_run(run_dir, transfer=False, geometry=False)["coarse_accuracy"]


def execute(spec: RunSpec, ctx: Context) -> dict[str, Any]:
    data = full_train_split(ctx.config, ctx)  # (dataset, train split, prepared train images)
    labels = data[1].label.numpy()
    scores: dict[str, np.ndarray] = {}
    info: dict[str, Any] = {}
    if "strata" in ctx.config["methods"]:
        scores["strata"], info["labelled_fraction_used"] = difficulty_scores(ctx.config, ctx, data)
        info["bucket_sizes"] = np.bincount(scores["strata"].astype(int)).tolist()
    if any(m not in ("strata", "random") for m in ctx.config["methods"]):
        scores.update(baseline_scores(ctx.config, ctx, data))
    rows = []
    for method in ctx.config["methods"]:
        for size in ctx.config["sizes"]:
            index = select(method, size, labels, scores, spec.seed)
            rows.append({"method": method, "size": size, "n": int(len(index)),
                         "coarse_accuracy": fresh_accuracy(spec, ctx, index)})
    rows.append({"method": "full", "size": 1.0, "n": len(labels), "coarse_accuracy": fresh_accuracy(spec, ctx, None)})
    return {"coresets": rows, "info": info}


def flat(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (method, size, evaluation seed)."""
    return [{**c, "seed": row["seed"]} for row in rows for c in row["coresets"]]


def report(rows: list[dict[str, Any]], cfg: dict[str, Any], out: Path) -> str:
    coresets, sizes = flat(rows), cfg["sizes"]
    lines = [f"Test accuracy, % (mean ± std over {len(rows)} evaluation seeds), of a fresh model trained "
             f"({cfg['eval_epochs']} epochs, cross-entropy) on each coreset of {cfg['dataset']}.", "",
             "| method | " + " | ".join(f"{s:.0%}" for s in sizes) + " |", "|---|" + "---|" * len(sizes)]
    for method in cfg["methods"]:
        cells = [mean_std(r["coarse_accuracy"] for r in coresets if r["method"] == method and r["size"] == s)
                 for s in sizes]
        lines.append(f"| {LABELS[method]} | " + " | ".join(c.format(100, 1) for c in cells) + " |")
    whole = mean_std(r["coarse_accuracy"] for r in coresets if r["method"] == "full")
    lines += ["", f"Full training set: {whole.format(100, 1)}."]
    info = rows[0].get("info", {}) if rows else {}
    if "labelled_fraction_used" in info:
        used = ", ".join(f"t={t}: {f:.1%}" for t, f in info["labelled_fraction_used"].items())
        lines += ["", f"Difficulty runs: L_spread on subsamples, CE head on ({used}) of each subsample's labels "
                  f"(>= {cfg['difficulty']['min_labels_per_class']} per class); bucket sizes by count: "
                  f"{info.get('bucket_sizes')}."]
    charts.line_plot([r for r in coresets if r["method"] != "full"], x="size", hue="method", metric="coarse_accuracy",
                     path=out / "fig5_coreset.png", title="Figure 5 (right): coreset size vs test accuracy")
    return "\n".join(lines) + f"\n\nThe paper plots this (no table); its text: {CLAIMS['fig5-coreset']}\n"


def claims(rows: list[dict[str, Any]], cfg: dict[str, Any]) -> list[Claim]:
    """Per size: the strata-difficulty coreset beats each baseline, paired over evaluation seeds."""
    return winner_claims(flat(rows), group="size", key="method", metric="coarse_accuracy", winner="strata",
                         against=("random", "forgetting", "el2n", "grand"),
                         what="(strata-difficulty coreset) beats every baseline at this size")


def smoke(cfg: dict[str, Any]) -> dict[str, Any]:
    out = merge(cfg, {"seeds": 1, "sizes": (0.5,), "eval_epochs": 1,
                             "difficulty": {"fractions": (0.5,), "seeds": (0,), "epochs": 1},
                             "scores": {"seeds": (0,), "epochs": 1, "early_epoch": 1}})
    out["train"] = {**cfg["train"], "encoder": "cnn-test", "encoder_options": {}, "embedding": "paper",
                    "batch_size": 64}
    return out


EXPERIMENTS = [Experiment(
    name="fig5-coreset", summary="Figure 5 (right): coreset accuracy by size, strata difficulty vs baselines",
    cpu_minutes=20, module=__name__, config=lambda scale: merge(small if scale == "small" else full),
    smoke=smoke, plan=plan, execute=execute, report=report, validate=common.validate_train_spec, claims=claims,
)]
