"""Worst-group robustness from recovered strata: the paper's Section 5.2 and Figure 5 (left).

GEORGE's pipeline (Sohoni et al. 2020) on the embeddings of a model trained on class labels:

    1. recover pseudo-strata per class on the train split (`StrataRecovery`: UMAP + clustering)
    2. assign val points to pseudo-groups with the same per-class models
    3. train linear end models on the frozen embeddings and report test metrics on TRUE groups:
         erm           ERM, selected by validation accuracy
         gdro_pseudo   Group DRO on the recovered groups, selected by worst val pseudo-group acc
         gdro_true     Group DRO on the true groups, selected by worst val true-group acc (upper bound)
         run_head      the trained run's own classifier head, for reference

    result = robustness(splits)                           # splits from embeddings, see below
    result = apply_to_run("runs/spread", out_dir=...)     # `spreadcon apply robustness RUN_DIR`
    run_experiment(RobustnessExperiment(), "results/fig5-robustness")   # trains L_CE, L_SC, L_spread

The true groups are the dataset's `group` when it has one (Waterbirds, spurious-mnist), else its
`stratum`. Recovery quality is scored against them on the train split (best-match F1, ARI, AMI).
Embeddings are L2-normalised first by default (`normalize`): the contrastive losses compare
directions, and one geometry for every loss keeps the comparison fair.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from spreadcon.apps.gdro import GroupDRO, evaluate
from spreadcon.apps.strata import StrataRecovery, recovery_scores

METHODS = ("erm", "gdro_pseudo", "gdro_true", "run_head")


@dataclass
class RobustnessConfig:
    """Settings of one recovery + Group DRO pass (defaults: GEORGE's and Sagawa et al.'s)."""

    reducer: str | None = "umap"
    clusterer: str = "gmm"
    k_range: tuple[int, int] = (2, 10)
    n_neighbors: int = 10
    normalize: bool = True
    eta: float = 0.01
    adjustment: float = 0.0
    epochs: int = 50
    batch_size: int = 256
    lr: float = 1e-2
    weight_decay: float = 1e-3
    seed: int = 0

    def recovery(self) -> StrataRecovery:
        return StrataRecovery(reducer=self.reducer, clusterer=self.clusterer, k_range=tuple(self.k_range),
                              n_neighbors=self.n_neighbors, random_state=self.seed)

    def end_model(self, robust: bool, select_by: str) -> GroupDRO:
        return GroupDRO(robust=robust, eta=self.eta, adjustment=self.adjustment, epochs=self.epochs,
                        batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
                        select_by=select_by, random_state=self.seed)


def true_groups(split: dict[str, np.ndarray]) -> np.ndarray:
    return split["group"] if "group" in split else split["stratum"]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def robustness(splits: dict[str, dict[str, np.ndarray]], config: RobustnessConfig | None = None
               ) -> tuple[dict[str, Any], StrataRecovery]:
    """Recovery + end models on embedded splits.

    splits: {"train", "val", "test"} -> {"embedding" [N, D], "label" [N], "group" or "stratum" [N],
    optionally "logits" [N, K] (the run's own head)}. Returns (results, the fitted recovery).
    """
    config = config or RobustnessConfig()
    missing = [s for s in ("train", "val", "test") if s not in splits or len(splits[s]["label"]) == 0]
    if missing:
        raise ValueError(f"robustness needs non-empty train, val and test splits; missing or empty: {missing}")
    X = {s: np.asarray(d["embedding"], dtype=np.float64) for s, d in splits.items()}
    if config.normalize:
        X = {s: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12) for s, x in X.items()}
    y = {s: np.asarray(d["label"]) for s, d in splits.items()}
    g = {s: true_groups(d) for s, d in splits.items()}
    if len(np.unique(y["train"])) < 2:
        raise ValueError("the train split holds a single class; worst-group robustness needs two or more")

    rec = config.recovery().fit(X["train"], y["train"])
    pseudo_val = rec.predict(X["val"], y["val"])
    result: dict[str, Any] = {
        "config": asdict(config),
        "n_clusters": rec.n_clusters_.tolist(),
        "silhouettes": [{int(k): v for k, v in s.items()} for s in rec.silhouettes_],
        "recovery_train": recovery_scores(g["train"], rec.pseudo_groups_),
        "recovery_val": recovery_scores(g["val"], pseudo_val),
        "methods": {},
    }
    fits = {
        "erm": (config.end_model(False, "average"), None, None),
        "gdro_pseudo": (config.end_model(True, "worst_group"), rec.pseudo_groups_, pseudo_val),
        "gdro_true": (config.end_model(True, "worst_group"), g["train"], g["val"]),
    }
    for name, (model, groups, groups_val) in fits.items():
        model.fit(X["train"], y["train"], groups, X_val=X["val"], y_val=y["val"], groups_val=groups_val)
        out = evaluate(y["test"], model.predict_proba(X["test"]), g["test"], train_groups=g["train"])
        out["best_epoch"] = model.best_epoch_
        result["methods"][name] = out
    if "logits" in splits["test"]:
        result["methods"]["run_head"] = evaluate(y["test"], softmax(np.asarray(splits["test"]["logits"])),
                                                 g["test"], train_groups=g["train"])
    return result, rec


# --- pictures ----------------------------------------------------------------------------
def class_pictures(rec: StrataRecovery, y: np.ndarray, groups: np.ndarray, out_dir: Path,
                   class_names: list[str] | None = None, prefix: str = "") -> list[Path]:
    """One PNG per class: its reduced training embedding coloured by true group and by cluster.

    The coordinates are the recovery's UMAP (PCA of the class when it ran without a reducer)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, c in enumerate(rec.classes_):
        rows = y == c
        Z = rec.embedding_[rows]
        if Z.shape[1] != 2:
            Zc = Z - Z.mean(axis=0)
            Z = Zc @ np.linalg.svd(Zc, full_matrices=False)[2][:2].T
        fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
        for ax, colour, title in ((axes[0], groups[rows], "true group"),
                                  (axes[1], rec.pseudo_groups_[rows], "recovered cluster")):
            for j, value in enumerate(np.unique(colour)):
                sel = colour == value
                ax.scatter(Z[sel, 0], Z[sel, 1], s=4, alpha=0.6, color=plt.cm.tab10(j % 10),
                           label=f"{value} (n={sel.sum()})")
            ax.set_title(title)
            ax.set_xticks([]), ax.set_yticks([])
            ax.legend(markerscale=3, fontsize=7, loc="best")
        name = class_names[int(c)] if class_names and int(c) < len(class_names) else f"class {c}"
        fig.suptitle(f"{prefix}{name}: {'UMAP' if rec.reducer == 'umap' else 'PCA'} of the train embeddings")
        fig.tight_layout()
        path = out_dir / f"{prefix.strip(' :').replace(' ', '_') or 'run'}_class{int(c)}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


# --- on a trained run --------------------------------------------------------------------
def embed_splits(run, checkpoint: str = "best") -> dict[str, dict[str, np.ndarray]]:
    """The train/val/test embeddings of a loaded run: the run's cache for the best checkpoint,
    computed afresh (eval mode, not cached) for any other."""
    if checkpoint == "best":
        return {s: run.embeddings(s) for s in ("train", "val", "test")}
    from spreadcon.data import SPLITS
    from spreadcon.runs import predict

    ds, device = run.dataset, next(run.model.parameters()).device
    splits = {}
    for split in ("train", "val", "test"):
        rows = (ds.split == SPLITS[split]).nonzero().squeeze(1)
        emb, logits = predict(run.model, run.views().prepare, ds.x[rows], run.config.eval_batch_size, device)
        splits[split] = {"embedding": emb.numpy(), "logits": logits.numpy(), "label": ds.label[rows].numpy(),
                         "stratum": ds.stratum[rows].numpy(), "index": rows.numpy()}
        if ds.group is not None:
            splits[split]["group"] = ds.group[rows].numpy()
    return splits


def apply_to_run(run_dir: str | Path, config: RobustnessConfig | None = None, out_dir: str | Path | None = None,
                 pictures: bool = True, pictures_dir: str | Path | None = None,
                 picture_prefix: str = "", checkpoint: str = "best") -> dict[str, Any]:
    """Recovery + Group DRO on a run's embeddings; writes OUT/robustness.json and, with
    `pictures`, one PNG per class in `pictures_dir` (default OUT). OUT defaults to RUN_DIR/robustness.
    checkpoint: "best" (the run's model selection), "last", or an epoch kept by the run."""
    from spreadcon.runs import load_run

    run = load_run(run_dir, checkpoint=checkpoint)
    splits = embed_splits(run, checkpoint)
    result, rec = robustness(splits, config)
    result["run_dir"] = str(run_dir)
    loss = "ce" if run.config.protocol == "ce" else run.config.loss
    result["run"] = {"dataset": run.config.dataset, "loss": loss, "protocol": run.config.protocol,
                     "seed": run.config.seed, "checkpoint": checkpoint}
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "robustness"
    out.mkdir(parents=True, exist_ok=True)
    if pictures:
        paths = class_pictures(rec, splits["train"]["label"], true_groups(splits["train"]),
                               Path(pictures_dir) if pictures_dir is not None else out,
                               run.dataset.class_names, prefix=picture_prefix)
        result["pictures"] = [str(p) for p in paths]
    (out / "robustness.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


# --- the Figure 5 (left) experiment --------------------------------------------------------
LOSS_LABELS = {"ce": "L_CE", "supcon": "L_SC", "spread": "L_spread", "simclr": "L_SS"}
DATASET_PRESETS: dict[str, dict[str, Any]] = {
    # CPU scale: a small CNN trained jointly with the CE head (the paper's MNIST protocol)
    "spurious-mnist": {"encoder": "cnn", "encoder_options": {"widths": [16, 32, 64], "out_dim": 64},
                       "protocol": "joint", "epochs": 6, "batch_size": 128, "lr": 1e-3},
    # the paper's protocol for the real datasets: ResNet50, contrastive loss alone, then a probe
    "waterbirds": {"encoder": "resnet50", "encoder_options": {}, "protocol": "contrastive_then_probe",
                   "epochs": 200, "batch_size": 128, "lr": 3e-4},
    "isic": {"encoder": "resnet50", "encoder_options": {}, "protocol": "contrastive_then_probe",
             "epochs": 200, "batch_size": 128, "lr": 3e-4},
}


@dataclass
class RobustnessExperiment:
    """Train each loss on `dataset` for each seed, then run `robustness` on each run.

    Training settings come from DATASET_PRESETS[dataset]; fields set here override them. tau 0.5
    and alpha 0.5 are the paper's final values for MNIST, Waterbirds and ISIC."""

    dataset: str = "spurious-mnist"
    root: str | None = None
    losses: tuple[str, ...] = ("ce", "supcon", "spread")
    seeds: tuple[int, ...] = (0, 1, 2)
    alpha: float = 0.5
    temperature: float = 0.5
    encoder: str | None = None
    encoder_options: dict[str, Any] | None = None
    epochs: int | None = None
    subsample_fraction: float = 1.0
    device: str = "cpu"
    robustness: RobustnessConfig = field(default_factory=RobustnessConfig)
    pictures_seed: int | None = 0          # draw the class pictures of the runs of this seed
    # The embeddings of the last epoch, not of the best validation accuracy: spurious-mnist's val
    # split is group-balanced, so any background-only model scores exactly 50% there and "best"
    # would keep whichever epoch first reached it (often the first).
    checkpoint: str = "last"

    @classmethod
    def smoke(cls) -> "RobustnessExperiment":
        """Seconds: one seed, a test-size encoder, one epoch on 20% of the data, no UMAP."""
        return cls(seeds=(0,), encoder="cnn-test", encoder_options={}, epochs=1, subsample_fraction=0.2,
                   robustness=RobustnessConfig(reducer=None, clusterer="kmeans", k_range=(2, 3), epochs=2))

    def train_config(self, loss: str, seed: int, out_dir: Path):
        from spreadcon.config import TrainConfig

        if self.dataset not in DATASET_PRESETS and self.encoder is None:
            raise ValueError(f"no training preset for dataset {self.dataset!r} (presets: {sorted(DATASET_PRESETS)}); "
                             f"name an encoder (--encoder) to train it with the spurious-mnist settings")
        preset = dict(DATASET_PRESETS.get(self.dataset, DATASET_PRESETS["spurious-mnist"]))
        for key in ("encoder", "encoder_options", "epochs"):
            if getattr(self, key) is not None:
                preset[key] = getattr(self, key)
        protocol = "ce" if loss == "ce" else preset.pop("protocol")
        preset.pop("protocol", None)
        return TrainConfig(dataset=self.dataset, data_root=self.root, loss="spread" if loss == "ce" else loss,
                           protocol=protocol, alpha=self.alpha, temperature=self.temperature, seed=seed,
                           subsample_fraction=self.subsample_fraction, out_dir=str(out_dir),
                           device=self.device, progress=False, tensorboard=False, **preset)


def train_or_reuse(config) -> Path:
    """Train a run, or reuse a finished one with the same config in config.out_dir."""
    from spreadcon.config import RUNTIME_KEYS, TrainConfig, config_diff
    from spreadcon.train import train

    run_dir = Path(config.out_dir)
    if (run_dir / "embeddings" / "test.npz").exists():
        saved = TrainConfig.from_json((run_dir / "config.json").read_text())
        if not config_diff(saved, config, ignore=RUNTIME_KEYS):
            return run_dir
    if run_dir.exists():
        shutil.rmtree(run_dir)  # an unfinished or different run of ours: start again
    return train(config)


def summarise(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "n": len(a)}


def run_experiment(exp: RobustnessExperiment, out_dir: str | Path) -> dict[str, Any]:
    """Train, recover, fit; write OUT/results.json, OUT/table.md and OUT/pictures/*.png."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metric = "worst_group_auroc" if exp.dataset == "isic" else "worst_group_accuracy"
    runs: list[dict[str, Any]] = []
    for seed in exp.seeds:  # seed-major, so a partial run already compares every loss
        for loss in exp.losses:
            t0 = time.perf_counter()
            run_dir = train_or_reuse(exp.train_config(loss, seed, out / "runs" / f"{loss}-seed{seed}"))
            t1 = time.perf_counter()
            config = replace(exp.robustness, seed=seed)
            result = apply_to_run(run_dir, config, out_dir=run_dir / "robustness",
                                  pictures=exp.pictures_seed == seed, pictures_dir=out / "pictures",
                                  picture_prefix=f"{loss} seed {seed}: ", checkpoint=exp.checkpoint)
            result.update(loss=loss, seed=seed, train_seconds=round(t1 - t0, 1),
                          robustness_seconds=round(time.perf_counter() - t1, 1))
            runs.append(result)
            print(f"{loss} seed {seed}: recovery F1 {result['recovery_train']['f1']:.3f}, "
                  f"{metric} GDRO(recovered) {result['methods']['gdro_pseudo'][metric]:.3f}", flush=True)

    summary: dict[str, Any] = {}
    for loss in exp.losses:
        mine = [r for r in runs if r["loss"] == loss]
        summary[loss] = {
            "recovery_f1": summarise([r["recovery_train"]["f1"] for r in mine]),
            "recovery_ari": summarise([r["recovery_train"]["ari"] for r in mine]),
            **{f"{m}_{metric}": summarise([r["methods"][m][metric] for r in mine])
               for m in METHODS if all(m in r["methods"] for r in mine)},
            **{f"{m}_average_accuracy": summarise([r["methods"][m]["average_accuracy"] for r in mine])
               for m in METHODS if all(m in r["methods"] for r in mine)},
        }
    results = {"experiment": asdict(exp), "metric": metric, "summary": summary, "runs": runs}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "table.md").write_text(table(results))
    return results


def table(results: dict[str, Any]) -> str:
    """The Figure 5 (left) table in Markdown: mean ± std over seeds, in percent."""
    metric = results["metric"]
    exp = results["experiment"]
    pm = lambda s: f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}"  # noqa: E731
    name = metric.replace("_", "-")
    lines = [
        f"Dataset `{exp['dataset']}`, seeds {list(exp['seeds'])}; mean ± std over seeds, percent. "
        f"{name} on the test split's true groups.",
        "",
        f"| Loss | Recovery F1 | Recovery ARI | {name}: ERM | Group DRO, recovered groups | "
        f"Group DRO, true groups | run's own head | avg acc, Group DRO recovered |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for loss, s in results["summary"].items():
        head = pm(s[f"run_head_{metric}"]) if f"run_head_{metric}" in s else "-"
        lines.append(f"| {LOSS_LABELS.get(loss, loss)} | {pm(s['recovery_f1'])} | {pm(s['recovery_ari'])} | "
                     f"{pm(s[f'erm_{metric}'])} | {pm(s[f'gdro_pseudo_{metric}'])} | "
                     f"{pm(s[f'gdro_true_{metric}'])} | {head} | {pm(s['gdro_pseudo_average_accuracy'])} |")
    return "\n".join(lines) + "\n"
