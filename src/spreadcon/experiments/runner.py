"""Run an experiment: plan its runs, train or reuse them, evaluate them, write the tables.

An `Experiment` is a handful of functions over a plain config dict (big_vision style):

    config(scale)            -> dict   the `small` or `full` settings of its module
    smoke(cfg)               -> dict   the same config shrunk to run in seconds (CI)
    plan(cfg, seeds, rows)   -> [RunSpec]  given the rows finished so far (staged plans, such as
                                          the sweep's tau stage after its alpha stage, add runs)
    execute(spec, ctx)       -> dict   one row's metrics (obtains its training runs, evaluates them)
    report(rows, cfg, out_dir) -> str  markdown (tables); may also write PNGs into out_dir

Every training run lives in OUT/runs/<key> (`RunSpec.key`: a readable name plus a hash of the
run's TrainConfig differences from the defaults and its seed), so the same run asked for by two
experiments is trained once. Whether a run is finished, and resuming an interrupted one, is
`spreadcon.runs.train_or_reuse` / `is_finished`'s business (`train_run` below); the runner keeps
no marker of its own. Evaluations are cheap next to training and are recomputed on every call.
The experiment's own folder OUT/<name> gets results.json (all rows), table.md and the figures.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCALES = ("small", "medium", "full")


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


@dataclass(frozen=True)
class RunSpec:
    """One row of an experiment: `params` (JSON-able) and `seed` determine it (and its key);
    `labels` group it in tables; `evals` name optional evaluations (not part of the key).
    A training row holds params["train"], the TrainConfig differences from its defaults."""

    name: str
    params: dict[str, Any]
    seed: int
    labels: dict[str, Any] = field(default_factory=dict)
    evals: tuple[str, ...] = ()

    @property
    def digest(self) -> str:
        blob = json.dumps({"params": self.params, "seed": self.seed}, sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:10]

    @property
    def key(self) -> str:
        slug = re.sub(r"[^A-Za-z0-9.]+", "-", self.name).strip("-")
        return f"{slug}-s{self.seed}-{self.digest}"


@dataclass(frozen=True)
class Context:
    """What a run needs but does not depend on: where runs and data live, which device, how loud,
    and whether it may train (False for --report-only: unfinished runs are skipped)."""

    runs_dir: Path = Path("results/runs")
    data_root: str | None = None
    device: str | None = None
    smoke: bool = False
    verbose: bool = True
    progress: bool = False
    train: bool = True
    config: dict[str, Any] = field(default_factory=dict)  # the experiment's resolved config


@dataclass(frozen=True)
class Experiment:
    name: str
    summary: str                 # what it reproduces, one line
    cpu_minutes: float           # expected wall time of `--scale small` on 2 CPU cores
    module: str                  # the config module (its docstring has the command and result)
    config: Callable[[str], dict[str, Any]]
    smoke: Callable[[dict[str, Any]], dict[str, Any]]
    plan: Callable[[dict[str, Any], Sequence[int], list[dict[str, Any]]], list[RunSpec]]
    execute: Callable[[RunSpec, Context], dict[str, Any]]
    report: Callable[[list[dict[str, Any]], dict[str, Any], Path], str]
    validate: Callable[[RunSpec], None] | None = None  # dry-run check of one run (e.g. build its TrainConfig)
    # The paper's claims checked on the rows: [(claim, verdict)], verdict "yes", "no" or "mixed"
    # followed by the numbers that decide it. Written to table.md and results.json.
    claims: Callable[[list[dict[str, Any]], dict[str, Any]], list[tuple[str, str]]] | None = None
    scales: tuple[str, ...] = ("small", "full")  # the scales `config` defines ("medium": real data, CPU hours)


class RunNotFinished(LookupError):
    """A run that --report-only may not train; its row is left out of the tables."""


# --- training runs ----------------------------------------------------------------------------
def train_config(spec: RunSpec, ctx: Context):
    """The TrainConfig of a training RunSpec: its params["train"] plus seed, folder and device."""
    from spreadcon.config import TrainConfig

    return TrainConfig.from_dict({**spec.params["train"], "seed": spec.seed, "out_dir": str(ctx.runs_dir / spec.key),
                                  "data_root": ctx.data_root, "device": ctx.device or "auto",
                                  "progress": ctx.progress, "tensorboard": False})


def train_run(spec: RunSpec, ctx: Context, callbacks: Sequence[Any] = ()) -> Path:
    """The folder of the spec's finished training run: trained, resumed or reused by
    `spreadcon.runs.train_or_reuse`. Without ctx.train, RunNotFinished unless it is finished."""
    from spreadcon import runs

    config = train_config(spec, ctx)
    finished = runs.is_finished(Path(config.out_dir))
    if not ctx.train and not finished:
        raise RunNotFinished(f"{spec.key} has not finished")
    if ctx.verbose:
        print(f"[reproduce] {spec.key}: {'reused' if finished else 'training'}", flush=True)
    return Path(runs.train_or_reuse(config, callbacks=callbacks))


# --- running an experiment --------------------------------------------------------------------
def _write_json(path: Path, obj: Any) -> None:
    """Atomic JSON write (temp file + rename)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def git_revision() -> str | None:
    """The source tree's commit ('-dirty' with local changes), as the run folders record it."""
    from spreadcon.runs import git_revision as revision

    rev = revision()
    return None if rev is None else rev[:10] + ("-dirty" if rev.endswith("-dirty") else "")


