"""defaults: what `spreadcon train` gives with no recipe flags (issue 24).

    spreadcon reproduce defaults                                   # the coarse datasets shipped in the package
    spreadcon reproduce defaults --dataset npz --data-root my.npz   # your own data
    spreadcon reproduce defaults --scale medium --data-root DIR    # real MNIST / CIFAR-10 under DIR

Each run is built as `spreadcon train --dataset NAME --loss LOSS --seed S` builds it
(`spreadcon.build.with_recipe`: the recipe picked by the images' size and channels), trained,
and probed on the fine labels (coarse-to-fine transfer, the probe reads h) beside both floors
(a linear probe on the raw pixels, and on the picked net at random init). The run keys hash the
recipes themselves, so changing a recipe retrains what it changes.

Expected (issue 24's target, a project target, not the paper's): on every dataset both losses
transfer better than both floors, the paired interval over 3 seeds excluding zero.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

from spreadcon.build import build_dataset, with_recipe
from spreadcon.config import TrainConfig
from spreadcon.evaluate.floors import floors
from spreadcon.experiments import common
from spreadcon.experiments.claims import Claim, winner_claims
from spreadcon.experiments.paper import LOSS_NAMES
from spreadcon.experiments.runner import Context, Experiment, RunSpec
from spreadcon.experiments.table import markdown
from spreadcon.recipes import RECIPES, Recipe
from spreadcon.train import train_or_reuse

LOSSES = ("supcon", "spread")
FLOOR_NAMES = ("raw-pixels", "random-init")
small: dict[str, Any] = {
    "seeds": 3, "losses": LOSSES,
    "datasets": {"digits-coarse": {}, "mnist5k-coarse": {}, "mnist5k-coarse-u": {}},
}
# Real data under --data-root, the recipe as picked; the training split subsampled (a user's key,
# stated in the table: 5,400 MNIST and 4,500 CIFAR-10 training images) to keep a run within
# about 10 minutes of one core.
medium: dict[str, Any] = {
    "seeds": 3, "losses": LOSSES,
    "datasets": {"mnist-coarse": {"subsample_fraction": 0.1}, "cifar10-coarse": {"subsample_fraction": 0.1}},
}


def recipes_digest() -> str:
    """A hash of every recipe: part of each run's key."""
    text = json.dumps({n: [r.train, r.alpha] for n, r in sorted(RECIPES.items())}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def plan(cfg: dict[str, Any], seeds: Sequence[int], rows: list[dict[str, Any]]) -> list[RunSpec]:
    """dataset x (losses, then floors) x seed; params: what the user would type, and the recipes."""
    specs = []
    for ds, options in cfg["datasets"].items():
        for kind in (*cfg["losses"], *FLOOR_NAMES):
            key = "floor" if kind in FLOOR_NAMES else "loss"
            specs += [RunSpec(f"defaults/{ds}/{kind}", {"user": {"dataset": ds, **options, **cfg.get("train", {}),
                                                                 **({"loss": kind} if key == "loss" else {})},
                                                        key: kind, "recipes": recipes_digest()},
                              seed, {"dataset": ds, "loss": kind}, evals=("transfer",)) for seed in seeds]
    return specs


def spec_config(spec: RunSpec, ctx: Context) -> tuple[TrainConfig, Recipe, str]:
    """The spec's config as `spreadcon train` builds it from the user's keys, its recipe and line."""
    user = {**spec.params["user"], "seed": spec.seed}
    plain = TrainConfig.from_dict({**user, "out_dir": str(ctx.runs_dir / spec.key), "data_root": ctx.data_root,
                                   "device": ctx.device or "auto", "progress": ctx.progress, "tensorboard": False})
    return with_recipe(plain, set(user))


def execute(spec: RunSpec, ctx: Context) -> dict[str, Any]:
    config, recipe, line = spec_config(spec, ctx)
    if "floor" in spec.params:
        probe = common.probe_options(ctx)
        (row,) = floors(build_dataset(config), encoder=config.encoder, encoder_options=config.encoder_options,
                        seed=spec.seed, probe=probe, names=(spec.params["floor"],))
        return {"recipe": recipe.name, **{k: row[k] for k in ("coarse_accuracy", "fine_transfer_accuracy")}}
    if ctx.verbose:
        print(f"[reproduce] {spec.key}: {line}", flush=True)
    return {"recipe": recipe.name, **common.evaluate(Path(train_or_reuse(config)), spec, ctx)}


def report(rows: list[dict[str, Any]], cfg: dict[str, Any], out: Path) -> str:
    picked = {r["dataset"]: r["recipe"] for r in rows}
    options = {ds: ", ".join(f"{k}={v}" for k, v in o.items()) for ds, o in cfg["datasets"].items()}
    lines = ["## The recipe picked for each dataset", "", "| dataset | recipe | options given |", "|---|---|---|"]
    lines += [f"| {ds} | {picked[ds]} | {options.get(ds) or '-'} |" for ds in picked]
    text = "\n".join(lines) + "\n\n## Coarse-to-fine transfer of the defaults (%), beside both floors\n\n"
    text += markdown(rows, row_key="dataset", col_key="loss", metric="fine_transfer_accuracy", col_names=LOSS_NAMES)
    text += "\n## Coarse (training-label) test accuracy (%)\n\n"
    return text + markdown(rows, row_key="dataset", col_key="loss", metric="coarse_accuracy", col_names=LOSS_NAMES)


def claims(rows: list[dict[str, Any]], cfg: dict[str, Any]) -> list[Claim]:
    return [c for loss in LOSSES for c in winner_claims(
        rows, group="dataset", metric="fine_transfer_accuracy", winner=loss, against=FLOOR_NAMES,
        what="with the default recipe transfers better than both floors", kind="target")]


def smoke(cfg: dict[str, Any]) -> dict[str, Any]:
    first = dict(list(cfg["datasets"].items())[:1])
    return {**cfg, "seeds": 1, "datasets": first, "probe": {"epochs": 2},
            "train": {"epochs": 1, "subsample_fraction": 0.15}}


EXPERIMENT = Experiment(
    name="defaults",
    summary="Issue 24: `spreadcon train` with its default recipe, L_SC and L_spread transfer beside both floors",
    cpu_minutes=25, module=__name__, config=lambda scale: {"small": small, "medium": medium}[scale], smoke=smoke,
    plan=plan, execute=execute, report=report, claims=claims, scales=("small", "medium"),
)
EXPERIMENTS = [EXPERIMENT]
