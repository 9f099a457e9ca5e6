"""What most experiments share: a training run as a RunSpec, its evaluation, pictures, claims.

A training RunSpec holds `params = {"train": <TrainConfig differences from its defaults>}`: the
config is built and validated, and the fields whose values differ from TrainConfig's defaults
(minus where-and-how keys such as out_dir, device and data_root) key the run. Adding a trainer
option therefore leaves finished runs valid; after changing a trainer default, use a fresh --out
(each run folder's config.json holds its full resolved config).

Evaluation is `spreadcon.evaluate.run.evaluate_run` on the run's best checkpoint (model selection
on the validation split, SPEC.md); its METRICS name every number. `evals` add optional ones:
    transfer   fine_transfer_accuracy (the coarse-to-fine probe; cfg["probe"] sets its epochs, lr)
    geometry   intra_class_cosine, common_centre_cosine, rare_centre_cosine (Figure 2)
    val        the same metrics on the validation split (coarse_val_accuracy, ...: the sweep's criterion)
    strata     per-stratum geometry against stratum size (Figure 3), as row["strata"]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from spreadcon.experiments.runner import Context, RunSpec, merge, train_run

__all__ = ["merge"]  # re-exported: experiment modules build their configs with common.merge

# TrainConfig keys that say where or how a run is shown, not what it computes (not hashed).
UNHASHED = ("out_dir", "device", "progress", "tensorboard", "data_root", "seed")
EVALS = ("transfer", "geometry", "val", "strata")
PROBE = {"epochs": 100, "lr": 1e-3}  # SPEC.md: coarse-to-fine probe of the authors' code

# Small scale (2 CPU cores): the demo's recipe, chosen on validation (docs/recipes.md, issue 16):
# the `cnn-digits` net (two conv-BN stages 16/32 flattened into a 256-d h) with a projection head
# (h -> MLP -> 128-d z for the loss; probes read h), Adam lr 1e-3 (weight decay 0), batch 256, 30
# epochs, the joint CE head. The 8x8 digits sets have 1,300 training images: batch 64 gives them
# 20 steps an epoch (not validated separately). channels_last (NHWC convolutions): 1.2-1.3x the
# images/s of NCHW on one thread, about equal on two; same maths (benchmarks/trainer.py --options).
SMALL_TRAIN: dict[str, Any] = {"encoder": "cnn-digits", "encoder_options": {"proj_dim": 128, "proj_hidden": 256},
                               "epochs": 30, "batch_size": 256, "lr": 1e-3, "weight_decay": 0.0,
                               "channels_last": True}
DIGITS: dict[str, Any] = {"batch_size": 64}
# L_spread's alpha chosen on a validation split with SMALL_TRAIN (docs/recipes.md, stage B: 0.16 and
# 0.25 tie, the tie goes to the smaller). Datasets not listed keep the paper's alpha for their analogue.
VALIDATED_ALPHA: dict[str, float] = {"mnist5k-coarse": 0.16}
# Full scale: the authors' ViT recipe (SPEC.md; TrainConfig's defaults are its optimiser settings).
VIT: dict[str, Any] = {"encoder": "vit", "epochs": 600}
# The paper's ResNet50 datasets (Waterbirds, ISIC): contrastive loss alone, then a linear probe.
RESNET50: dict[str, Any] = {"encoder": "resnet50", "epochs": 200, "protocol": "contrastive_then_probe"}


# --- configs ------------------------------------------------------------------------------
def resolve_train(overrides: dict[str, Any]) -> dict[str, Any]:
    """The TrainConfig for these overrides, validated, as its differences from the defaults
    (values normalised by the config, e.g. ints as floats), minus the unhashed keys."""
    from spreadcon.config import TrainConfig

    resolved = TrainConfig.from_dict({k: v for k, v in overrides.items() if k != "seed"}).to_dict()
    defaults = TrainConfig().to_dict()
    return {k: v for k, v in resolved.items() if k not in UNHASHED and v != defaults[k]}


def train_spec(name: str, train: dict[str, Any], seed: int, labels: dict[str, Any], *,
               evals: Sequence[str] = (), extra: dict[str, Any] | None = None) -> RunSpec:
    """A RunSpec for one training run followed by evaluate_run and the evaluations in `evals`.
    `extra`: what else makes the run differ (e.g. a training callback), hashed into its key."""
    unknown = sorted(set(evals) - set(EVALS))
    if unknown:
        raise ValueError(f"unknown evaluation(s) {unknown}; choose from {list(EVALS)}")
    return RunSpec(name=name, params={"train": resolve_train(train), **(extra or {})}, seed=seed,
                   labels=labels, evals=tuple(evals))


def validate_train_spec(spec: RunSpec) -> None:
    """Dry-run check of a training run: known dataset, encoder and loss; a valid TrainConfig."""
    from spreadcon.config import TrainConfig

    config = TrainConfig.from_dict(spec.params["train"])
    check_names(datasets=[config.dataset], encoders=[config.encoder],
                losses=[] if config.protocol == "ce" else [config.loss])


def check_names(*, datasets: Iterable[str] = (), encoders: Iterable[str] = (), losses: Iterable[str] = ()) -> None:
    """ValueError naming what is unknown to the registries (data, models, losses)."""
    from spreadcon import data, losses as losses_mod, models

    for kind, names, known in (("dataset", datasets, data.DATASETS), ("encoder", encoders, models.ENCODERS),
                               ("loss", [n for n in losses if n != "ce"], losses_mod.LOSSES)):
        for n in names:
            if n not in known:
                raise ValueError(f"unknown {kind} {n!r} in an experiment config; known: {sorted(known)}")


def smoke_train(train: dict[str, Any]) -> dict[str, Any]:
    """Shrink a train config to seconds: 1 epoch, the encoder's test variant, a small subsample."""
    encoder = train.get("encoder", "cnn")
    return merge(train, {
        "epochs": 1, "encoder": encoder if encoder.endswith("-test") else f"{encoder.split('-')[0]}-test",
        "subsample_fraction": min(0.15, train.get("subsample_fraction", 1.0)), "batch_size": 64,
        "warmup_epochs": 0.0, "probe_epochs": 2, "keep_checkpoints": [],
    })


