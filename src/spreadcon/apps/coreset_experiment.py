"""Figure 5 (right) at small scale: coresets from strata difficulty against the baselines.

1. Difficulty (ours): L_spread runs on random subsamples (t in {10, 20, 50}%, 3 seeds each) with
   the CE head on 1% of the labels; each run's final model classifies every training point;
   counts = number of runs right per point -> `strata_coreset`.
   At CPU scale 1% of a small subsample leaves under 2 labels per class, so the labelled
   fraction of each run is raised to at least `min_labels_per_class` labels per class (the
   fraction used is recorded in the results).
2. Baselines from full-data cross-entropy runs (one per score seed, example correctness tracked
   every epoch, a checkpoint kept at `early_epoch`): forgetting counts over the whole history,
   EL2N and GraNd of the early checkpoint (eval mode, un-augmented inputs), averaged over seeds;
   random is class-balanced. The published baselines rank globally; the "-cb" variants keep the
   highest scores within class-proportional quotas (on small data a global ranking can drop
   almost a whole easy class).
3. Evaluation: a fresh model (same encoder + linear head, cross-entropy, augmented views) trained
   on each coreset for `eval_epochs` epochs; test accuracy of the final model; mean ± std over
   `eval_seeds` (the seed also drives the selection's random tie-breaking). A full-data row is
   the reference.

    rows = run_experiment(CoresetExperiment(), out_dir)  # scores/, indices/, results.json, table.md, PNG
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spreadcon.apps.coreset import (
    difficulty_counts, random_coreset, save_indices, strata_coreset, top_score_coreset,
)
from spreadcon.apps.coreset_scores import forgetting_counts, grand_scores, model_el2n

_log = partial(print, flush=True)  # progress lines appear at once in a redirected log

METHODS = ("strata", "random", "forgetting", "el2n", "grand", "forgetting-cb", "el2n-cb", "grand-cb")
LABELS = {"strata": "L_spread difficulty (ours)", "random": "random (class-balanced)",
          "forgetting": "forgetting (Toneva et al.)", "el2n": "EL2N (Paul et al.)",
          "grand": "GraNd (Paul et al.)", "forgetting-cb": "forgetting, class-balanced",
          "el2n-cb": "EL2N, class-balanced", "grand-cb": "GraNd, class-balanced",
          "full": "full training set"}


@dataclass
class CoresetExperiment:
    """Small-scale defaults: digits and a small CNN, about 15 minutes on one (shared) core."""

    dataset: str = "digits"
    encoder: str = "cnn"
    encoder_options: dict[str, Any] = field(default_factory=lambda: {"widths": [16, 32], "out_dim": 32})
    methods: tuple[str, ...] = METHODS
    sizes: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9)
    # difficulty runs (ours)
    subsample_fractions: tuple[float, ...] = (0.1, 0.2, 0.5)
    difficulty_seeds: tuple[int, ...] = (0, 1, 2)
    difficulty_epochs: int = 20
    labelled_fraction: float = 0.01
    min_labels_per_class: int = 2
    alpha: float = 0.5
    temperature: float = 0.5
    # baseline score runs
    score_seeds: tuple[int, ...] = (0, 1)
    score_epochs: int = 20
    early_epoch: int = 3
    # evaluation of the coresets
    eval_seeds: tuple[int, ...] = (0, 1, 2)
    eval_epochs: int = 20
    evaluate: bool = True
    batch_size: int = 128
    lr: float = 3e-3
    device: str = "auto"

    def validate(self) -> None:
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown:
            raise ValueError(f"unknown coreset methods {unknown}; choose from {list(METHODS)}")
        for s in self.sizes:
            if not 0.0 < s <= 1.0:
                raise ValueError(f"coreset size must be a fraction in (0, 1], got {s}")
        for t in self.subsample_fractions:
            if not 0.0 < t <= 1.0:
                raise ValueError(f"subsample fraction must lie in (0, 1], got {t}")
        if not 1 <= self.early_epoch <= self.score_epochs:
            raise ValueError(f"early_epoch must lie in 1..score_epochs={self.score_epochs}, got {self.early_epoch}")
        if not (self.difficulty_seeds and self.score_seeds and self.eval_seeds):
            raise ValueError("give at least one seed for the difficulty, score and evaluation runs")

    @classmethod
    def smoke(cls) -> "CoresetExperiment":
        return cls(encoder="cnn-test", encoder_options={}, sizes=(0.5,), subsample_fractions=(0.5,),
                   difficulty_seeds=(0,), difficulty_epochs=1, score_seeds=(0,), score_epochs=1,
                   early_epoch=1, eval_seeds=(0,), eval_epochs=1, batch_size=64, device="cpu")


class _Logits(nn.Module):
    """Classifier (embedding, logits) -> logits, for the score functions."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)[1]


