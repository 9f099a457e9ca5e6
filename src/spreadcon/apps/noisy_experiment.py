"""Figure 5 (centre) / Figure 7 at small scale: training with noisy contrastive labels.

Symmetric noise on the contrastive head's labels (`TrainConfig.noise_rate`); the cross-entropy
head trains on a clean labelled fraction (20% in the paper). Methods:

    supcon       L_SC, no correction
    supcon+fix   L_SC + the geometric correction (`NoisyLabelCorrection`)
    spread+fix   L_spread + the geometric correction
    spread       L_spread, no correction (optional)
    debiased     the expectation-based debiased loss of Appendix F.3.1 (spreadcon.losses), when
                 the trainer passes it the noise rate; skipped with a note otherwise

End accuracy is the CE head's test accuracy (best validation epoch). "Recovered" is
(acc(method, r) - acc(supcon, r)) / (acc(supcon, 0) - acc(supcon, r)), on seed means: the share
of what noise cost L_SC that the method wins back (the paper: 75% for L_spread at 20% noise).
Detection precision/recall: the in-training callback's last epoch, and, side by side on the
final train embeddings of the uncorrected L_SC run, the offline heuristic and cleanlab's
confident learning on out-of-fold logistic-regression probabilities.

    results = run_experiment(NoiseExperiment(), out_dir)   # writes results.json, table.md, PNG
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from spreadcon.apps.noisy import NoisyLabelCorrection, NoisyLabelCorrector, cleanlab_detect, detection_quality

_log = partial(print, flush=True)  # progress lines appear at once in a redirected log

METHODS: dict[str, tuple[str, bool]] = {   # name -> (loss, geometric correction)
    "supcon": ("supcon", False),
    "supcon+fix": ("supcon", True),
    "spread+fix": ("spread", True),
    "spread": ("spread", False),
    "debiased": ("debiased", False),
}
LABELS = {"supcon": "L_SC, no correction", "supcon+fix": "L_SC + geometric correction",
          "spread+fix": "L_spread + geometric correction", "spread": "L_spread, no correction",
          "debiased": "expectation-based debiased loss"}


@dataclass
class NoiseExperiment:
    """Small-scale defaults: digits, a small CNN, about 20 minutes on one (shared) core."""

    dataset: str = "digits"
    encoder: str = "cnn"
    encoder_options: dict[str, Any] = field(default_factory=lambda: {"widths": [16, 32], "out_dim": 32})
    noise_rates: tuple[float, ...] = (0.0, 0.1, 0.2, 0.5)
    labelled_fractions: tuple[float, ...] = (0.2,)
    methods: tuple[str, ...] = ("supcon", "supcon+fix", "spread+fix", "spread", "debiased")
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 20
    batch_size: int = 128
    lr: float = 3e-3
    alpha: float = 0.5
    temperature: float = 0.5
    correction_warmup_epochs: float = 2.0   # no correction before the embedding means something
    subsample_fraction: float = 1.0
    device: str = "auto"

    def validate(self) -> None:
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown:
            raise ValueError(f"unknown noisy-label methods {unknown}; choose from {sorted(METHODS)}")
        for r in self.noise_rates:
            if not 0.0 <= r < 1.0:
                raise ValueError(f"noise rate must lie in [0, 1), got {r}")
        for f in self.labelled_fractions:
            if not 0.0 < f <= 1.0:
                raise ValueError(f"labelled fraction for the CE head must lie in (0, 1], got {f}; "
                                 "the CE head needs some clean labels")
        if not self.seeds:
            raise ValueError("give at least one seed")

    @classmethod
    def smoke(cls) -> "NoiseExperiment":
        """Seconds: tiny encoder, one epoch, a third of digits, two rates, one seed."""
        return cls(encoder="cnn-test", encoder_options={}, noise_rates=(0.0, 0.2), epochs=1,
                   methods=("supcon", "spread+fix"), seeds=(0,), subsample_fraction=0.3,
                   correction_warmup_epochs=0.0, batch_size=64, device="cpu")


def debiased_available(noise_rate: float = 0.2) -> bool:
    """Whether the trainer can build the debiased loss with the run's noise rate."""
    from spreadcon.config import TrainConfig
    from spreadcon.losses import LOSSES
    from spreadcon.train import build_loss

    if "debiased" not in LOSSES:
        return False
    try:
        loss = build_loss(TrainConfig(loss="debiased", noise_rate=noise_rate))
    except (TypeError, ValueError):
        return False
    return math.isclose(float(getattr(loss, "noise_rate", -1.0)), noise_rate)