# --- evaluating ---------------------------------------------------------------------------------
def evaluate(run_dir: Path, spec: RunSpec, ctx: Context) -> dict[str, Any]:
    """evaluate_run on the test split plus the spec's `evals`, probes seeded by the spec's seed."""
    from spreadcon.evaluate.run import evaluate_run, strata_rows
    from spreadcon.runs import load_run

    probe = merge(PROBE, ctx.config.get("probe"))
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
    from spreadcon.evaluate.floors import FLOORS

    return [RunSpec(name=f"{name}/{floor}", params={"floor": floor, "train": resolve_train(train)}, seed=seed,
                    labels={**labels, "loss": floor}, evals=("transfer",)) for floor in FLOORS for seed in seeds]


def evaluate_floor(spec: RunSpec, ctx: Context) -> dict[str, Any]:
    """The floor's coarse_accuracy and fine_transfer_accuracy on the test split (the probe of PROBE)."""
    from spreadcon.config import TrainConfig
    from spreadcon.evaluate.floors import floors
    from spreadcon.runs import build_dataset

    config = TrainConfig.from_dict({**spec.params["train"], "seed": spec.seed, "data_root": ctx.data_root})
    probe = merge(PROBE, ctx.config.get("probe"))
    (row,) = floors(build_dataset(config), encoder=config.encoder, encoder_options=config.encoder_options,
                    seed=spec.seed, probe={"epochs": probe["epochs"], "lr": probe["lr"]}, names=(spec.params["floor"],))
    return {k: v for k, v in row.items() if k in ("coarse_accuracy", "fine_transfer_accuracy", "probed")
            and v is not None}


