"""Run an experiment: plan its runs, skip the finished ones, resume the rest, write the tables.

An `Experiment` is a handful of functions over a plain config dict (big_vision style):

    config(scale)            -> dict   the `small` or `full` settings of its module
    smoke(cfg)               -> dict   the same config shrunk to run in seconds (CI)
    plan(cfg, seeds, rows)   -> [RunSpec]  given the rows finished so far (staged plans, such as
                                          the sweep's tau stage after its alpha stage, add runs)
    execute(spec, run_dir, ctx) -> dict   one run's metrics (trains, evaluates)
    report(rows, cfg, out_dir)  -> str    markdown (tables); may also write PNGs into out_dir

Every run gets the folder OUT/runs/<key>, where the key is a readable name plus a hash of the
run's resolved parameters and seed, so the same run asked for by two experiments is done once.
`result.json` in that folder marks it finished: a re-run skips it. A folder without it is an
interrupted run: `execute` is called again on the same folder and resumes from its checkpoint.
A finished run asked for an evaluation it has not had yet is evaluated again (the training is
not repeated), and its result.json is extended.
The experiment's own folder OUT/<name> gets results.json (all rows), table.md and the figures.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCALES = ("small", "full")


@dataclass(frozen=True)
class RunSpec:
    """One run: `params` (JSON-able) and `seed` determine it (and its key); `labels` group it
    in tables; `evals` name the evaluations wanted from it (not part of the key: two experiments
    asking different evaluations of the same training run share it)."""

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
    """What a run needs but does not depend on: where data lives, which device, how loud."""

    data_root: str | None = None
    device: str | None = None
    smoke: bool = False
    verbose: bool = True
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
    execute: Callable[[RunSpec, Path, Context], dict[str, Any]]
    report: Callable[[list[dict[str, Any]], dict[str, Any], Path], str]
    validate: Callable[[RunSpec], None] | None = None  # dry-run check of one run (e.g. build its TrainConfig)
    # The paper's claims checked on the rows: [(claim, verdict)], verdict "yes", "no" or "mixed"
    # followed by the numbers that decide it. Written to table.md and results.json.
    claims: Callable[[list[dict[str, Any]], dict[str, Any]], list[tuple[str, str]]] | None = None


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


def resolve_config(exp: Experiment, scale: str, smoke: bool, dataset: str | None = None) -> dict[str, Any]:
    """The experiment's `scale` config, optionally on another `dataset`, optionally shrunk."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {SCALES}")
    cfg = exp.config(scale)
    if dataset is not None:
        if "dataset" in cfg:
            cfg = {**cfg, "dataset": dataset}
        elif "datasets" in cfg:
            cfg = {**cfg, "datasets": {dataset: cfg["datasets"].get(dataset, {})}}
        else:
            raise ValueError(f"{exp.name} does not take a dataset")
    return exp.smoke(cfg) if smoke else cfg


def seed_list(cfg: dict[str, Any], seeds: int | None) -> list[int]:
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
    """OUT/<name>[-<dataset>][-full][-smoke]: one folder per distinct way of running it."""
    folder = name + (f"-{dataset}" if dataset else "") + ("" if scale == "small" else f"-{scale}")
    return Path(out) / (folder + ("-smoke" if smoke else ""))


def run_one(exp: Experiment, spec: RunSpec, runs_dir: Path, ctx: Context) -> dict[str, Any]:
    """The row of one run: read from its result.json if finished, else run (or resume) it."""
    run_dir = runs_dir / spec.key
    done = run_dir / "result.json"
    previous = json.loads(done.read_text()) if done.exists() else None
    if previous is not None and set(spec.evals) <= set(previous.get("evals", [])):
        if ctx.verbose:
            print(f"[reproduce] {spec.key}: finished, skipped")
        return {**previous, **spec.labels}
    resumed = run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_json(run_dir / "spec.json", {"name": spec.name, "params": spec.params, "seed": spec.seed,
                                        "labels": spec.labels, "experiment": exp.name})
    if ctx.verbose:
        print(f"[reproduce] {spec.key}: {'resuming' if resumed else 'running'}", flush=True)
    start = time.perf_counter()
    metrics = exp.execute(spec, run_dir, ctx)
    evals = sorted(set(spec.evals) | set((previous or {}).get("evals", [])))
    row = {**(previous or {}), **spec.labels, "seed": spec.seed, "run": spec.key, **metrics, "evals": evals,
           "seconds": round(time.perf_counter() - start, 2) + (previous or {}).get("seconds", 0.0)}
    _write_json(done, row)
    return row


