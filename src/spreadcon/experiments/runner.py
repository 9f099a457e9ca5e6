"""Run an experiment: plan its runs, obtain and evaluate them, write the tables and the claims.

An `Experiment` is a handful of functions over a plain config dict (big_vision style):

    config(scale)            -> dict   the `small` or `full` settings of its module
    smoke(cfg)               -> dict   the same config shrunk to run in seconds (CI)
    plan(cfg, seeds, rows)   -> [RunSpec]  given the rows finished so far (staged plans, such as
                                          the sweep's tau stage after its alpha stage, add runs)
    execute(spec, ctx)       -> dict   one row's metrics (obtains its training runs, evaluates them)
    report(rows, cfg, out_dir) -> str  markdown (tables); may also write PNGs into out_dir
    claims(rows, cfg)        -> [(kind, claim, verdict)]  `spreadcon.experiments.claims`

Every training run lives in OUT/runs/<key> (`RunSpec.key`: a readable name plus a hash of the
run's TrainConfig differences from the defaults and its seed), so the same run asked for by two
experiments is trained once (`common.train_run`; the runner keeps no marker of its own).
Evaluations are cheap next to training and are recomputed on every call. The experiment's own
folder OUT/<name> gets results.json (all rows), table.md and the figures, through spreadcon.io.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from spreadcon.data import check_root
from spreadcon.experiments import SCALES
from spreadcon.experiments import claims as claims_mod
from spreadcon.experiments.recipes import merge
from spreadcon.io import git_revision, read_json, save_json, save_text
from spreadcon.run_lock import RunLockedError


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
    """One invocation of an experiment: which variant of its config (smoke, dataset, overrides),
    where runs, tables and data live, on which device, how loud, and what it may do (train:
    False for --report-only, whose unfinished runs are skipped; dry_run: plan and validate only).
    None of it enters a run's key; `config` is the resolved config, set by run_experiment."""

    out: Path = Path("results")          # training runs in OUT/runs, tables in OUT/<folder>
    exp_dir: Path | None = None          # the tables' folder (default: runner.output_dir)
    data_root: str | None = None
    device: str | None = None
    smoke: bool = False
    dataset: str | None = None           # run on this dataset instead of the experiment's own
    overrides: dict[str, Any] | None = None  # differences merged into the config, e.g. {"train": {"epochs": 5}}
    train: bool = True
    dry_run: bool = False
    verbose: bool = True
    progress: bool = False
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def runs_dir(self) -> Path:
        return Path(self.out) / "runs"


@dataclass(frozen=True)
class Experiment:
    """One table or figure of the paper: its configs and the functions over them (module docstring)."""

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
    # Claims checked on the rows: [(kind, claim, verdict)] (`spreadcon.experiments.claims`),
    # written to table.md and results.json.
    claims: Callable[[list[dict[str, Any]], dict[str, Any]], list[claims_mod.Claim]] | None = None
    scales: tuple[str, ...] = ("small", "full")  # the scales `config` defines ("medium": real data, CPU hours)


class RunNotFinished(LookupError):
    """A run that --report-only may not train; its row is left out of the tables."""


# --- running an experiment --------------------------------------------------------------------
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


LOCKED_WAIT_S = 30.0  # how often a run that another process is writing is tried again


def run_all(exp: Experiment, specs: Sequence[RunSpec], ctx: Context) -> list[dict[str, Any]]:
    """The rows of `specs`, in order. A run another process is writing (two `reproduce` commands
    sharing runs, e.g. fig4-transfer and fig4-end-model side by side) is put off until the others
    are done, then waited for, and reused once that process has finished it."""
    rows: dict[str, dict[str, Any] | None] = {}
    todo = list(specs)
    while todo:
        locked = []
        for spec in todo:
            try:
                rows[spec.key] = run_one(exp, spec, ctx)
            except RunLockedError as err:
                locked.append((spec, err))
        todo = [spec for spec, _ in locked]
        if locked:
            print(f"[reproduce] waiting {LOCKED_WAIT_S:.0f} s for {len(locked)} run(s) another process "
                  f"is writing: {locked[0][1]}", flush=True)
            time.sleep(LOCKED_WAIT_S)
    return [row for spec in specs if (row := rows[spec.key]) is not None]


def collect_rows(exp: Experiment, cfg: dict[str, Any], seeds: Sequence[int], ctx: Context
                 ) -> tuple[list[dict[str, Any]], int]:
    """(rows, number of specs planned): a staged plan is re-planned after each stage until it
    asks for no new spec."""
    rows: list[dict[str, Any]] = []
    done: set[str] = set()
    specs = plan_runs(exp, cfg, seeds)
    while todo := [s for s in specs if s.key not in done]:
        done.update(s.key for s in todo)
        rows += run_all(exp, todo, ctx)
        specs = plan_runs(exp, cfg, seeds, rows)
    return rows, len(done)