def resolve_config(exp: Experiment, scale: str, smoke: bool, dataset: str | None = None,
                   overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The experiment's `scale` config, optionally on another `dataset`, with `overrides` merged
    in (a dict of differences, e.g. {"train": {"epochs": 5}}), optionally shrunk."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {SCALES}")
    if scale not in exp.scales:
        raise ValueError(f"{exp.name} has no --scale {scale}; it has {', '.join(exp.scales)}")
    cfg = merge(exp.config(scale), overrides)
    if dataset is not None:
        if "dataset" in cfg:
            cfg = {**cfg, "dataset": dataset}
        elif "datasets" in cfg:
            cfg = {**cfg, "datasets": {dataset: cfg["datasets"].get(dataset, {})}}
        else:
            raise ValueError(f"{exp.name} does not take a dataset")
    return exp.smoke(cfg) if smoke else cfg


def seed_list(cfg: dict[str, Any], seeds: int | Sequence[int] | None) -> list[int]:
    """The seeds: range(n) for a count n (default: the config's "seeds"), or the ones given."""
    if seeds is not None and not isinstance(seeds, int):
        return [int(s) for s in seeds]
    n = int(cfg.get("seeds", 1)) if seeds is None else int(seeds)
    if n < 1:
        raise ValueError(f"--seeds must be >= 1, got {n}")
    return list(range(n))