def train_config(exp: NoiseExperiment, method: str, rate: float, fraction: float, seed: int, out_dir: Path):
    from spreadcon.config import TrainConfig

    loss, _ = METHODS[method]
    return TrainConfig(
        dataset=exp.dataset, encoder=exp.encoder, encoder_options=dict(exp.encoder_options),
        loss=loss, alpha=exp.alpha, temperature=exp.temperature, noise_rate=rate,
        labelled_fraction=fraction, ce_labels="clean", subsample_fraction=exp.subsample_fraction,
        epochs=exp.epochs, batch_size=exp.batch_size, lr=exp.lr, seed=seed, out_dir=str(out_dir),
        device=exp.device, progress=False, tensorboard=False,
    )


def run_one(exp: NoiseExperiment, method: str, rate: float, fraction: float, seed: int, root: Path) -> dict[str, Any]:
    """Train one run (or read its result.json when already finished); returns its row."""
    from spreadcon.config import RUNTIME_KEYS, TrainConfig, config_diff
    from spreadcon.runs import build_dataset
    from spreadcon.train import train

    loss, fix = METHODS[method]
    trained_as = method if fix and rate > 0 else loss  # at rate 0 the correction is a no-op: share the run
    run_dir = root / "runs" / f"{trained_as}_r{rate:g}_f{fraction:g}_s{seed}"
    done = run_dir / "result.json"
    config = train_config(exp, method, rate, fraction, seed, run_dir)
    if done.exists() and not config_diff(TrainConfig.from_json((run_dir / "config.json").read_text()),
                                         config, ignore=RUNTIME_KEYS):
        return {**json.loads(done.read_text()), "method": method}
    shutil.rmtree(run_dir, ignore_errors=True)  # unfinished, or another config: train afresh
    callbacks = []
    if fix and rate > 0:
        ds = build_dataset(config)
        train_split = ds.get_split("train")
        steps = math.ceil(len(train_split) / config.batch_size)
        callbacks.append(NoisyLabelCorrection(
            rate, warmup_steps=round(exp.correction_warmup_epochs * steps), num_classes=ds.num_classes,
            clean_labels=train_split.clean_label if train_split.clean_label is not None else train_split.label))
    t0 = time.perf_counter()
    train(config, callbacks)
    with np.load(run_dir / "embeddings" / "test.npz") as test:
        test_acc = float((test["logits"].argmax(1) == test["label"]).mean())
    row: dict[str, Any] = {"method": trained_as, "noise_rate": rate, "labelled_fraction": fraction,
                           "seed": seed, "test_acc": test_acc, "seconds": time.perf_counter() - t0}
    if callbacks and callbacks[0].history:
        last = callbacks[0].history[-1]
        row.update({k: last[k] for k in ("noise_precision", "noise_recall", "noise_fixed")})
    if trained_as == "supcon" and rate > 0:
        row.update(offline_detection(run_dir, rate, exp.batch_size, seed))
    done.write_text(json.dumps(row, indent=2) + "\n")
    return {**row, "method": method}


def offline_detection(run_dir: Path, rate: float, batch_size: int, seed: int) -> dict[str, float]:
    """Detection P/R on the run's final train embeddings: the heuristic vs cleanlab."""
    with np.load(run_dir / "embeddings" / "train.npz") as train_emb:
        x, y = train_emb["embedding"], train_emb["label"]
        clean = train_emb["clean_label"] if "clean_label" in train_emb else y
    noisy = y != clean
    ours = NoisyLabelCorrector(rate, batch_size=batch_size, random_state=seed).fit(x, y)
    out = {"offline_precision": detection_quality(ours.noisy_mask_, noisy)["precision"],
           "offline_recall": detection_quality(ours.noisy_mask_, noisy)["recall"]}
    try:
        cl = detection_quality(cleanlab_detect(x, y, seed=seed), noisy)
        out.update(cleanlab_precision=cl["precision"], cleanlab_recall=cl["recall"])
    except (ImportError, ValueError) as err:  # cleanlab absent, or a class too small for the folds
        out["cleanlab_error"] = str(err)
    return out


def run_experiment(exp: NoiseExperiment, out_dir: str | Path, *, log=_log) -> list[dict[str, Any]]:
    """Every (method, rate, fraction, seed) run; then results.json, table.md and the figure."""
    exp.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    methods = list(exp.methods)
    if "debiased" in methods and not debiased_available():
        log("note: the debiased loss is not available to the trainer (needs LOSSES['debiased'] "
            "built with the run's noise_rate); skipping it")
        methods.remove("debiased")
    rows = []
    for fraction in exp.labelled_fractions:
        for rate in exp.noise_rates:
            for method in methods:
                for seed in exp.seeds:
                    row = run_one(exp, method, rate, fraction, seed, out)
                    log(f"{method:>11} noise {rate:<4g} labelled {fraction:<4g} seed {seed}: "
                        f"test acc {row['test_acc']:.4f}")
                    rows.append(row)
    (out / "results.json").write_text(json.dumps({"config": asdict(replace(exp)), "rows": rows}, indent=2) + "\n")
    (out / "table.md").write_text(report(rows, exp))
    plot(rows, out / "fig5_noise.png")
    return rows


