"""What most experiments share: a training run as a RunSpec, its execution, its evaluation.

A training RunSpec holds `params = {"train": <TrainConfig differences from its defaults>, "probe": {...}}`:
the config is built and validated, and the fields whose values differ from TrainConfig's defaults
(minus where-and-how keys such as out_dir, device and data_root) key the run. Adding a trainer
option therefore leaves finished runs valid; after changing a trainer default, use a fresh --out
(each run folder's config.json holds its full resolved config).

Evaluation reads the run's cached embeddings of its best checkpoint (model selection on the
validation split, SPEC.md) and reports fractions in [0, 1]:
    accuracy            end model (CE head, or the probe of protocol contrastive_then_probe), test split
    auroc               binary tasks only (ISIC's metric)
    worst_group_accuracy  where the dataset defines groups
    transfer_accuracy   coarse-to-fine: linear probe on frozen train embeddings, fine (stratum)
                        labels, test split (SPEC.md: 100 epochs, AdamW lr 1e-3, eval mode)
    val_accuracy        the same on the validation split (the sweep's selection metric)
    intra_class_cosine, common_centre_cosine, rare_centre_cosine   geometry (Figure 2)
    strata              per-stratum geometry against stratum size (Figure 3)
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from spreadcon.experiments.runner import Context, RunSpec

# TrainConfig keys that say where or how a run is shown, not what it computes (not hashed).
UNHASHED = ("out_dir", "device", "progress", "tensorboard", "data_root", "seed")
EVALS = ("accuracy", "val_accuracy", "transfer", "geometry", "strata")
PROBE = {"epochs": 100, "lr": 1e-3}  # SPEC.md: coarse-to-fine probe of the authors' code

# Small scale (2 CPU cores): a narrow `cnn`, 8 epochs at lr 1e-3, the joint CE head (lr 3e-4,
# the paper's, barely moves this net in 8 epochs). The 8x8 digits sets are about 20x cheaper
# per epoch and get 30 epochs.
SMALL_TRAIN: dict[str, Any] = {"encoder": "cnn", "encoder_options": {"widths": [16, 32, 64], "out_dim": 64},
                               "epochs": 8, "lr": 1e-3}
DIGITS: dict[str, Any] = {"epochs": 30}
# Full scale: the authors' ViT recipe (SPEC.md; TrainConfig's defaults are its optimiser settings).
VIT: dict[str, Any] = {"encoder": "vit", "epochs": 600}
RESNET50: dict[str, Any] = {"encoder": "resnet50", "epochs": 200, "protocol": "contrastive_then_probe"}


# --- configs ------------------------------------------------------------------------------
def merge(*dicts: dict[str, Any] | None) -> dict[str, Any]:
    """Later dicts override earlier ones; nested dicts (dataset_options, ...) merge key by key."""
    out: dict[str, Any] = {}
    for d in dicts:
        for key, value in (d or {}).items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


def resolve_train(overrides: dict[str, Any]) -> dict[str, Any]:
    """The TrainConfig for these overrides, validated, as its differences from the defaults
    (values normalised by the config, e.g. ints as floats), minus the unhashed keys."""
    from spreadcon.config import TrainConfig

    resolved = TrainConfig.from_dict({k: v for k, v in overrides.items() if k != "seed"}).to_dict()
    defaults = TrainConfig().to_dict()
    return {k: v for k, v in resolved.items() if k not in UNHASHED and v != defaults[k]}


def train_spec(name: str, train: dict[str, Any], seed: int, labels: dict[str, Any], *,
               evals: Sequence[str] = ("accuracy",), probe: dict[str, Any] | None = None) -> RunSpec:
    """A RunSpec for one training run followed by the evaluations named in `evals`.

    The coarse-to-fine probe's settings are part of the run's parameters (default: SPEC.md's
    100 epochs, lr 1e-3) whether or not `transfer` is asked now, so experiments that evaluate
    the same training run differently share it.
    """
    unknown = sorted(set(evals) - set(EVALS))
    if unknown:
        raise ValueError(f"unknown evaluation(s) {unknown}; choose from {list(EVALS)}")
    params = {"train": resolve_train(train), "probe": merge(PROBE, probe)}
    return RunSpec(name=name, params=params, seed=seed, labels=labels, evals=tuple(evals))


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
        "epochs": 1, "encoder": encoder if encoder.endswith("-test") else f"{encoder}-test",
        "subsample_fraction": min(0.15, train.get("subsample_fraction", 1.0)), "batch_size": 64,
        "warmup_epochs": 0.0, "probe_epochs": 2, "keep_checkpoints": [],
    })


# --- running and evaluating ---------------------------------------------------------------
def train(spec: RunSpec, run_dir: Path, ctx: Context, callbacks: Sequence[Any] = ()):
    """Train (or resume) the spec's run in `run_dir`; returns the loaded Run (best checkpoint)."""
    import torch

    from spreadcon.config import TrainConfig
    from spreadcon.runs import load_run
    from spreadcon.train import train as train_fn

    if not torch.cuda.is_available():
        torch.set_num_threads(1)  # small scale shares a few CPU cores with other jobs
    config = TrainConfig.from_dict({**spec.params["train"], "seed": spec.seed, "out_dir": str(run_dir),
                                    "data_root": ctx.data_root, "device": ctx.device or "auto",
                                    "progress": False, "tensorboard": False})
    # The trainer writes the embeddings cache last (after the probe of contrastive_then_probe):
    # without it the run is unfinished, and resuming a run whose epochs are all done only finishes it.
    if not (run_dir / "embeddings" / "test.npz").exists():
        train_fn(config, callbacks=callbacks, resume=(run_dir / "checkpoint.pt").exists())
    return load_run(run_dir)