def plan_runs(exp: Experiment, cfg: dict[str, Any], seeds: Sequence[int],
              rows: list[dict[str, Any]] | None = None) -> list[RunSpec]:
    specs = exp.plan(cfg, seeds, list(rows or []))
    keys = [s.key for s in specs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{exp.name}: two planned runs share a key; give them different params")
    return specs


def output_dir(out: Path, name: str, scale: str, smoke: bool, dataset: str | None = None) -> Path:
    """OUT/<name>[-<dataset>][-medium|-full][-smoke]: one folder per distinct way of running it."""
    folder = name + (f"-{dataset}" if dataset else "") + ("" if scale == "small" else f"-{scale}")
    return Path(out) / (folder + ("-smoke" if smoke else ""))


def run_one(exp: Experiment, spec: RunSpec, ctx: Context) -> dict[str, Any] | None:
    """The row of one spec (None when --report-only finds its runs unfinished)."""
    start = time.perf_counter()
    try:
        metrics = exp.execute(spec, ctx)
    except RunNotFinished:
        return None
    return {**spec.labels, "seed": spec.seed, "run": spec.key, **metrics,
            "seconds": round(time.perf_counter() - start, 2)}


def collect_rows(exp: Experiment, cfg: dict[str, Any], seeds: Sequence[int], ctx: Context
                 ) -> tuple[list[dict[str, Any]], int]:
    """(rows, number of specs planned): a staged plan is re-planned after each stage until it
    asks for no new spec."""
    rows: list[dict[str, Any]] = []
    done: set[str] = set()
    specs = plan_runs(exp, cfg, seeds)
    while todo := [s for s in specs if s.key not in done]:
        for spec in todo:
            done.add(spec.key)
            row = run_one(exp, spec, ctx)
            if row is not None:
                rows.append(row)
        specs = plan_runs(exp, cfg, seeds, rows)
    return rows, len(done)


def validate_plan(exp: Experiment, cfg: dict[str, Any], seeds: Sequence[int], *, verbose: bool, label: str) -> None:
    """Plan and validate the first stage of `exp`; print each run's key and params."""
    specs = plan_runs(exp, cfg, seeds)
    for spec in specs:
        if exp.validate is not None:
            exp.validate(spec)
        if verbose:
            print(f"{spec.key}\t{json.dumps(spec.params, sort_keys=True, default=str)}")
    if verbose:
        print(f"[reproduce] {exp.name} ({label}): {len(specs)} runs planned, all valid; nothing was run")


def run_experiment(
    exp: Experiment, *, scale: str = "small", seeds: int | Sequence[int] | None = None, out: str | Path = "results",
    data_root: str | None = None, device: str | None = None, smoke: bool = False, dry_run: bool = False,
    verbose: bool = True, dataset: str | None = None, report_only: bool = False,
    overrides: dict[str, Any] | None = None, exp_dir: str | Path | None = None, progress: bool = False,
) -> Path:
    """Run (or, with `dry_run`, only plan and validate) every run of `exp`; write its tables
    into `exp_dir` (default: output_dir(out, ...)) and return that folder. Training runs live in
    OUT/runs. `report_only` trains nothing: the tables come from the runs finished so far, and
    their header says how many of the planned rows that is."""
    cfg = resolve_config(exp, scale, smoke, dataset, overrides)
    seed_ids = seed_list(cfg, seeds)
    out = Path(out)
    folder = Path(exp_dir) if exp_dir is not None else output_dir(out, exp.name, scale, smoke, dataset)
    if dry_run:
        validate_plan(exp, cfg, seed_ids, verbose=verbose, label=scale + (", smoke" if smoke else ""))
        return folder
    ctx = Context(runs_dir=out / "runs", data_root=data_root, device=device, smoke=smoke, verbose=verbose,
                  progress=progress, train=not report_only, config=cfg)
    rows, planned = collect_rows(exp, cfg, seed_ids, ctx)
    if not rows:
        raise ValueError(f"{exp.name}: no finished run under {out / 'runs'} to report")
    folder.mkdir(parents=True, exist_ok=True)
    command = (f"spreadcon reproduce {exp.name} --scale {scale} --seeds {len(seed_ids)}"
               + (f" --dataset {dataset}" if dataset else "") + (" --smoke" if smoke else ""))
    write_outputs(exp, cfg, rows, folder, planned=planned, command=command, verbose=verbose,
                  header={"scale": scale, "smoke": smoke, "seeds": len(seed_ids), "dataset": dataset})
    return folder


def write_outputs(exp: Experiment, cfg: dict[str, Any], rows: list[dict[str, Any]], folder: Path, *,
                  planned: int, command: str, verbose: bool, header: dict[str, Any]) -> None:
    """folder/results.json (rows, config, claims) and folder/table.md (the report and the claims)."""
    claims = exp.claims(rows, cfg) if exp.claims is not None else []
    git = git_revision()  # once: both files carry the same stamp
    _write_json(folder / "results.json", {
        "experiment": exp.name, "summary": exp.summary, **header, "git": git, "config": cfg,
        "claims": claims, "rows": rows, "runs_planned": planned, "runs_finished": len(rows),
    })
    body = exp.report(rows, cfg, folder)
    if claims:
        body += "\n## The paper's claims, checked on these runs\n\n" + "".join(
            f"- {claim}: **{verdict}**\n" for claim, verdict in claims)
    partial = (f"**Partial: {len(rows)} of the {planned} runs planned so far had finished** (written with "
               f"--report-only); re-run the command to complete it.\n\n") if len(rows) < planned else ""
    top = (f"# {exp.name}: {exp.summary}\n\nRegenerated by `{command}` (git {git or 'unknown'}); "
           f"every number below comes from results.json in this folder.\n\n{partial}")
    (folder / "table.md").write_text(top + body)
    if verbose:
        print(body)
        print(f"[reproduce] wrote {folder}")
