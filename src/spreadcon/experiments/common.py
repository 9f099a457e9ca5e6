"""Training runs as RunSpecs: build, train or reuse, evaluate; floors; the datasets x protocols x losses grid.

A training RunSpec holds `params = {"train": recipes.resolve_train(overrides)}` (the TrainConfig
differences from its defaults, which key the run) and lives in OUT/runs/<key>; whether it is
finished, resumed or reused is `spreadcon.train.train_or_reuse`'s business, by the one status
rule `spreadcon.runs.run_status`.

Evaluation is `spreadcon.evaluation.evaluate_run` on the run's best checkpoint (model selection
on the validation split, SPEC.md); its METRICS name every number. `evals` add optional ones:
    transfer   fine_transfer_accuracy (the coarse-to-fine probe; cfg["probe"] sets its epochs, lr)
    geometry   intra_class_cosine, common_centre_cosine, rare_centre_cosine (Figure 2)
    val        the same metrics on the validation split (coarse_val_accuracy, ...: the sweep's criterion)
    strata     per-stratum geometry against stratum size (Figure 3), as row["strata"]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spreadcon.build import build_dataset, check_names
from spreadcon.config import TrainConfig
from spreadcon.evaluate.floors import FLOORS, floors
from spreadcon.evaluation import evaluate_run, strata_rows
from spreadcon.experiments.recipes import PROBE, config_dict, merge, resolve_train, smoke_train
from spreadcon.experiments.runner import Context, RunNotFinished, RunSpec
from spreadcon.runs import load_run, run_status
from spreadcon.train import train_or_reuse

EVALS = ("transfer", "geometry", "val", "strata")


# --- one training run ---------------------------------------------------------------------------
def train_spec(name: str, train: dict[str, Any], seed: int, labels: dict[str, Any], *,
               evals: Sequence[str] = (), extra: dict[str, Any] | None = None) -> RunSpec:
    """A RunSpec for one training run followed by evaluate_run and the evaluations in `evals`.
    `extra`: what else makes the run differ (e.g. a training callback), hashed into its key."""
    unknown = sorted(set(evals) - set(EVALS))
    if unknown:
        raise ValueError(f"unknown evaluation(s) {unknown}; choose from {list(EVALS)}")
    return RunSpec(name=name, params={"train": resolve_train(train), **(extra or {})}, seed=seed,
                   labels=labels, evals=tuple(evals))


def spec_config(spec: RunSpec, **runtime: Any) -> TrainConfig:
    """The TrainConfig of a training (or floor) RunSpec: params["train"], its seed, and `runtime`
    keys (out_dir, device, ...: config.RUNTIME_KEYS)."""
    return TrainConfig.from_dict({**config_dict(spec.params["train"]), "seed": spec.seed, **runtime})


def validate_train_spec(spec: RunSpec) -> None:
    """Dry-run check of a training run: a valid TrainConfig with known dataset, encoder and loss."""
    check_names(spec_config(spec))


def train_config(spec: RunSpec, ctx: Context) -> TrainConfig:
    """The spec's TrainConfig in OUT/runs/<key>, on the context's data and device."""
    return spec_config(spec, out_dir=str(ctx.runs_dir / spec.key), data_root=ctx.data_root,
                       device=ctx.device or "auto", progress=ctx.progress, tensorboard=False)


def train_run(spec: RunSpec, ctx: Context, callbacks: Sequence[Any] = ()) -> Path:
    """The folder of the spec's finished training run: trained, resumed or reused by
    `train_or_reuse`. Without ctx.train, RunNotFinished unless it is finished."""
    config = train_config(spec, ctx)
    status = run_status(config.out_dir)
    if not ctx.train and not status.finished:
        raise RunNotFinished(f"{spec.key} has not finished ({status})")
    if ctx.verbose:
        doing = "reused" if status.finished else "resuming" if status.epochs_trained else "training"
        print(f"[reproduce] {spec.key}: {doing}", flush=True)
    return Path(train_or_reuse(config, callbacks=callbacks))


# --- evaluating ---------------------------------------------------------------------------------
def probe_options(ctx: Context) -> dict[str, Any]:
    """The coarse-to-fine probe's {"epochs", "lr"}: recipes.PROBE < the experiment's cfg["probe"]."""
    return merge(PROBE, ctx.config.get("probe"))


def evaluate(run_dir: Path, spec: RunSpec, ctx: Context) -> dict[str, Any]:
    """evaluate_run on the test split plus the spec's `evals`, probes seeded by the spec's seed."""
    probe = probe_options(ctx)
    run = load_run(run_dir)
    options = {"transfer": "transfer" in spec.evals, "probe_epochs": probe["epochs"], "probe_lr": probe["lr"],
               "seed": spec.seed}
    out: dict[str, Any] = evaluate_run(run, geometry="geometry" in spec.evals, **options)
    if "val" in spec.evals:
        out.update(evaluate_run(run, "val", geometry=False, **options))
    if "strata" in spec.evals:
        out["strata"] = strata_rows(run)
    return {**out, "run_dir": str(run_dir)}


def train_and_evaluate(spec: RunSpec, ctx: Context) -> dict[str, Any]:
    """`Experiment.execute` for plain training runs (and the floors of `floor_specs`)."""
    if "floor" in spec.params:
        return evaluate_floor(spec, ctx)
    return evaluate(train_run(spec, ctx), spec, ctx)


# --- floors: what no loss should lose to (a linear probe on the raw inputs, and on a random-init encoder)
def floor_specs(name: str, train: dict[str, Any], seeds: Sequence[int], labels: dict[str, Any]) -> list[RunSpec]:
    """One RunSpec per floor (`spreadcon.evaluate.floors.FLOORS`) and seed, on the data and encoder
    of `train`; its row has loss = the floor's name ("raw-pixels", "random-init")."""
    return [RunSpec(name=f"{name}/{floor}", params={"floor": floor, "train": resolve_train(train)}, seed=seed,
                    labels={**labels, "loss": floor}, evals=("transfer",)) for floor in FLOORS for seed in seeds]


