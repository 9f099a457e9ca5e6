"""Minimal coresets from strata difficulty (paper Section 5.3, Appendix E.3), and baselines.

Difficulty: train with L_spread on R random subsamples of the training set (t in {10, 20, 50}%,
3 seeds each in the paper) and let each run's final model classify every training point;
`difficulty_counts` counts, per point, the runs that got it right (0 = hard .. R = easy).

Selection (`strata_coreset`): a coreset of a fraction `size` keeps, per class, a quota
proportional to the class's size (largest remainder, ties to the lower class index, so the
quotas sum to exactly round(size * N)). Inside a class the points are bucketed by count, and
points are removed one at a time from the class's currently most-populated bucket until the
quota is met; among equally populated buckets the easier one (higher count) loses a point
first. Large coresets thus drop the (common) easy points first, while small ones level every
bucket to the same height and so still keep some easy points. Which points of a bucket stay is
a seeded random permutation; the same seed gives nested coresets across sizes.

Baselines: `random_coreset` (class-balanced) and `top_score_coreset` (keep the highest scores:
forgetting counts, EL2N, GraNd from `spreadcon.apps.coreset_scores`). `save_indices` writes the
selection as .npy and .csv so a coreset can be reused outside spreadcon. `CoresetSelector` is the
three selections as a scikit-learn estimator; `run_scores` scores trained run folders (difficulty,
forgetting, EL2N or GraNd) and `apply_to_run` selects from them (`spreadcon apply coreset
RUN_DIR...`). The Figure 5 (right) experiment is `spreadcon reproduce fig5-coreset`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import check_is_fitted

from spreadcon.apps.coreset_scores import el2n_scores, forgetting_counts, grand_scores, logits_module
from spreadcon.checkpoint import checkpoint_stamp
from spreadcon.data import default_views
from spreadcon.evaluate.embed import predict
from spreadcon.io import save_csv, save_json, save_npy
from spreadcon.runs import Run, check_owned, load_run

__all__ = [
    "difficulty_counts", "class_quotas", "strata_coreset", "bucket_keep_counts",
    "random_coreset", "top_score_coreset", "save_indices", "coreset_size", "CoresetSelector",
    "run_scores", "apply_to_run",
]

SELECTIONS = ("strata", "random", "top_score")
SCORES = ("difficulty", "forgetting", "el2n", "grand")   # what `apply_to_run` scores runs by
INTEGER_SCORES = ("difficulty", "forgetting")             # counts the strata rule can bucket


def _labels(labels: Any) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
        raise ValueError("labels must be a 1-D array of non-negative class indices")
    return y.astype(np.int64)


def coreset_size(size: float, n: int) -> int:
    """Number of points kept for a fraction `size` in (0, 1] of n points (at least 1)."""
    if not (0.0 < float(size) <= 1.0):
        raise ValueError(f"coreset size must be a fraction in (0, 1], got {size}; e.g. 0.3 for 30%")
    return max(1, int(np.floor(float(size) * n + 0.5)))


def difficulty_counts(correct: Any) -> np.ndarray:
    """correct [R, N] bool (run r's final model classifies point n correctly) -> counts [N] int."""
    c = np.asarray(correct)
    if c.ndim != 2:
        raise ValueError(f"correct must be [runs, N], got shape {c.shape}")
    return c.astype(bool).sum(0).astype(np.int64)


def class_quotas(labels: Any, k: int, balance: str = "proportional") -> np.ndarray:
    """Points to keep per class [C] summing to k.

    balance="proportional": k * n_c / N rounded by largest remainder (ties: lower class first).
    balance="equal": k // C each, the remainder to the lowest classes; ValueError when a class
    is smaller than its quota.
    """
    y = _labels(labels)
    sizes = np.bincount(y)
    present = sizes > 0
    if balance == "proportional":
        exact = k * sizes / sizes.sum()
    elif balance == "equal":
        exact = np.where(present, k / present.sum(), 0.0)
    else:
        raise ValueError(f"balance must be 'proportional' or 'equal', got {balance!r}")
    quota = np.floor(exact).astype(np.int64)
    order = np.lexsort((np.arange(len(sizes)), -(exact - quota)))  # largest remainder first
    quota[order[: k - quota.sum()]] += 1
    short = np.flatnonzero(quota > sizes)
    if short.size:
        c = int(short[0])
        raise ValueError(f"class {c} has {sizes[c]} points but {quota[c]} must be kept; use a "
                         "smaller size or balance='proportional'")
    return quota


def bucket_keep_counts(bucket_sizes: Any, keep: int) -> np.ndarray:
    """How many points each bucket keeps when points are removed one at a time from the most
    populated bucket (ties: the highest bucket index, i.e. the easiest, loses first).

    bucket_sizes [G] int (bucket g = points correctly classified by g runs) -> kept [G] int.
    """
    sizes = np.asarray(bucket_sizes, dtype=np.int64)
    if sizes.ndim != 1 or (sizes < 0).any():
        raise ValueError("bucket_sizes must be a 1-D array of non-negative counts")
    if not 0 <= keep <= sizes.sum():
        raise ValueError(f"cannot keep {keep} of {sizes.sum()} points")
    # Closed form of the one-at-a-time removal: the lowest water level L at which every bucket
    # keeping min(size, L) holds enough points; the few points too many come off the buckets
    # standing at the level, easiest (highest index) first, as the tie rule takes them.
    levels = np.arange(sizes.max(initial=0) + 1)
    totals = np.minimum(sizes[None, :], levels[:, None]).sum(1)     # non-decreasing in L
    level = int(np.searchsorted(totals, keep))                      # first L with total >= keep
    kept = np.minimum(sizes, level)
    excess = int(kept.sum()) - keep
    at_level = np.flatnonzero(sizes >= level)[::-1]                 # easiest first
    kept[at_level[:excess]] -= 1
    return kept


def strata_coreset(counts: Any, labels: Any, size: float, *, seed: int = 0) -> np.ndarray:
    """The paper's coreset: sorted indices of the kept points.

    counts [N] int difficulty counts (`difficulty_counts`), labels [N] int, size in (0, 1].
    """
    y = _labels(labels)
    c = np.asarray(counts)
    if c.shape != y.shape:
        raise ValueError(f"counts has shape {c.shape} but labels has {y.shape}; one count per point")
    c = c.astype(np.int64)
    k = coreset_size(size, len(y))
    quota = class_quotas(y, k)
    rng = np.random.default_rng(seed)
    priority = rng.permutation(len(y))  # seeded order inside each bucket (nested across sizes)
    rank = np.empty(len(y), dtype=np.int64)
    rank[priority] = np.arange(len(y))
    kept = []
    for cls in np.flatnonzero(quota):
        members = np.flatnonzero(y == cls)
        groups = np.unique(c[members])
        sizes = np.array([(c[members] == g).sum() for g in groups])
        for g, n_keep in zip(groups, bucket_keep_counts(sizes, int(quota[cls]))):
            bucket = members[c[members] == g]
            kept.append(bucket[np.argsort(rank[bucket], kind="stable")[:n_keep]])
    return np.sort(np.concatenate(kept)) if kept else np.empty(0, dtype=np.int64)


def random_coreset(labels: Any, size: float, *, seed: int = 0, balance: str = "proportional") -> np.ndarray:
    """Baseline: a class-balanced random coreset (see `class_quotas`); sorted indices."""
    y = _labels(labels)
    quota = class_quotas(y, coreset_size(size, len(y)), balance)
    rng = np.random.default_rng(seed)
    kept = [rng.permutation(np.flatnonzero(y == cls))[:q] for cls, q in enumerate(quota) if q]
    return np.sort(np.concatenate(kept))


def top_score_coreset(scores: Any, size: float, *, labels: Any = None, seed: int = 0) -> np.ndarray:
    """Baseline: keep the highest scores (forgetting, EL2N, GraNd); sorted indices.

    scores [N] float. Ties are broken by a seeded random order. With `labels` [N] the quota is
    class-proportional (highest scores within each class); without, the ranking is global,
    as in Toneva et al. (2019) and Paul et al. (2021).
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D [N], got shape {s.shape}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    k = coreset_size(size, len(s))
    tiebreak = np.random.default_rng(seed).permutation(len(s))
    if labels is None:
        order = np.lexsort((tiebreak, -s))
        return np.sort(order[:k])
    y = _labels(labels)
    if y.shape != s.shape:
        raise ValueError(f"scores has shape {s.shape} but labels has {y.shape}; one score per point")
    kept = []
    for cls, q in enumerate(class_quotas(y, k)):
        members = np.flatnonzero(y == cls)
        kept.append(members[np.lexsort((tiebreak[members], -s[members]))[:q]])
    return np.sort(np.concatenate(kept))


def save_indices(indices: Any, path: str | Path) -> tuple[Path, Path]:
    """Write indices as `<path>.npy` and `<path>.csv` (header `index`); `path` is a stem
    ("out/strata_0.3_s0" -> out/strata_0.3_s0.npy). Returns both paths."""
    idx = np.asarray(indices, dtype=np.int64)
    stem = Path(path)
    stem.parent.mkdir(parents=True, exist_ok=True)
    npy, csv = stem.parent / f"{stem.name}.npy", stem.parent / f"{stem.name}.csv"  # keep dots in names
    save_npy(idx, npy)
    save_csv(idx, csv, fmt="%d", header="index", comments="")
    return npy, csv


class CoresetSelector(BaseEstimator):
    """The coreset selections as a scikit-learn estimator.

    CoresetSelector(size, method=..., random_state=0).fit(scores [N], y [N]) sets `indices_`
    (sorted kept rows) and `mask_` [N] bool. method "strata": scores are difficulty counts
    (`strata_coreset`); "top_score": keep the highest scores per class (`top_score_coreset`);
    "random": a class-balanced random coreset (scores ignored, may be None).
    """

    def __init__(self, size: float = 0.5, *, method: str = "strata", random_state: int = 0) -> None:
        self.size = size
        self.method = method
        self.random_state = random_state

    def fit(self, scores: Any, y: Any) -> "CoresetSelector":
        if self.method not in SELECTIONS:
            raise ValueError(f"method must be one of {SELECTIONS}, got {self.method!r}")
        y = _labels(y)
        coreset_size(self.size, len(y))  # checks the size before any work
        if self.method != "random":
            s = np.asarray(scores, dtype=np.float64)
            if s.shape != y.shape or not np.isfinite(s).all():
                raise ValueError(f"scores must be finite, one per label: got shape {s.shape} for {y.shape} labels"
                                 + ("" if s.shape != y.shape else f", {int((~np.isfinite(s)).sum())} not finite"))
        if self.method == "strata":
            self.indices_ = strata_coreset(scores, y, self.size, seed=self.random_state)
        elif self.method == "top_score":
            self.indices_ = top_score_coreset(scores, self.size, labels=y, seed=self.random_state)
        else:
            self.indices_ = random_coreset(y, self.size, seed=self.random_state)
        self.mask_ = np.zeros(len(y), dtype=bool)
        self.mask_[self.indices_] = True
        return self

    def transform(self, X: Any) -> np.ndarray:
        """The kept rows of X [N, ...]."""
        check_is_fitted(self, "indices_")
        return np.asarray(X)[self.indices_]


def _load_runs(run_dirs: Sequence[str | Path], checkpoint: str) -> list[Run]:
    """The runs (`spreadcon.runs.Run`, eval mode, on the CPU); ValueError unless one dataset and
    no run given twice."""
    seen = [Path(r).resolve() for r in run_dirs]
    twice = sorted({str(r) for r in seen if seen.count(r) > 1})
    if twice:
        raise ValueError(f"run folder(s) {twice} given more than once; each run counts once in a coreset score")
    runs = [load_run(run_dirs[0], checkpoint=checkpoint)]
    for run_dir in run_dirs[1:]:
        run = load_run(run_dir, checkpoint=checkpoint)
        if run.config.dataset != runs[0].config.dataset:
            raise ValueError(f"{run_dir} was trained on {run.config.dataset!r} but {run_dirs[0]} on "
                             f"{runs[0].config.dataset!r}; coreset scores need runs of one dataset")
        runs.append(run)
    return runs


def _train_split(run: Run) -> dict[str, np.ndarray]:
    """A run's train split: index [N] (rows of the dataset as trained, the columns of its
    example_correct.npy), label [N], origin [N] (rows of the dataset as loaded, else index)."""
    ds = run.dataset
    index = ds.rows("train")
    origin = ds.origin[index] if ds.origin is not None else index
    return {"index": index.numpy(), "label": ds.label[index].numpy(), "origin": origin.numpy()}


def _forgetting(runs: Sequence[Run], train: dict[str, np.ndarray]) -> np.ndarray:
    """Forgetting counts [N] summed over runs, from each run's example_correct.npy [epochs, N]."""
    counts = np.zeros(len(train["label"]), dtype=np.int64)
    for run in runs:
        path = Path(run.run_dir) / "example_correct.npy"
        if not path.exists():
            raise ValueError(f"{run.run_dir} has no example_correct.npy, which --score forgetting reads: "
                             "train it again with `--set track_examples=true` (protocol joint or ce)")
        if not np.array_equal(_train_split(run)["origin"], train["origin"]):
            raise ValueError(f"{run.run_dir} was trained on other training points than {runs[0].run_dir}; "
                             "forgetting adds up runs of one training set (same subsample and train_subset)")
        history = np.load(path)
        if history.ndim != 2 or history.shape[1] != len(counts):
            raise ValueError(f"{path} has shape {history.shape}; expected [epochs, {len(counts)}]")
        counts += forgetting_counts(history)
    return counts