# --- pictures -------------------------------------------------------------------------------------
def tsne_pictures(rows: Sequence[dict[str, Any]], out: Path, *, max_points: int, by_size: bool = False,
                  names: dict[str, str] | None = None) -> list[Path]:
    """t-SNE of the seed-0 test embeddings of each row's run (`spreadcon.evaluate.plots`):
    tsne_<dataset>_<loss>.png by class and by stratum (Figure 2), and with by_size
    strata_size_<dataset>_<loss>.png coloured by stratum size (Figure 3)."""
    import torch

    from spreadcon.evaluate import plots
    from spreadcon.runs import load_run

    paths = []
    for row in rows:
        if row.get("seed") != 0 or "run_dir" not in row:
            continue
        run = load_run(row["run_dir"])
        test = {k: torch.from_numpy(v) for k, v in run.embeddings("test").items()}
        stem = f"{row['dataset']}_{row['loss']}"
        title = f"{row['dataset']}, {(names or {}).get(row['loss'], row['loss'])} (test split)"
        args = (test["embedding"], test["label"], test["stratum"])
        paths.append(plots.embedding_picture(*args, out / f"tsne_{stem}.png", max_points=max_points, title=title,
                                             class_names=run.dataset.class_names,
                                             stratum_names=run.dataset.stratum_names))
        if by_size:
            paths.append(plots.strata_size_scatter(*args, out / f"strata_size_{stem}.png", max_points=max_points,
                                                   title=title))
    return paths


# --- charts -------------------------------------------------------------------------------
def bar_chart(rows: Sequence[dict[str, Any]], *, group: str, hue: str, metric: str, path: Path,
              title: str = "", scale: float = 100.0) -> Path | None:
    """Grouped bars of mean ± std over seeds: one group per `group` value, one bar per `hue` value."""
    from spreadcon.experiments.table import summarise

    stats = summarise(rows, (group, hue), metric)
    if not stats:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    groups = list(dict.fromkeys(r[group] for r in rows if metric in r))
    hues = list(dict.fromkeys(r[hue] for r in rows if metric in r))
    width = 0.8 / max(1, len(hues))
    fig, ax = plt.subplots(figsize=(max(4, 1.6 * len(groups) + 1), 3.5))
    for j, h in enumerate(hues):
        means = [stats[(g, h)].mean * scale if (g, h) in stats else np.nan for g in groups]
        stds = [np.nan_to_num(stats[(g, h)].std) * scale if (g, h) in stats else 0 for g in groups]
        ax.bar(np.arange(len(groups)) + j * width, means, width, yerr=stds, capsize=3, label=str(h))
    ax.set_xticks(np.arange(len(groups)) + width * (len(hues) - 1) / 2, [str(g) for g in groups])
    ax.set(ylabel=metric + (" (%)" if scale == 100 else ""), title=title)
    lo = np.nanmin([s.mean * scale for s in stats.values()])
    ax.set_ylim(max(0.0, lo - 10 if scale == 100 else lo - 0.1), None)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def line_plot(rows: Sequence[dict[str, Any]], *, x: str, hue: str, metric: str, path: Path,
              title: str = "", scale: float = 100.0, logx: bool = False) -> Path | None:
    """Lines of mean ± std over seeds of `metric` against `x`, one per `hue` value."""
    from spreadcon.experiments.table import summarise

    stats = summarise(rows, (hue, x), metric)
    if not stats:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for h in dict.fromkeys(k[0] for k in stats):
        xs = sorted(k[1] for k in stats if k[0] == h)
        ax.errorbar(xs, [stats[(h, v)].mean * scale for v in xs],
                    yerr=[np.nan_to_num(stats[(h, v)].std) * scale for v in xs], marker="o", capsize=3, label=str(h))
    ax.set(xlabel=x, ylabel=metric + (" (%)" if scale == 100 else ""), title=title)
    if logx:
        ax.set_xscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --- the datasets x losses grid most figures use ------------------------------------------------