def evaluate_floor(spec: RunSpec, ctx: Context) -> dict[str, Any]:
    """The floor's coarse_accuracy and fine_transfer_accuracy on the test split (the probe of PROBE)."""
    config = spec_config(spec, data_root=ctx.data_root)
    probe = probe_options(ctx)
    (row,) = floors(build_dataset(config), encoder=config.encoder, encoder_options=config.encoder_options,
                    seed=spec.seed, probe={"epochs": probe["epochs"], "lr": probe["lr"]}, names=(spec.params["floor"],))
    return {k: v for k, v in row.items() if k in ("coarse_accuracy", "fine_transfer_accuracy", "probed")
            and v is not None}


# --- the datasets x (protocols x) losses grid most figures use ----------------------------------
# A grid config: "datasets" {name: options}, "losses", "seeds", and either "train" (one recipe) or
# "embeddings" {protocol: recipe} (TrainConfig.embedding: "paper", "projection"), with "train" then
# holding overrides applied on top of every protocol's recipe. A dataset's options are train keys
# plus "spread" (L_spread's tau and alpha, for the L_spread losses only), "embeddings" {protocol:
# options of that protocol only} and "max_seeds" (at most the first that many of the seeds).
# "embedding_losses" {protocol: losses} replaces "losses" for a protocol.
SPREAD_LOSSES = ("spread", "spread-authors")  # the losses that take a dataset's "spread" settings
UNPREFIXED = "projection"  # its runs keep the names they had before the paper protocol was added


def protocols(cfg: dict[str, Any]) -> list[str | None]:
    """The config's protocols in order (None: a one-recipe config, whose "train" is the recipe)."""
    return list(cfg.get("embeddings") or [None])