def _config(exp: CoresetExperiment, run_dir: Path, **changes: Any):
    from spreadcon.config import TrainConfig

    base = dict(dataset=exp.dataset, encoder=exp.encoder, encoder_options=dict(exp.encoder_options),
                batch_size=exp.batch_size, lr=exp.lr, out_dir=str(run_dir), device=exp.device,
                progress=False, tensorboard=False)
    return TrainConfig(**{**base, **changes})


def _train_once(config, run_dir: Path) -> None:
    """Train unless run_dir holds a finished run of the same config (runtime keys aside)."""
    from spreadcon.config import RUNTIME_KEYS, TrainConfig, config_diff
    from spreadcon.train import train

    if (run_dir / "done").exists():
        saved = TrainConfig.from_json((run_dir / "config.json").read_text())
        if not config_diff(saved, config, ignore=RUNTIME_KEYS):
            return
    shutil.rmtree(run_dir, ignore_errors=True)
    train(config)
    (run_dir / "done").write_text("ok\n")


@lru_cache(maxsize=2)
def _load(name: str):
    from spreadcon.data import default_views, load

    ds = load(name)
    return ds, ds.get_split("train"), default_views(ds)


def _full_train(exp: CoresetExperiment):
    """The dataset as loaded (no transforms), its train split and its views."""
    return _load(exp.dataset)


@torch.no_grad()
def _logits(model: nn.Module, x: Tensor) -> Tensor:
    from spreadcon.apps.coreset_scores import model_logits

    return model_logits(_Logits(model), x)


def difficulty_scores(exp: CoresetExperiment, root: Path, log=print) -> tuple[np.ndarray, dict[str, Any]]:
    """counts [N_train] (runs whose final model is right) and what was used."""
    from spreadcon.runs import load_run

    ds, train, views = _full_train(exp)
    x, y = views.prepare(train.x), train.label
    correct, used = [], {}
    for t in exp.subsample_fractions:
        n_sub = max(1, round(t * len(train)))
        fraction = min(1.0, max(exp.labelled_fraction, exp.min_labels_per_class * ds.num_classes / n_sub))
        used[f"{t:g}"] = fraction
        for seed in exp.difficulty_seeds:
            run_dir = root / "runs" / f"difficulty_t{t:g}_s{seed}"
            config = _config(exp, run_dir, loss="spread", alpha=exp.alpha, temperature=exp.temperature,
                             subsample_fraction=t, labelled_fraction=fraction,
                             epochs=exp.difficulty_epochs, seed=seed)
            _train_once(config, run_dir)
            model = load_run(run_dir, checkpoint="last").model
            right = (_logits(model, x).argmax(1) == y).numpy()
            log(f"difficulty run t={t:g} seed {seed} (CE head on {fraction:.1%} of labels): "
                f"{right.mean():.3f} of the training set right")
            correct.append(right)
    return difficulty_counts(np.stack(correct)), {"labelled_fraction_used": used}