def run_experiment(
    exp: Experiment, *, scale: str = "small", seeds: int | None = None, out: str | Path = "results",
    data_root: str | None = None, device: str | None = None, smoke: bool = False,
    dry_run: bool = False, verbose: bool = True, dataset: str | None = None, report_only: bool = False,
) -> Path:
    """Run (or, with `dry_run`, only plan and validate) every run of `exp`; write its tables.

    Returns the experiment's output folder (see output_dir). A staged plan is
    re-planned after each stage until it asks for no new run; a dry run validates the first stage.
    `report_only` runs nothing: the tables are written from the runs finished so far, and their
    header says how many of the planned runs that is.
    """
    cfg = resolve_config(exp, scale, smoke, dataset)
    seed_ids = seed_list(cfg, seeds)
    specs = plan_runs(exp, cfg, seed_ids)
    out = Path(out)
    exp_dir = output_dir(out, exp.name, scale, smoke, dataset)
    if dry_run:
        for spec in specs:
            if exp.validate is not None:
                exp.validate(spec)
            if verbose:
                print(f"{spec.key}\t{json.dumps(spec.params, sort_keys=True, default=str)}")
        if verbose:
            print(f"[reproduce] {exp.name} ({scale}{', smoke' if smoke else ''}): {len(specs)} runs planned, "
                  f"all valid; nothing was run")
        return exp_dir
    import torch

    if (device or "auto").startswith("cpu") or not torch.cuda.is_available():
        torch.set_num_threads(1)  # small runs on shared CPU cores: more threads only add contention
    ctx = Context(data_root=data_root, device=device, smoke=smoke, verbose=verbose, config=cfg)
    rows: list[dict[str, Any]] = []
    done: set[str] = set()
    while True:
        todo = [s for s in specs if s.key not in done]
        if not todo:
            break
        for spec in todo:
            done.add(spec.key)
            finished = out / "runs" / spec.key / "result.json"
            if report_only and not finished.exists():
                continue
            rows.append(run_one(exp, spec, out / "runs", ctx))
        specs = plan_runs(exp, cfg, seed_ids, rows)
    if not rows:
        raise ValueError(f"{exp.name}: no finished run under {out / 'runs'} to report")
    exp_dir.mkdir(parents=True, exist_ok=True)
    claims = exp.claims(rows, cfg) if exp.claims is not None else []
    _write_json(exp_dir / "results.json", {
        "experiment": exp.name, "summary": exp.summary, "scale": scale, "smoke": smoke, "seeds": len(seed_ids),
        "dataset": dataset, "git": git_revision(), "config": cfg, "claims": claims, "rows": rows,
        "runs_planned": len(done), "runs_finished": len(rows),
    })
    body = exp.report(rows, cfg, exp_dir)
    if claims:
        body += "\n## The paper's claims, checked on these runs\n\n" + "".join(
            f"- {claim}: **{verdict}**\n" for claim, verdict in claims)
    command = (f"spreadcon reproduce {exp.name} --scale {scale} --seeds {len(seed_ids)}"
               + (f" --dataset {dataset}" if dataset else "") + (" --smoke" if smoke else ""))
    partial = (f"**Partial: {len(rows)} of the {len(done)} runs planned so far had finished** (written with "
               f"--report-only); re-run the command to complete it.\n\n") if len(rows) < len(done) else ""
    header = (f"# {exp.name}: {exp.summary}\n\nRegenerated by `{command}` (git {git_revision() or 'unknown'}); "
              f"every number below comes from results.json in this folder.\n\n{partial}")
    (exp_dir / "table.md").write_text(header + body)
    if verbose:
        print(body)
        print(f"[reproduce] wrote {exp_dir}")
    return exp_dir
