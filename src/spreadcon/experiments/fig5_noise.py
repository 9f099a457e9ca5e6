"""Figure 5 (centre): noisy contrastive labels, with and without the geometric correction.

    spreadcon reproduce fig5-noise [--scale small|full] [--seeds 3]

Wires `spreadcon.apps.noisy_experiment` (the NOISE helper's experiment: symmetric noise on the
contrastive head's labels, the CE head on 20% clean labels; methods L_SC uncorrected, L_SC +
correction, L_spread + correction, L_spread uncorrected, the debiased loss) into the runner: one
run per (method, noise rate, labelled fraction, seed), skipped when finished.
The paper (CIFAR10): uncorrected noise costs up to 10 points at 50% noise; the correction wins
back 4.8 points at 50% with L_SC; L_spread recovers 75% of the lost accuracy at 20% noise, L_SC 45%.
Small scale: the app's defaults (digits, a narrow `cnn`, 20 epochs). Expected: accuracy falls
with noise for uncorrected L_SC; the corrected runs fall less; "recovered" is printed per cell.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Sequence

from spreadcon.experiments import common
from spreadcon.experiments.paper import CLAIMS
from spreadcon.experiments.runner import Context, Experiment, RunSpec

small: dict[str, Any] = {"seeds": 3, "app": {}}  # the app's own defaults are its small scale
full: dict[str, Any] = {"seeds": 3, "app": {
    "dataset": "cifar10", "encoder": "vit", "encoder_options": {}, "epochs": 600, "lr": 3e-4,
    "alpha": 0.67, "temperature": 0.9, "labelled_fractions": (0.2,)}}
GRID_KEYS = ("noise_rates", "labelled_fractions", "methods", "seeds")  # enumerated per run, not hashed


def app_config(cfg: dict[str, Any], seeds: Sequence[int] = (0,)):
    """The app's NoiseExperiment for this config (smoke: its own smoke())."""
    from spreadcon.apps.noisy_experiment import NoiseExperiment

    base = NoiseExperiment.smoke() if cfg.get("smoke") else NoiseExperiment()
    exp = NoiseExperiment(**{**asdict(base), **cfg["app"], "seeds": tuple(seeds)})
    exp.validate()
    return exp


def plan(cfg: dict[str, Any], seeds: Sequence[int], rows: list) -> list[RunSpec]:
    from spreadcon.apps.noisy_experiment import debiased_available

    exp = app_config(cfg, seeds)
    methods = [m for m in exp.methods if m != "debiased" or debiased_available()]
    shared = {f.name: getattr(exp, f.name) for f in fields(exp) if f.name not in GRID_KEYS and f.name != "device"}
    return [RunSpec(f"noise/{m}/r{r:g}/f{f:g}", {"app": shared, "method": m, "rate": r, "fraction": f}, s,
                    {"method": m, "noise_rate": r, "labelled_fraction": f})
            for f in exp.labelled_fractions for r in exp.noise_rates for m in methods for s in seeds]


def execute(spec: RunSpec, run_dir: Path, ctx: Context) -> dict[str, Any]:
    import torch

    from spreadcon.apps.noisy_experiment import NoiseExperiment, run_one

    if not torch.cuda.is_available():
        torch.set_num_threads(1)
    p = spec.params
    exp = NoiseExperiment(**{**p["app"], "seeds": (spec.seed,), "device": ctx.device or "auto"})
    if ctx.data_root is not None:
        if not hasattr(exp, "data_root"):
            raise ValueError("spreadcon.apps.noisy_experiment cannot take --data-root yet; "
                             "only embedded datasets run here")
        exp.data_root = ctx.data_root
    return run_one(exp, p["method"], p["rate"], p["fraction"], spec.seed, run_dir)


def validate(spec: RunSpec) -> None:
    """Dry-run check: the run's TrainConfig builds and names a known dataset, encoder and loss."""
    from spreadcon.apps.noisy_experiment import METHODS, NoiseExperiment, train_config

    p = spec.params
    exp = NoiseExperiment(**{**p["app"], "seeds": (spec.seed,)})
    config = train_config(exp, p["method"], p["rate"], p["fraction"], spec.seed, Path("unused"))
    common.check_names(datasets=[config.dataset], encoders=[config.encoder],
                       losses=[METHODS[p["method"]][0]])


def report(rows: list[dict[str, Any]], cfg: dict[str, Any], out: Path) -> str:
    from spreadcon.apps.noisy_experiment import plot, report as app_report

    exp = app_config(cfg, sorted({r["seed"] for r in rows}))
    exp.noise_rates = tuple(sorted({r["noise_rate"] for r in rows}))
    exp.labelled_fractions = tuple(sorted({r["labelled_fraction"] for r in rows}))
    exp.methods = tuple(m for m in exp.methods if any(r["method"] == m for r in rows))
    plot(rows, out / "fig5_noise.png")
    return app_report(rows, exp) + f"\nThe paper plots this (no table); its text: {CLAIMS['fig5-noise']}\n"


def claims(rows: list[dict[str, Any]], cfg: dict[str, Any]) -> list[tuple[str, str]]:
    """Per labelled fraction and noise rate > 0: which corrected loss recovers more of what noise cost L_SC."""
    from spreadcon.apps.noisy_experiment import recovered, summarise

    summary, out = summarise(rows), []
    for f in sorted({r["labelled_fraction"] for r in rows}):
        for rate in sorted({r["noise_rate"] for r in rows if r["noise_rate"] > 0}):
            rec = {m: recovered(summary, m, rate, f) for m in ("spread+fix", "supcon+fix")}
            clean, noisy = summary.get(("supcon", 0.0, f)), summary.get(("supcon", rate, f))
            if clean and noisy:
                out.append((f"CE head on {f:g} of labels, noise {rate:g}: uncorrected L_SC loses accuracy",
                            f"{'yes' if noisy[0] < clean[0] else 'no'}; {100 * clean[0]:.1f} clean -> "
                            f"{100 * noisy[0]:.1f} noisy"))
            if None not in rec.values():
                out.append((f"CE head on {f:g} of labels, noise {rate:g}: L_spread + correction recovers more than "
                            f"L_SC + correction",
                            f"{'yes' if rec['spread+fix'] > rec['supcon+fix'] else 'no'}; recovered "
                            f"{rec['spread+fix']:.0%} vs {rec['supcon+fix']:.0%} (paper at 20% noise: 75% vs 45%)"))
    return out


def smoke(cfg: dict[str, Any]) -> dict[str, Any]:
    return {**cfg, "seeds": 1, "smoke": True, "app": {}}


EXPERIMENTS = [Experiment(
    name="fig5-noise", summary="Figure 5 (centre): accuracy under label noise, geometric correction vs none",
    cpu_minutes=25, module=__name__, config=lambda scale: common.merge(small if scale == "small" else full),
    smoke=smoke, plan=plan, execute=execute, report=report, validate=validate, claims=claims,
)]