def grid_train(cfg: dict[str, Any], dataset: str, loss: str) -> dict[str, Any]:
    """Train overrides of one cell: cfg['train'] < the dataset's own keys < its 'spread' keys
    (L_spread's tau and alpha, applied to loss 'spread' only) < per-loss keys cfg['loss_train'][loss]."""
    opts = dict(cfg["datasets"][dataset])
    spread = opts.pop("spread", None)
    return merge(cfg.get("train"), {"dataset": dataset, "loss": loss}, opts,
                 spread if loss == "spread" else None, (cfg.get("loss_train") or {}).get(loss))


def grid_plan(cfg: dict[str, Any], seeds: Sequence[int], evals: Sequence[str]) -> list[RunSpec]:
    """One run per dataset x loss x seed of the config; with cfg["floors"], the floors of each
    dataset (on the data and encoder of its L_spread cell) as rows whose loss is the floor's name."""
    specs = [train_spec(f"{ds}/{loss}", grid_train(cfg, ds, loss), seed, {"dataset": ds, "loss": loss},
                        evals=evals)
             for ds in cfg["datasets"] for loss in cfg["losses"] for seed in seeds]
    if cfg.get("floors"):
        specs += [s for ds in cfg["datasets"]
                  for s in floor_specs(ds, grid_train(cfg, ds, "spread"), seeds, {"dataset": ds})]
    return specs


def smoke_grid(cfg: dict[str, Any], n_datasets: int = 1) -> dict[str, Any]:
    """The first `n_datasets` datasets, one seed, every train config shrunk (smoke_train)."""
    datasets = dict(list(cfg["datasets"].items())[:n_datasets])
    out = merge(cfg, {"seeds": 1, "probe": {"epochs": 2}})
    out["datasets"] = {ds: merge(opts, smoke_train(merge(cfg.get("train"), opts)))
                       for ds, opts in datasets.items()}
    return out


# --- checking the paper's claims on the rows ------------------------------------------------------
def winner_claims(rows: Sequence[dict[str, Any]], *, group: str, metric: str, winner: str,
                  against: Sequence[str], what: str, key: str = "loss", higher: bool = True,
                  scale: float = 100.0) -> list[tuple[str, str]]:
    """Per value of `group`: is `winner`'s mean `metric` the best (highest, or lowest with
    higher=False) among `winner` and `against`? The verdict names the numbers and whether the
    margin exceeds one seed std (else it is within noise)."""
    from spreadcon.experiments.paper import LOSS_NAMES
    from spreadcon.experiments.table import summarise

    out = []
    for g in dict.fromkeys(r.get(group) for r in rows):
        stats = summarise([r for r in rows if r.get(group) == g], (key,), metric)
        stats = {k[0]: v for k, v in stats.items()}
        others = [a for a in against if a in stats]
        if winner not in stats or not others:
            continue
        sign = 1 if higher else -1
        best = max(others, key=lambda a: sign * stats[a].mean)
        w, b = stats[winner], stats[best]
        margin = (w.mean - b.mean) * scale
        noise = max(0.0 if w.n < 2 else w.std, 0.0 if b.n < 2 else b.std) * scale
        verdict = "yes" if sign * margin > 0 else ("tie" if margin == 0 else "no")
        numbers = ", ".join(f"{LOSS_NAMES.get(l, l)} {stats[l].format(scale, 2 if scale == 1 else 1)}"
                            for l in [winner, *others])
        within = " (within one seed std)" if abs(margin) <= noise and noise > 0 else ""
        name = LOSS_NAMES.get(winner, winner)
        out.append((f"{g}: {name} {what}", f"{verdict}{within}; {numbers}"))
    return out