def baseline_scores(exp: CoresetExperiment, root: Path, log=print) -> dict[str, np.ndarray]:
    """forgetting, el2n, grand [N_train] from full-data cross-entropy runs."""
    from spreadcon.runs import load_run

    _, train, views = _full_train(exp)
    x, y = views.prepare(train.x), train.label
    histories, early = [], []
    for seed in exp.score_seeds:
        run_dir = root / "runs" / f"scores_ce_s{seed}"
        config = _config(exp, run_dir, protocol="ce", epochs=exp.score_epochs, seed=seed,
                         track_examples=True, keep_checkpoints=[exp.early_epoch])
        _train_once(config, run_dir)
        histories.append(np.load(run_dir / "example_correct.npy"))
        early.append(_Logits(load_run(run_dir, checkpoint=exp.early_epoch).model))
        log(f"score run seed {seed}: {histories[-1].shape[0]} epochs tracked")
    wanted = {m.removesuffix("-cb") for m in exp.methods}
    scores = {"forgetting": forgetting_counts(np.stack(histories)).astype(np.float64)}
    if "el2n" in wanted:
        scores["el2n"] = model_el2n(early, x, y)
    if "grand" in wanted:
        scores["grand"] = grand_scores(early, x, y)
    return scores


def select(method: str, size: float, labels: np.ndarray, scores: dict[str, np.ndarray], seed: int) -> np.ndarray:
    """Indices (rows of the train split) of one coreset."""
    if method == "strata":
        return strata_coreset(scores["strata"], labels, size, seed=seed)
    if method == "random":
        return random_coreset(labels, size, seed=seed)
    if method.endswith("-cb"):
        return top_score_coreset(scores[method.removesuffix("-cb")], size, labels=labels, seed=seed)
    return top_score_coreset(scores[method], size, seed=seed)