def run_scores(run_dirs: Sequence[str | Path], score: str,
               checkpoint: str = "last") -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(train split of the first run {"index", "label", "origin"} [N], scores [N]) from the runs.

    "difficulty": how many runs' models classify each point right (ints in [0, R]); "el2n":
    EL2N of their logits, averaged; "grand": GraNd of their models, averaged; "forgetting":
    forgetting counts over epochs from each run's example_correct.npy, summed (runs trained with
    track_examples on the first run's training points; `checkpoint` is not used). Models are the
    runs' `checkpoint` ("last": the final model), in eval mode, on un-augmented inputs.
    """
    if score not in SCORES:
        raise ValueError(f"score must be one of {list(SCORES)}, got {score!r}")
    runs = _load_runs(list(run_dirs), checkpoint)
    train = _train_split(runs[0])
    if score == "forgetting":
        return train, _forgetting(runs, train)
    x, prepare = runs[0].dataset.x[torch.as_tensor(train["index"])], default_views(runs[0].dataset).prepare
    if score == "grand":
        models = [logits_module(run.model) for run in runs]
        return train, grand_scores(models, x, torch.as_tensor(train["label"]), batch_size=32, prepare=prepare)
    logits = np.stack([predict(run.model, x, prepare=prepare, batch_size=run.config.eval_batch_size)[1].numpy()
                       for run in runs])                                       # [R, N, K]
    if score == "el2n":
        return train, el2n_scores(logits, train["label"])
    return train, difficulty_counts(logits.argmax(-1) == train["label"])


def apply_to_run(run_dirs: str | Path | Sequence[str | Path], *, selector: CoresetSelector | None = None,
                 score: str = "difficulty", checkpoint: str = "last", out_dir: str | Path | None = None) -> dict[str, Any]:
    """Select a coreset of the first run's training points from one or more trained runs.

    score: one of SCORES, computed by `run_scores`. Without a selector, "difficulty" selects
    by the paper's "strata" rule and the baselines by theirs, "top_score" (keep the most
    forgotten, the highest EL2N or GraNd; class-proportional). "strata" buckets integer counts,
    so it takes "difficulty" or "forgetting" only. Writes OUT/coreset.npy, coreset.csv (rows
    of the dataset as trained), OUT/SCORE.npy (the scores [N]) and OUT/coreset.json; OUT defaults
    to FIRST_RUN/coreset. checkpoint "last": the final models, as the paper's difficulty uses;
    GraNd and EL2N as in Paul et al. (early in training) need a run trained with
    `keep_checkpoints=[K]` and checkpoint K."""
    run_dirs = [run_dirs] if isinstance(run_dirs, (str, Path)) else list(run_dirs)
    if not run_dirs:
        raise ValueError("give at least one run folder")
    if score not in SCORES:
        raise ValueError(f"score must be one of {list(SCORES)}, got {score!r}")
    default = CoresetSelector(method="strata" if score == "difficulty" else "top_score")
    selector = clone(selector if selector is not None else default)
    if selector.method == "strata" and score not in INTEGER_SCORES:
        raise ValueError(f"the strata rule buckets integer counts (difficulty, forgetting), not {score} "
                         "scores; use --method top_score")
    train, scores = run_scores(run_dirs, score, checkpoint)
    selector.fit(scores, train["label"])
    rows = np.asarray(train["index"])[selector.indices_]
    out = Path(out_dir) if out_dir is not None else Path(run_dirs[0]) / "coreset"
    check_owned(out, run_dirs[0], "coreset --out")
    npy, csv = save_indices(rows, out / "coreset")
    save_npy(scores, out / f"{score}.npy")
    summary = {"runs": [str(r) for r in run_dirs], "score": score, "selector": selector.get_params(),
               "n_train": int(len(train["label"])), "n_kept": int(len(rows)), "checkpoint": checkpoint,
               "indices": [str(npy), str(csv)], "stamps": [checkpoint_stamp(r, checkpoint) for r in run_dirs]}
    save_json(summary, out / "coreset.json")
    return summary