def grid_losses(cfg: dict[str, Any], embedding: str | None) -> list[str]:
    """The losses run under `embedding`: cfg["embedding_losses"][embedding], else cfg["losses"]."""
    return list((cfg.get("embedding_losses") or {}).get(embedding, cfg["losses"]))


def grid_train(cfg: dict[str, Any], dataset: str, loss: str, embedding: str | None = None) -> dict[str, Any]:
    """Train overrides of one cell: the protocol's recipe < cfg['train'] < the dataset's own keys
    < its keys for this protocol < its 'spread' keys (L_spread's tau and alpha, for SPREAD_LOSSES
    only) < per-loss keys cfg['loss_train'][loss]."""
    opts = {k: v for k, v in cfg["datasets"][dataset].items() if k not in ("embeddings", "max_seeds")}
    per_protocol = cfg["datasets"][dataset].get("embeddings") or {}
    if embedding in per_protocol:
        opts = merge(opts, per_protocol[embedding])
    spread = opts.pop("spread", None)
    recipe = (cfg.get("embeddings") or {}).get(embedding) if embedding is not None else None
    return merge(recipe, cfg.get("train"), {"dataset": dataset, "loss": loss}, opts,
                 spread if loss in SPREAD_LOSSES else None, (cfg.get("loss_train") or {}).get(loss))


def cell_name(dataset: str, embedding: str | None) -> str:
    """The run-name stem of a (dataset, protocol) cell: "mnist5k-coarse", "mnist5k-coarse/paper"."""
    return dataset if embedding in (None, UNPREFIXED) else f"{dataset}/{embedding}"


def dataset_seeds(cfg: dict[str, Any], dataset: str, seeds: Sequence[int]) -> list[int]:
    """The seeds a dataset runs: the first cfg["datasets"][dataset]["max_seeds"] of `seeds`, or all."""
    cap = cfg["datasets"][dataset].get("max_seeds")
    return list(seeds)[:cap] if cap else list(seeds)


def grid_plan(cfg: dict[str, Any], seeds: Sequence[int], evals: Sequence[str]) -> list[RunSpec]:
    """One run per dataset x protocol x loss x seed of the config; with cfg["floors"], the floors of
    each (dataset, protocol) (on the data and encoder of its L_spread cell) as rows whose loss is the
    floor's name. Rows of an "embeddings" config carry the label "embedding"."""
    specs: list[RunSpec] = []
    floors_: list[RunSpec] = []
    for ds in cfg["datasets"]:
        ds_seeds = dataset_seeds(cfg, ds, seeds)
        for emb in protocols(cfg):
            stem, labels = cell_name(ds, emb), {"dataset": ds, **({"embedding": emb} if emb else {})}
            specs += [train_spec(f"{stem}/{loss}", grid_train(cfg, ds, loss, emb), seed,
                                 {**labels, "loss": loss}, evals=evals)
                      for loss in grid_losses(cfg, emb) for seed in ds_seeds]
            if cfg.get("floors"):
                floors_ += floor_specs(stem, grid_train(cfg, ds, "spread", emb), ds_seeds, labels)
    return specs + floors_


def smoke_grid(cfg: dict[str, Any], n_datasets: int = 1) -> dict[str, Any]:
    """The first `n_datasets` datasets, one seed, every train config shrunk (recipes.smoke_train):
    each protocol's recipe of an "embeddings" config, else each dataset's train keys."""
    datasets = dict(list(cfg["datasets"].items())[:n_datasets])
    out = merge(cfg, {"seeds": 1, "probe": {"epochs": 2}})
    if cfg.get("embeddings"):
        out["embeddings"] = {e: smoke_train(merge(recipe, cfg.get("train"))) for e, recipe in cfg["embeddings"].items()}
        out["datasets"] = merge(datasets)
        return out
    out["datasets"] = {ds: merge(opts, smoke_train(merge(cfg.get("train"), opts)))
                       for ds, opts in datasets.items()}
    return out