def train_on_indices(exp: CoresetExperiment, index: np.ndarray, seed: int) -> float:
    """A fresh encoder + linear head trained with cross-entropy on train rows `index`; returns
    the final model's test accuracy."""
    from spreadcon.runs import build_model, predict, resolve_device

    ds, train, views = _full_train(exp)
    test = ds.get_split("test")
    device = resolve_device(exp.device)
    config = _config(exp, Path("unused"), protocol="ce", seed=seed)
    model = build_model(config, ds.input_shape, ds.num_classes).to(device)
    idx = torch.as_tensor(index, dtype=torch.int64)
    x, y = train.x[idx].to(device), train.label[idx].to(device)
    steps_per_epoch = max(1, len(idx) // exp.batch_size)  # drop a ragged last batch (BatchNorm)
    total = steps_per_epoch * exp.eval_epochs
    opt = torch.optim.AdamW(model.parameters(), lr=exp.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
    order = torch.Generator().manual_seed(seed)
    aug = torch.Generator(device=device).manual_seed(seed + 1)
    model.train()
    for _ in range(exp.eval_epochs):
        perm = torch.randperm(len(idx), generator=order).to(device)
        for b in range(steps_per_epoch):
            rows = perm[b * exp.batch_size:(b + 1) * exp.batch_size] if len(idx) > exp.batch_size else perm
            xb = views(x[rows], 1, aug)[:, 0]
            loss = F.cross_entropy(model(xb)[1], y[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    _, logits = predict(model, views.prepare, test.x, 512, device)
    return float((logits.argmax(1) == test.label).float().mean())


def evaluate_cached(exp: CoresetExperiment, index: np.ndarray, seed: int, out: Path) -> float:
    """`train_on_indices`, remembered in OUT/evals under a hash of the indices, the seed and
    every setting the fresh training depends on."""
    keys = ("dataset", "encoder", "encoder_options", "eval_epochs", "batch_size", "lr", "device")
    setting = json.dumps({k: getattr(exp, k) for k in keys}, sort_keys=True)
    digest = hashlib.sha1(setting.encode() + np.asarray(index, np.int64).tobytes() + str(seed).encode())
    path = out / "evals" / f"{digest.hexdigest()[:16]}.json"
    if path.exists():
        return float(json.loads(path.read_text())["test_acc"])
    acc = train_on_indices(exp, index, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"test_acc": acc, "n": int(len(index)), "seed": seed}) + "\n")
    return acc


def run_experiment(exp: CoresetExperiment, out_dir: str | Path, *, log=_log) -> list[dict[str, Any]]:
    exp.validate()
    out = Path(out_dir)
    (out / "scores").mkdir(parents=True, exist_ok=True)
    _, train, _ = _full_train(exp)
    labels = train.label.numpy()
    t0 = time.perf_counter()
    scores: dict[str, np.ndarray] = {}
    info: dict[str, Any] = {}
    if "strata" in exp.methods:
        scores["strata"], info = difficulty_scores(exp, out, log)
    if any(m not in ("strata", "random") for m in exp.methods):
        scores.update(baseline_scores(exp, out, log))
    for name, values in scores.items():
        np.save(out / "scores" / f"{name}.npy", values)
    info["score_seconds"] = time.perf_counter() - t0
    if "strata" in scores:
        info["bucket_sizes"] = np.bincount(scores["strata"].astype(int)).tolist()

    rows = []
    for method in exp.methods:
        for size in exp.sizes:
            for seed in exp.eval_seeds:
                index = select(method, size, labels, scores, seed)
                save_indices(index, out / "indices" / f"{method}_{size:g}_s{seed}")
                row = {"method": method, "size": size, "seed": seed, "n": int(len(index))}
                if exp.evaluate:
                    row["test_acc"] = evaluate_cached(exp, index, seed, out)
                    log(f"{method:>10} size {size:<4g} seed {seed}: test acc {row['test_acc']:.4f}")
                rows.append(row)
    if exp.evaluate:
        for seed in exp.eval_seeds:
            acc = evaluate_cached(exp, np.arange(len(labels)), seed, out)
            rows.append({"method": "full", "size": 1.0, "seed": seed, "n": len(labels), "test_acc": acc})
    (out / "results.json").write_text(json.dumps({"config": asdict(exp), "info": info, "rows": rows}, indent=2) + "\n")
    if exp.evaluate:
        (out / "table.md").write_text(report(rows, exp, info))
        plot(rows, out / "fig5_coreset.png")
    return rows


def _stats(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), (float(arr.std(ddof=1)) if len(arr) > 1 else 0.0)


def report(rows: list[dict[str, Any]], exp: CoresetExperiment, info: dict[str, Any]) -> str:
    lines = [f"# Coresets ({exp.dataset}, encoder {exp.encoder}, {exp.eval_epochs} epochs per fresh model, "
             f"seeds {list(exp.eval_seeds)})", "",
             "Test accuracy, % (mean ± std over seeds), of a fresh model trained on each coreset.", "",
             "| method | " + " | ".join(f"{s:.0%}" for s in exp.sizes) + " |",
             "|---|" + "---|" * len(exp.sizes)]
    for method in [*exp.methods]:
        cells = []
        for size in exp.sizes:
            accs = [r["test_acc"] for r in rows if r["method"] == method and r["size"] == size]
            m, s = _stats(accs)
            cells.append(f"{100 * m:.1f} ± {100 * s:.1f}")
        lines.append(f"| {LABELS[method]} | " + " | ".join(cells) + " |")
    full = [r["test_acc"] for r in rows if r["method"] == "full"]
    if full:
        m, s = _stats(full)
        lines += ["", f"Full training set: {100 * m:.1f} ± {100 * s:.1f}."]
    if "labelled_fraction_used" in info:
        used = ", ".join(f"t={t}: {f:.1%}" for t, f in info["labelled_fraction_used"].items())
        lines += ["", f"Difficulty runs: L_spread on subsamples, CE head on ({used}) of each subsample's "
                  f"labels (>= {exp.min_labels_per_class} per class); bucket sizes by count: "
                  f"{info.get('bucket_sizes')}."]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for method in dict.fromkeys(r["method"] for r in rows if r["method"] != "full"):
        sizes = sorted({r["size"] for r in rows if r["method"] == method})
        stats = [_stats([r["test_acc"] for r in rows if r["method"] == method and r["size"] == s]) for s in sizes]
        ax.errorbar([100 * s for s in sizes], [100 * m for m, _ in stats], yerr=[100 * s for _, s in stats],
                    marker="o", capsize=3, label=LABELS[method])
    full = [r["test_acc"] for r in rows if r["method"] == "full"]
    if full:
        ax.axhline(100 * np.mean(full), color="gray", ls="--", lw=1, label=LABELS["full"])
    ax.set_xlabel("coreset size (% of the training set)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