# --- tables and the figure -------------------------------------------------------------------
def _stats(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def summarise(rows: list[dict[str, Any]]) -> dict[tuple[str, float, float], tuple[float, float, int]]:
    """(method, rate, fraction) -> (mean test acc, std over seeds, number of seeds)."""
    groups: dict[tuple[str, float, float], list[float]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["noise_rate"], r["labelled_fraction"]), []).append(r["test_acc"])
    return {k: (*_stats(v), len(v)) for k, v in groups.items()}


def recovered(summary, method: str, rate: float, fraction: float) -> float | None:
    """(acc(method, r) - acc(supcon, r)) / (acc(supcon, 0) - acc(supcon, r)) on seed means.

    None when undefined: rate 0, a missing run, or noise that cost L_SC no more than the seed
    spread (the larger std of the clean and noisy L_SC runs), where the ratio is only noise.
    """
    try:
        clean, clean_std, _ = summary[("supcon", 0.0, fraction)]
        noisy, noisy_std, _ = summary[("supcon", rate, fraction)]
        acc = summary[(method, rate, fraction)][0]
    except KeyError:
        return None
    if rate == 0 or clean - noisy <= max(clean_std, noisy_std, 0.0):
        return None
    return (acc - noisy) / (clean - noisy)


def report(rows: list[dict[str, Any]], exp: NoiseExperiment) -> str:
    summary = summarise(rows)
    methods = [m for m in exp.methods if any(r["method"] == m for r in rows)]
    lines = [f"# Noisy contrastive labels ({exp.dataset}, encoder {exp.encoder}, {exp.epochs} epochs, "
             f"seeds {list(exp.seeds)})", "",
             "Test accuracy of the CE head, % (mean ± std over seeds). In brackets: recovered = share of "
             "the accuracy that noise cost L_SC which the method wins back, shown where that cost "
             "exceeds the seed spread.", ""]
    for fraction in exp.labelled_fractions:
        lines += [f"## CE head on {fraction:.0%} clean labels", "",
                  "| method | " + " | ".join(f"noise {r:g}" for r in exp.noise_rates) + " |",
                  "|---|" + "---|" * len(exp.noise_rates)]
        for m in methods:
            cells = []
            for r in exp.noise_rates:
                s = summary.get((m, r, fraction))
                if s is None:
                    cells.append("-")
                    continue
                rec = recovered(summary, m, r, fraction) if m != "supcon" else None
                cells.append(f"{100 * s[0]:.1f} ± {100 * s[1]:.1f}" + (f" ({rec:.0%})" if rec is not None else ""))
            lines.append(f"| {LABELS[m]} | " + " | ".join(cells) + " |")
        lines.append("")
    det = [r for r in rows if "noise_precision" in r or "offline_precision" in r]
    if det:
        lines += ["## Detection of the noisy labels (precision / recall, mean over seeds)", "",
                  "| detector | labelled | noise | precision | recall |", "|---|---|---|---|---|"]
        keys = [("noise", "in training, last epoch"), ("offline", "heuristic on final L_SC embeddings"),
                ("cleanlab", "cleanlab on final L_SC embeddings")]
        for fraction in exp.labelled_fractions:
            for r in exp.noise_rates:
                for m in methods:
                    sel = [x for x in det if x["method"] == m and x["noise_rate"] == r
                           and x["labelled_fraction"] == fraction]
                    for prefix, what in keys:
                        vals = [x for x in sel if f"{prefix}_precision" in x]
                        if vals:
                            p = np.mean([x[f"{prefix}_precision"] for x in vals])
                            rc = np.mean([x[f"{prefix}_recall"] for x in vals])
                            lines.append(f"| {m}: {what} | {fraction:g} | {r:g} | {p:.3f} | {rc:.3f} |")
        lines.append("")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarise(rows)
    fractions = sorted({r["labelled_fraction"] for r in rows})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig, axes = plt.subplots(1, len(fractions), figsize=(4.5 * len(fractions), 3.6), squeeze=False)
    for ax, fraction in zip(axes[0], fractions):
        for m in methods:
            pts = sorted((k[1], v) for k, v in summary.items() if k[0] == m and k[2] == fraction)
            if pts:
                rates = [100 * p[0] for p in pts]
                ax.errorbar(rates, [100 * p[1][0] for p in pts], yerr=[100 * p[1][1] for p in pts],
                            marker="o", capsize=3, label=LABELS[m])
        ax.set_xlabel("label noise on the contrastive head (%)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"CE head on {fraction:.0%} of labels")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