def validate_plan(exp: Experiment, cfg: dict[str, Any], seeds: Sequence[int], *, verbose: bool, label: str,
                  data_root: str | None = None) -> None:
    """Plan and validate the first stage of `exp` (with the data root of each dataset read from
    files); print each run's key and params."""
    specs = plan_runs(exp, cfg, seeds)
    for name in sorted({s.params["train"]["dataset"] for s in specs if "dataset" in s.params.get("train", {})}):
        check_root(name, data_root)
    for spec in specs:
        if exp.validate is not None:
            exp.validate(spec)
        if verbose:
            print(f"{spec.key}\t{json.dumps(spec.params, sort_keys=True, default=str)}")
    if verbose:
        print(f"[reproduce] {exp.name} ({label}): {len(specs)} runs planned, all valid; nothing was run")


def run_experiment(exp: Experiment, ctx: Context, *, scale: str = "small",
                   seeds: int | Sequence[int] | None = None) -> Path:
    """Run (or, with ctx.dry_run, only plan and validate) every run of `exp`; write its tables
    into ctx.exp_dir (default: output_dir(ctx.out, ...)) and return that folder. Training runs
    live in OUT/runs. Without ctx.train nothing is trained: the tables come from the runs
    finished so far, and their header says how many of the planned rows that is."""
    cfg = resolve_config(exp, scale, ctx.smoke, ctx.dataset, ctx.overrides)
    seed_ids = seed_list(cfg, seeds)
    folder = Path(ctx.exp_dir) if ctx.exp_dir is not None else output_dir(ctx.out, exp.name, scale, ctx.smoke,
                                                                          ctx.dataset)
    if ctx.dry_run:
        validate_plan(exp, cfg, seed_ids, verbose=ctx.verbose, label=scale + (", smoke" if ctx.smoke else ""),
                      data_root=ctx.data_root)
        return folder
    rows, planned = collect_rows(exp, cfg, seed_ids, replace(ctx, config=cfg))
    if not rows:
        raise ValueError(f"{exp.name}: no finished run under {ctx.runs_dir} to report")
    folder.mkdir(parents=True, exist_ok=True)
    header = {"scale": scale, "smoke": ctx.smoke, "seeds": len(seed_ids), "dataset": ctx.dataset}
    write_outputs(exp, cfg, rows, folder, planned=planned, command=reproduce_command(exp.name, header),
                  verbose=ctx.verbose, header=header)
    return folder


def reproduce_command(name: str, header: dict[str, Any]) -> str:
    """The `spreadcon reproduce` command a results folder's header describes (seeds None: left out)."""
    return (f"spreadcon reproduce {name} --scale {header['scale']}"
            + (f" --seeds {header['seeds']}" if header.get("seeds") is not None else "")
            + (f" --dataset {header['dataset']}" if header.get("dataset") else "")
            + (" --smoke" if header.get("smoke") else ""))


def rejudge(exp: Experiment, folder: Path, *, verbose: bool = False) -> Path:
    """Write folder/table.md and results.json again from the rows results.json saved: the report
    and the claims as today's code judges them, nothing trained or evaluated. For results whose
    runs are not on this machine; the rows keep the git revision they were measured at (rows_git)."""
    path = Path(folder) / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{exp.name}: no {path} to judge again; `spreadcon reproduce {exp.name}` writes it")
    saved = read_json(path)
    if saved.get("experiment") != exp.name:
        raise ValueError(f"{path} holds the rows of {saved.get('experiment')!r}, not of {exp.name!r}")
    header = {k: saved.get(k) for k in ("scale", "smoke", "seeds", "dataset")}
    header["rows_git"] = saved.get("rows_git") or saved.get("git")
    write_outputs(exp, saved["config"], saved["rows"], Path(folder), verbose=verbose,
                  command=reproduce_command(exp.name, {**header, "seeds": None}) + " --rejudge",
                  planned=saved.get("runs_planned", len(saved["rows"])), header=header)
    return Path(folder)


def write_outputs(exp: Experiment, cfg: dict[str, Any], rows: list[dict[str, Any]], folder: Path, *,
                  planned: int, command: str, verbose: bool, header: dict[str, Any]) -> None:
    """folder/results.json (rows, config, claims) and folder/table.md (the report and the claims);
    header["rows_git"] (from `rejudge`) names the revision whose runs gave the rows."""
    claims = exp.claims(rows, cfg) if exp.claims is not None else []
    git = git_revision(short=True)  # once: both files carry the same stamp
    save_json({"experiment": exp.name, "summary": exp.summary, **header, "git": git, "config": cfg,
               "claims": [list(c) for c in claims], "rows": rows, "runs_planned": planned,
               "runs_finished": len(rows)}, folder / "results.json", sort_keys=True)
    body = exp.report(rows, cfg, folder) + claims_mod.markdown(claims)
    partial = (f"**Partial: {len(rows)} of the {planned} runs planned so far had finished** (written with "
               f"--report-only); re-run the command to complete it.\n\n") if len(rows) < planned else ""
    rows_from = (f"; the rows were measured at git {header['rows_git']} and only judged again here"
                 if header.get("rows_git") else "")
    top = (f"# {exp.name}: {exp.summary}\n\nRegenerated by `{command}` (git {git or 'unknown'}{rows_from}); "
           f"every number below comes from results.json in this folder.\n\n{partial}")
    save_text(top + body, folder / "table.md")
    if verbose:
        print(body)
        print(f"[reproduce] wrote {folder}")