def evaluate(run: Any, spec: RunSpec) -> dict[str, Any]:
    """The metrics of the evaluations named in spec.evals for a loaded Run (fractions in [0, 1])."""
    import numpy as np

    probe = spec.params["probe"]
    test, out = run.embeddings("test"), {}
    if "accuracy" in spec.evals:
        pred = test["logits"].argmax(1)
        out["accuracy"] = float(np.mean(pred == test["label"]))
        if test["logits"].shape[1] == 2:
            from spreadcon.evaluate.metrics import auroc

            out["auroc"] = float(auroc(_softmax(test["logits"])[:, 1], test["label"]))
        if "group" in test:
            groups = np.unique(test["group"])
            out["worst_group_accuracy"] = float(min(np.mean(pred[test["group"] == g] == test["label"][test["group"] == g])
                                                    for g in groups))
    if "val_accuracy" in spec.evals:
        val = run.embeddings("val")
        out["val_accuracy"] = float(np.mean(val["logits"].argmax(1) == val["label"]))
    if "transfer" in spec.evals:
        from spreadcon.evaluate.probes import linear_probe

        tr = run.embeddings("train")
        res = linear_probe(_t(tr["embedding"]), _t(tr["stratum"]), _t(test["embedding"]), _t(test["stratum"]),
                           epochs=probe["epochs"], lr=probe["lr"], seed=spec.seed)
        out["transfer_accuracy"] = float(res["accuracy"])
    if "geometry" in spec.evals:
        out.update(geometry(test["embedding"], test["label"], test["stratum"], strata_sizes(run)))
    if "strata" in spec.evals:
        out["strata"] = strata_geometry(test["embedding"], test["label"], test["stratum"], strata_sizes(run))
    return out


def strata_sizes(run: Any) -> dict[int, int]:
    """{stratum: number of training points} of the run's dataset as trained."""
    import numpy as np

    ds = run.dataset.get_split("train")
    values, counts = np.unique(ds.stratum.numpy(), return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}


def _unit(emb: Any) -> Any:
    import numpy as np

    z = np.asarray(emb, dtype=np.float64)
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def _centre_cosine(z: Any, members: Any) -> Any:
    """Cosine of each row of z [n, d] (unit) with the mean of z[members]."""
    import numpy as np

    centre = z[members].mean(0)
    return z @ centre / max(np.linalg.norm(centre), 1e-12)


def intra_class_cosine(z: Any, label: Any) -> float:
    """Mean cosine similarity over pairs of distinct same-class points, averaged over classes."""
    import numpy as np

    z, label = _unit(z), np.asarray(label)
    values = []
    for c in np.unique(label):
        zc = z[label == c]
        n = len(zc)
        if n > 1:
            total = zc.sum(0)
            values.append((total @ total - n) / (n * (n - 1)))
    return float(np.mean(values))


def geometry(emb: Any, label: Any, stratum: Any, sizes: dict[int, int]) -> dict[str, float]:
    """Figure 2's numbers: mean intra-class cosine; cosine with the class centre, averaged over
    the points of each class's largest ("common") and smallest ("rare") training stratum."""
    import numpy as np

    z, y, s = _unit(emb), np.asarray(label), np.asarray(stratum)
    common, rare = [], []
    for c in np.unique(y):
        cos = _centre_cosine(z, y == c)
        strata = [int(v) for v in np.unique(s[y == c]) if int(v) in sizes]
        if len(strata) < 2 or len({sizes[v] for v in strata}) < 2:
            continue  # no common-vs-rare contrast inside this class
        big = max(strata, key=lambda v: sizes[v])
        small = min(strata, key=lambda v: sizes[v])
        common.append(cos[(s == big) & (y == c)].mean())
        rare.append(cos[(s == small) & (y == c)].mean())
    out = {"intra_class_cosine": intra_class_cosine(z, y)}
    if common:
        out["common_centre_cosine"] = float(np.mean(common))
        out["rare_centre_cosine"] = float(np.mean(rare))
    return out


def strata_geometry(emb: Any, label: Any, stratum: Any, sizes: dict[int, int]) -> list[dict[str, float]]:
    """Per stratum (Figure 3): its training size, its points' mean cosine with their class centre
    and with their own stratum centre (tightness), and its centre's distance to the class centre."""
    import numpy as np

    z, y, s = _unit(emb), np.asarray(label), np.asarray(stratum)
    rows = []
    for v in np.unique(s):
        members = s == v
        c = int(np.bincount(y[members]).argmax())
        class_centre, own_centre = z[y == c].mean(0), z[members].mean(0)
        rows.append({"stratum": int(v), "class": c, "train_size": sizes.get(int(v), 0),
                     "class_centre_cosine": float(_centre_cosine(z, y == c)[members].mean()),
                     "stratum_centre_cosine": float(_centre_cosine(z, members)[members].mean()),
                     "centre_distance": float(np.linalg.norm(own_centre - class_centre))})
    return rows


def _softmax(logits: Any) -> Any:
    import numpy as np

    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _t(a: Any):
    import torch

    return torch.as_tensor(a)


def train_and_evaluate(spec: RunSpec, run_dir: Path, ctx: Context) -> dict[str, Any]:
    """`Experiment.execute` for plain training runs."""
    run = train(spec, run_dir, ctx)
    return evaluate(run, spec)


# --- plotting -------------------------------------------------------------------------------
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
    """One run per dataset x loss x seed of the config."""
    return [train_spec(f"{ds}/{loss}", grid_train(cfg, ds, loss), seed, {"dataset": ds, "loss": loss},
                       evals=evals, probe=cfg.get("probe"))
            for ds in cfg["datasets"] for loss in cfg["losses"] for seed in seeds]


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
