"""Worst-group robustness from recovered strata on a trained run: the paper's Section 5.2.

GEORGE's pipeline (Sohoni et al. 2020) on the embeddings of a model trained on class labels:

    1. recover pseudo-strata per class on the train split (`StrataRecovery`)
    2. assign val points to pseudo-groups with the same per-class models
    3. fit end models on the frozen embeddings (`GroupDRO`, mode "linear-frozen") and score them
       on the TRUE test groups (`spreadcon.evaluate.metrics.group_metrics`):
         erm           ERM, selected by validation accuracy
         gdro_pseudo   Group DRO on the recovered groups, selected by worst val pseudo-group accuracy
         gdro_true     Group DRO on the true groups, selected by worst val true-group accuracy (upper bound)
         run_head      the trained run's own classifier head, for reference

    result, recovery = robustness(splits, recovery=StrataRecovery(), end_model=GroupDRO(eta=0.01))
    result = apply_to_run("runs/spread")            # `spreadcon apply robustness RUN_DIR`

The estimators are templates: each end model is `sklearn.base.clone(end_model)` with `robust` and
`select_by` set per method. The true groups are the dataset's `group` when it has one (Waterbirds,
spurious-mnist), else its `stratum`. Embeddings are L2-normalised first by default (`normalize`):
the contrastive losses compare directions, and one geometry for every loss keeps it fair.
The Figure 5 (left) experiment over losses and seeds is `spreadcon reproduce fig5-robustness`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from sklearn.base import clone

from spreadcon.apps.gdro import GroupDRO
from spreadcon.apps.gdro_network import NetworkGroupDRO
from spreadcon.apps.checks import check_embeddings, check_labels
from spreadcon.apps.strata import StrataRecovery, recovery_scores
from spreadcon import progress
from spreadcon.checkpoint import checkpoint_stamp
from spreadcon.evaluate.metrics import group_metrics
from spreadcon.evaluate.plots import coloured_pair
from spreadcon.groups import write_group_file
from spreadcon.io import save_json
from spreadcon.runs import Run, check_owned, load_run

METHODS = ("erm", "gdro_pseudo", "gdro_true", "run_head")
SPLIT_NAMES = ("train", "val", "test")


def true_groups(split: dict[str, np.ndarray]) -> np.ndarray:
    return split["group"] if "group" in split else split["stratum"]


def _check_splits(splits: dict[str, dict[str, np.ndarray]], normalize: bool) -> dict[str, np.ndarray]:
    """The embeddings of each split as float64 [N, D] (unit rows with `normalize`), checked."""
    for s in (s for s in SPLIT_NAMES if s in splits):
        absent = [k for k in ("embedding", "label") if k not in splits[s]]
        absent += [] if "group" in splits[s] or "stratum" in splits[s] else ["group (or stratum)"]
        if absent:
            raise ValueError(f"the {s} split has no {', '.join(absent)}; each split needs embedding [N, D], "
                             f"label [N] and group (or stratum) [N]")
    missing = [s for s in SPLIT_NAMES if s not in splits or len(splits[s]["label"]) == 0]
    if missing:
        raise ValueError(f"robustness needs non-empty train, val and test splits; missing or empty: {missing}")
    X = {s: check_embeddings(splits[s]["embedding"], f"the {s} embeddings") for s in SPLIT_NAMES}
    for s in SPLIT_NAMES:
        check_labels(splits[s]["label"], len(X[s]), f"the {s} labels")
        check_labels(true_groups(splits[s]), len(X[s]), f"the {s} groups")
    if normalize:
        X = {s: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12) for s, x in X.items()}
    if len(np.unique(splits["train"]["label"])) < 2:
        raise ValueError("the train split holds a single class; worst-group robustness needs two or more")
    empty = sorted(set(true_groups(splits["train"]).tolist()) - set(true_groups(splits["test"]).tolist()))
    if empty:
        raise ValueError(f"groups {empty} of the train split have no members in the test split; "
                         f"their worst-group accuracy cannot be measured")
    return X


def recover(splits: dict[str, dict[str, np.ndarray]], X: dict[str, np.ndarray], *,
            recovery: StrataRecovery | None = None) -> tuple[dict[str, Any], StrataRecovery, np.ndarray]:
    """Steps 1-2 on the checked embeddings X (`_check_splits`): (JSON-ready recovery results, the
    fitted recovery, the val pseudo-groups [N_val])."""
    recovery = clone(recovery if recovery is not None else StrataRecovery())
    recovery._check_params()  # bad settings fail before any work
    g = {s: true_groups(splits[s]) for s in ("train", "val")}
    with progress.stage("strata recovery (per-class clustering)"):
        recovery.fit(X["train"], np.asarray(splits["train"]["label"]))
    pseudo_val = recovery.predict(X["val"], np.asarray(splits["val"]["label"]))
    result: dict[str, Any] = {
        "n_clusters": recovery.n_clusters_.tolist(),
        "silhouettes": [{int(k): v for k, v in s.items()} for s in recovery.silhouettes_],
        "recovery_train": recovery_scores(g["train"], recovery.pseudo_groups_),
        "recovery_val": recovery_scores(g["val"], pseudo_val),
        "methods": {},
    }
    return result, recovery, pseudo_val


def robustness(splits: dict[str, dict[str, np.ndarray]], *, recovery: StrataRecovery | None = None,
               end_model: GroupDRO | None = None, normalize: bool = True) -> tuple[dict[str, Any], StrataRecovery]:
    """Recovery + linear-frozen end models on embedded splits; (JSON-ready results, the fitted recovery).

    splits: {"train", "val", "test"} -> {"embedding" [N, D], "label" [N], "group" or "stratum" [N],
    optionally "logits" [N, K] (the run's own head)}. recovery, end_model: unfitted templates
    (defaults: GEORGE's StrataRecovery(), Sagawa's GroupDRO())."""
    end_model = end_model if end_model is not None else GroupDRO()
    clone(end_model).set_params(robust=True)._check_params()
    X = _check_splits(splits, normalize)
    result, recovery, pseudo_val = recover(splits, X, recovery=recovery)
    result["config"] = {"recovery": recovery.get_params(), "end_model": end_model.get_params(), "normalize": normalize}
    y = {s: np.asarray(splits[s]["label"]) for s in SPLIT_NAMES}
    g = {s: true_groups(splits[s]) for s in SPLIT_NAMES}
    fits = {"erm": (False, "average", None, None),
            "gdro_pseudo": (True, "worst_group", recovery.pseudo_groups_, pseudo_val),
            "gdro_true": (True, "worst_group", g["train"], g["val"])}
    for name, (robust, select_by, groups, groups_val) in fits.items():
        model = clone(end_model).set_params(robust=robust, select_by=select_by)
        model.fit(X["train"], y["train"], groups, X_val=X["val"], y_val=y["val"], groups_val=groups_val)
        out = group_metrics(model.predict_proba(X["test"]), y["test"], g["test"], train_group=g["train"])
        result["methods"][name] = {**out, "best_epoch": model.best_epoch_}
    _run_head(result, splits)
    return result, recovery


def robustness_network(run: Run, splits: dict[str, dict[str, np.ndarray]], *, recovery: StrataRecovery | None = None,
                       end_model: NetworkGroupDRO, normalize: bool = True, out_dir: Path,
                       runs_dir: str | Path | None = None) -> tuple[dict[str, Any], StrataRecovery]:
    """Recovery on a loaded `run`'s embeddings, then end models that train the network
    (`NetworkGroupDRO`), scored on the true test groups. The pseudo-groups go to
    OUT/pseudo_groups.npz; the end models' run folders to `runs_dir` (default OUT/end_models)."""
    result, recovery, pseudo_val = recover(splits, _check_splits(splits, normalize), recovery=recovery)
    check_end_groups(splits, recovery, pseudo_val)  # before anything is written or trained
    result["config"] = {"recovery": recovery.get_params(), "end_model": end_model.get_params(), "normalize": normalize}
    path = Path(out_dir) / "pseudo_groups.npz"
    with restored_on_failure(path):
        write_group_file(path, train_index=splits["train"]["index"], train=recovery.pseudo_groups_,
                         val_index=splits["val"]["index"], val=pseudo_val)
        with progress.stage("end models (ERM, Group DRO on recovered and on true groups)"):
            dirs = end_model.fit_run(run, path, runs_dir=runs_dir if runs_dir is not None else Path(out_dir) / "end_models")
        g_train, test = true_groups(splits["train"]), splits["test"]
        for name, run_dir in dirs.items():
            logits = load_run(run_dir).embeddings("test")["logits"]
            best = checkpoint_stamp(run_dir, "best")["epoch"]
            out = group_metrics(np.asarray(logits, dtype=np.float64), test["label"], true_groups(test),
                                train_group=g_train)
            result["methods"][name] = {**out, "best_epoch": best, "run_dir": str(run_dir)}
    _run_head(result, splits)
    return result, recovery


def check_end_groups(splits: dict[str, dict[str, np.ndarray]], recovery: StrataRecovery,
                     pseudo_val: np.ndarray) -> None:
    """Refuse groups the network end models cannot use, naming options `apply robustness` has.

    The trainer's Group DRO weights a group by its train members and worst-group selection scores
    it on its val members, so every group of gdro_pseudo (recovered) and gdro_true (the dataset's
    `group`, else `stratum`) needs members in both splits. Too many clusters for a small val split
    (a short run, the default k_range 2,10) is the usual cause."""
    k_min, k_max = (int(k) for k in recovery.k_range)
    lower = "--k-range 1,1 (one group per class)" if k_max <= 2 else f"--k-range {min(k_min, 2)},{min(k_max - 1, 3)}"
    linear = ("or use --end-model linear-frozen, whose selection leaves unscored groups out with a warning "
              "(library: end_model=GroupDRO())")
    n_val = len(pseudo_val)
    pairs = (("recovered pseudo-groups", recovery.pseudo_groups_, pseudo_val,
              f"recover fewer, larger clusters: lower k_range (now {k_min},{k_max}), e.g. {lower}, {linear}"),
             ("true groups (the dataset's group, else stratum)", true_groups(splits["train"]),
              true_groups(splits["val"]),
              f"train the run again with a larger val split (--set dataset_options.val_fraction=0.2), {linear}"))
    for what, train, val, advice in pairs:
        train_only = sorted(set(np.unique(train).tolist()) - set(np.unique(val).tolist()))
        val_only = sorted(set(np.unique(val).tolist()) - set(np.unique(train).tolist()))
        if train_only:
            raise ValueError(f"{what} {train_only[:10]} have train members but none among the {n_val} val rows, so "
                             f"the network end models' worst-group selection cannot score them; {advice}")
        if val_only:
            raise ValueError(f"{what} {val_only[:10]} have val members but no train members, so Group DRO cannot "
                             f"weight them; {advice}")


@contextlib.contextmanager
def restored_on_failure(path: Path) -> Iterator[None]:
    """On any failure inside the block, put `path` back as it was (removed if it did not exist)."""
    before = path.read_bytes() if path.is_file() else None
    try:
        yield
    except BaseException:
        if before is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(before)
        raise


@contextlib.contextmanager
def made_dir(path: Path) -> Iterator[Path]:
    """mkdir -p `path`; on a failure inside the block, remove it again if this call made it and it
    is still empty (a failed apply leaves no empty output folder behind)."""
    existed = path.exists()
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        if not existed:
            with contextlib.suppress(OSError):
                path.rmdir()  # only if empty: end-model run folders, reusable, are kept
        raise


def _run_head(result: dict[str, Any], splits: dict[str, dict[str, np.ndarray]]) -> None:
    """The trained run's own classifier head, for reference (result["methods"]["run_head"])."""
    if "logits" in splits["test"]:
        test = splits["test"]
        result["methods"]["run_head"] = group_metrics(np.asarray(test["logits"], dtype=np.float64), test["label"],
                                                      true_groups(test), train_group=true_groups(splits["train"]))


def class_pictures(rec: StrataRecovery, y: np.ndarray, groups: np.ndarray, out_dir: Path, *,
                   class_names: list[str] | None = None, prefix: str = "") -> list[Path]:
    """One PNG per class: its reduced training embedding coloured by true group and by cluster.

    The coordinates are the recovery's UMAP (PCA of the class when it ran without a reducer)."""
    paths = []
    for c in rec.classes_:
        rows = y == c
        Z = rec.embedding_[rows]
        if Z.shape[1] != 2:
            Zc = Z - Z.mean(axis=0)
            Z = Zc @ np.linalg.svd(Zc, full_matrices=False)[2][:2].T
        name = class_names[int(c)] if class_names and int(c) < len(class_names) else f"class {c}"
        stem = prefix.strip(" :").replace(" ", "_") or "run"
        paths.append(coloured_pair(Z, groups[rows], rec.pseudo_groups_[rows], Path(out_dir) / f"{stem}_class{int(c)}.png",
                                   title=f"{prefix}{name}: {'UMAP' if rec.reducer == 'umap' else 'PCA'} "
                                         f"of the train embeddings"))
    return paths


def embed_splits(run: Run) -> dict[str, dict[str, np.ndarray]]:
    """The train/val/test `Run.embeddings` of a loaded run (at the checkpoint it was loaded with)."""
    return {s: run.embeddings(s) for s in SPLIT_NAMES}


def apply_to_run(run_dir: str | Path, *, recovery: StrataRecovery | None = None,
                 end_model: GroupDRO | NetworkGroupDRO | None = None, normalize: bool = True,
                 checkpoint: str = "best", out_dir: str | Path | None = None, pictures: bool = True,
                 pictures_dir: str | Path | None = None, picture_prefix: str = "",
                 runs_dir: str | Path | None = None) -> dict[str, Any]:
    """Recovery + Group DRO on a run's embeddings; writes OUT/robustness.json (stamped with the
    checkpoint it came from) and, with `pictures`, one PNG per class in `pictures_dir` (default OUT).
    OUT defaults to RUN_DIR/robustness. checkpoint: "best", "last", or an epoch kept by the run.
    end_model: a `GroupDRO` (linear-frozen, the fast option; the default) or a `NetworkGroupDRO`
    (trains the network; its run folders go to `runs_dir`, default OUT/end_models). Groups the
    network end models cannot use are refused before anything is written (`check_end_groups`); a
    failure leaves OUT as it was: pseudo_groups.npz restored or removed, OUT removed if this call
    made it and it is empty (end-model run folders, complete or resumable, are kept)."""
    run = load_run(run_dir, checkpoint=checkpoint)
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "robustness"
    check_owned(out, run_dir, "robustness --out")
    with progress.stage("embeddings of every split"):
        splits = embed_splits(run)
    with made_dir(out), restored_on_failure(out / "pseudo_groups.npz"):  # a failed apply leaves nothing behind
        if isinstance(end_model, NetworkGroupDRO):
            result, rec = robustness_network(run, splits, recovery=recovery, end_model=end_model, normalize=normalize,
                                             out_dir=out, runs_dir=runs_dir)
        else:
            result, rec = robustness(splits, recovery=recovery, end_model=end_model, normalize=normalize)
        result["run_dir"] = str(run_dir)
        result["stamp"] = checkpoint_stamp(run_dir, checkpoint)
        loss = "ce" if run.config.protocol == "ce" else run.config.loss
        result["run"] = {"dataset": run.config.dataset, "loss": loss, "protocol": run.config.protocol,
                         "seed": run.config.seed, "checkpoint": checkpoint}
        if pictures:
            paths = class_pictures(rec, splits["train"]["label"], true_groups(splits["train"]),
                                   Path(pictures_dir) if pictures_dir is not None else out,
                                   class_names=run.dataset.class_names, prefix=picture_prefix)
            result["pictures"] = [str(p) for p in paths]
        save_json(result, out / "robustness.json")
    return result
