"""Noisy-label detection and correction from embedding geometry (paper Section 5.2, Appendix E.3).

Noisy labels look like tiny strata: a mislabelled point sits far from the other points of its
(wrong) class. Per batch, the heuristic scores each image i with noisy label y_i as

    score_i = cos(z_i, centre of the OTHER images labelled y_i)
              - mean over the other classes c present in the batch of mean_j cos(z_i, z_j), y_j = c

marks the round(rate * B) lowest scores as noisy, and relabels each marked image to the class
whose centre (of the unmarked images) is nearest in cosine similarity. The method never sees
clean labels; experiments pass them to `NoisyLabelCorrection` only to measure detection.

Documented rules for awkward batches (never a NaN):
- Views: with z [B, V, D], every view is scored against centres built from the OTHER images
  (all views of image i are left out of its own centre) and the image's score is the mean over
  its views; relabelling averages the views' similarities to each centre the same way.
- Singleton label: an image whose label no other image in the batch carries has no centre to
  be compared with; it gets score +inf, so it is marked only if rate asks for every image.
- Absent classes: classes with no image in the batch are skipped in the "other classes" mean
  and can never be a relabelling target. When no other class is present, that term is 0.
- Relabelling targets are centres of the unmarked images; a class whose images are all marked
  falls back to the centre of all its images in the batch.

Pure tensor code, no host synchronisation when `num_classes` is given: usable inside training
through `NoisyLabelCorrection.relabel`, offline through `NoisyLabelCorrector.fit(X, y)`, and on a
run folder through `apply_to_run` (`spreadcon apply noisy RUN_DIR`). The Figure 5 (centre)
experiment is `spreadcon reproduce fig5-noise`.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, clone
from torch import Tensor

from spreadcon.apps.checks import check_embeddings, check_labels
from spreadcon.checkpoint import checkpoint_stamp
from spreadcon.io import save_csv, save_json, save_npy
from spreadcon.runs import check_owned, load_run

__all__ = [
    "noisy_scores", "mark_lowest", "relabel_to_nearest", "correct_labels",
    "detection_quality", "NoisyLabelCorrection", "NoisyLabelCorrector", "apply_to_run", "cleanlab_detect",
]


def _check_rate(rate: float) -> float:
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not (0.0 <= float(rate) < 1.0):
        raise ValueError(f"noise rate must lie in [0, 1), got {rate}; pass the expected fraction "
                         "of wrong labels, e.g. 0.2")
    return float(rate)


def _as_views(z: Tensor, labels: Tensor) -> Tensor:
    """z [B, D] or [B, V, D] -> unit-norm [B, V, D]; checks labels [B]."""
    if z.dim() == 2:
        z = z[:, None, :]
    if z.dim() != 3:
        raise ValueError(f"z must be [B, D] or [B, V, D], got shape {tuple(z.shape)}")
    if labels.shape != (z.shape[0],):
        raise ValueError(f"labels must be [B] = [{z.shape[0]}], got shape {tuple(labels.shape)}")
    if labels.dtype != torch.int64:  # a dtype check only: the values stay on the device, unsynchronised
        raise ValueError(f"labels must be int64 class ids, got {labels.dtype}; pass labels.long()")
    return F.normalize(z if z.is_floating_point() else z.float(), dim=-1)


def _num_classes(labels: Tensor, num_classes: int | None) -> int:
    return int(labels.max()) + 1 if num_classes is None else int(num_classes)


def noisy_scores(z: Tensor, labels: Tensor, num_classes: int | None = None) -> Tensor:
    """The geometric score of each image (low = likely mislabelled).

    z [B, V, D] or [B, D] embeddings (any norm; normalised here), labels [B] int64 in
    [0, num_classes). Returns float [B]; +inf for images whose label is alone in the batch.
    """
    z = _as_views(z, labels)                                        # (B, V, D)
    b, v, _ = z.shape
    k = _num_classes(labels, num_classes)
    onehot = F.one_hot(labels, k).to(z.dtype)                       # (B, K)
    image_sum = z.sum(1)                                            # (B, D)
    class_sum = onehot.T @ image_sum                                # (K, D) sum over all views
    class_n = onehot.sum(0) * v                                     # (K,) number of view-points

    # own term: cosine with the centre of the other images of the same label
    own_sum = class_sum[labels] - image_sum                         # (B, D)
    own_n = class_n[labels] - v                                     # (B,)
    own_dir = F.normalize(own_sum, dim=-1)                          # centre direction; 0 if empty
    own = (z * own_dir[:, None, :]).sum(-1)                         # (B, V)

    # other term: mean over present other classes of the mean cosine with that class's points
    class_mean = class_sum / class_n.clamp_min(1)[:, None]          # (K, D)
    cos_to_class = torch.einsum("bvd,kd->bvk", z, class_mean)       # (B, V, K) mean cosines
    other = (class_n > 0)[None, :] & (onehot == 0)                  # (B, K) present, not own
    n_other = other.sum(1).clamp_min(1)                             # (B,)
    other_term = (cos_to_class * other[:, None, :]).sum(-1) / n_other[:, None]  # (B, V)

    score = (own - other_term).mean(1)                              # (B,)
    return torch.where(own_n > 0, score, torch.full_like(score, math.inf))


def mark_lowest(scores: Tensor, rate: float) -> Tensor:
    """Bool mask [B] of the round(rate * B) lowest scores (ties: lower index first)."""
    rate = _check_rate(rate)
    b = scores.shape[0]
    m = int(math.floor(rate * b + 0.5))
    mask = torch.zeros(b, dtype=torch.bool, device=scores.device)
    if m > 0:
        order = torch.sort(scores, stable=True).indices
        mask[order[:m]] = True
    return mask


def relabel_to_nearest(z: Tensor, labels: Tensor, mask: Tensor, num_classes: int | None = None) -> Tensor:
    """Labels [B] with each marked image moved to the class of its nearest centre.

    Centres are the means of the unmarked images of each class (all images of the class when
    every one is marked); classes absent from the batch are never targets.
    """
    z = _as_views(z, labels)                                        # (B, V, D)
    k = _num_classes(labels, num_classes)
    onehot = F.one_hot(labels, k).to(z.dtype)                       # (B, K)
    image_mean = z.mean(1)                                          # (B, D)
    trusted = onehot * (~mask).to(z.dtype)[:, None]                 # (B, K)
    trusted_n = trusted.sum(0)                                      # (K,)
    use = torch.where(trusted_n[None, :] > 0, trusted, onehot)      # fall back to all images
    centres = F.normalize(use.T @ image_mean, dim=-1)               # (K, D)
    sim = torch.einsum("bvd,kd->bk", z, centres) / z.shape[1]       # (B, K) mean over views
    present = onehot.sum(0) > 0                                     # (K,)
    sim = sim.masked_fill(~present[None, :], -math.inf)
    nearest = sim.argmax(1)
    return torch.where(mask, nearest, labels)


def correct_labels(
    z: Tensor, labels: Tensor, rate: float, num_classes: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One batch of the heuristic: (new labels [B], marked mask [B], scores [B])."""
    rate = _check_rate(rate)
    scores = noisy_scores(z, labels, num_classes)
    mask = mark_lowest(scores, rate)
    return relabel_to_nearest(z, labels, mask, num_classes), mask, scores


def detection_quality(marked: Tensor | np.ndarray, noisy: Tensor | np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 of a marked mask [N] against the true noisy mask [N].

    Precision is 1.0 when nothing is marked, recall 1.0 when nothing is noisy (nothing missed).
    """
    marked = torch.as_tensor(marked, dtype=torch.bool)
    noisy = torch.as_tensor(noisy, dtype=torch.bool)
    if marked.shape != noisy.shape:
        raise ValueError(f"marked {tuple(marked.shape)} and noisy {tuple(noisy.shape)} must match")
    tp = int((marked & noisy).sum())
    return _prf(tp, int(marked.sum()) - tp, int(noisy.sum()) - tp)


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn}


class NoisyLabelCorrection:
    """Trainer callback: correct the contrastive head's labels batch by batch.

    `relabel(step, z, labels, index)` returns the labels the contrastive loss should see: the
    input labels during the first `warmup_steps` steps, the heuristic's afterwards. When the
    experiment passes `clean_labels` [N_train] (indexed by the batch's `index`), the callback
    counts detection hits on the device and `on_epoch_end` writes `noise_precision`,
    `noise_recall`, `noise_f1` and `noise_fixed` (the fraction of truly noisy labels now equal to
    the clean label) into `state["metrics"]`, then resets the counts.
    """

    def __init__(self, noise_rate: float, *, warmup_steps: int = 0, num_classes: int | None = None,
                 clean_labels: Tensor | None = None) -> None:
        self.noise_rate = _check_rate(noise_rate)
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.warmup_steps = int(warmup_steps)
        self.num_classes = num_classes
        self.clean_labels = None if clean_labels is None else torch.as_tensor(clean_labels)
        self.history: list[dict[str, float]] = []
        self._reset()

    def _reset(self) -> None:
        self._counts: Tensor | None = None  # tp, marked, noisy, fixed, seen (on the batch's device)

    def relabel(self, step: int, z: Tensor, labels: Tensor, index: Tensor) -> Tensor:
        if step < self.warmup_steps or self.noise_rate == 0.0:
            return labels
        with torch.no_grad():
            new, marked, _ = correct_labels(z.detach(), labels, self.noise_rate, self.num_classes)
            if self.clean_labels is not None:
                if self.clean_labels.device != labels.device:  # move once, not every step
                    self.clean_labels = self.clean_labels.to(labels.device)
                clean = self.clean_labels[index.to(labels.device)]
                noisy = labels != clean
                counts = torch.stack([(marked & noisy).sum(), marked.sum(), noisy.sum(),
                                      (noisy & (new == clean)).sum(), torch.ones_like(noisy).sum()])
                self._counts = counts if self._counts is None else self._counts.to(counts.device) + counts
        return new

    def summary(self) -> dict[str, float]:
        """Detection quality accumulated since the last reset (empty before any counted step)."""
        if self._counts is None:
            return {}
        tp, marked, noisy, fixed, seen = (int(c) for c in self._counts.cpu())
        out = _prf(tp, marked - tp, noisy - tp)
        return {"noise_precision": out["precision"], "noise_recall": out["recall"],
                "noise_f1": out["f1"], "noise_fixed": fixed / noisy if noisy else 1.0,
                "noise_seen": seen}

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs: the epoch history and the counts of the current epoch."""
        counts = None if self._counts is None else self._counts.cpu()
        return {"history": list(self.history), "counts": counts}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state["history"])
        self._counts = state["counts"]

    def on_epoch_end(self, epoch: int, state: dict[str, Any]) -> None:
        summary = self.summary()
        if summary:
            self.history.append({"epoch": epoch, **summary})
            metrics = state.get("metrics")
            if isinstance(metrics, dict):
                metrics.update(summary)
        self._reset()


class NoisyLabelCorrector(BaseEstimator):
    """The heuristic on fixed embeddings, scikit-learn style.

    NoisyLabelCorrector(noise_rate, batch_size=None, random_state=0).fit(X [N, D], y [N])
    sets `scores_` [N] float, `noisy_mask_` [N] bool and `labels_` [N] int (corrected).
    With batch_size=None the whole set is one batch; otherwise X is cut into random batches of
    that size (seeded by random_state), as during training. X must be finite (a NaN cell would
    mark and relabel points at random); y non-negative integer class ids, one per row of X.
    """

    def __init__(self, noise_rate: float = 0.2, *, batch_size: int | None = None, random_state: int = 0) -> None:
        self.noise_rate = noise_rate
        self.batch_size = batch_size
        self.random_state = random_state

    def _batches(self, n: int) -> list[Tensor]:
        if self.batch_size is None:
            return [torch.arange(n)]
        if isinstance(self.batch_size, bool) or int(self.batch_size) != self.batch_size or self.batch_size < 1:
            raise ValueError(f"batch_size must be a whole number >= 1 or None, got {self.batch_size!r}")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(self.random_state)))
        return list(perm.split(int(self.batch_size)))

    def fit(self, X: Any, y: Any) -> "NoisyLabelCorrector":
        """Score, mark and relabel X [N, D] (N >= 1, finite) with class ids y [N] (ints >= 0)."""
        rate = _check_rate(self.noise_rate)
        x = torch.as_tensor(check_embeddings(X))
        labels = torch.as_tensor(check_labels(y, x.shape[0], "y"))
        k = int(labels.max()) + 1
        n = x.shape[0]
        scores = torch.empty(n, dtype=torch.float64)
        mask = torch.zeros(n, dtype=torch.bool)
        new = labels.clone()
        for idx in self._batches(n):
            new[idx], mask[idx], scores[idx] = correct_labels(x[idx], labels[idx], rate, k)
        self.scores_ = scores.numpy()
        self.noisy_mask_ = mask.numpy()
        self.labels_ = new.numpy()
        return self

    def fit_predict(self, X: Any, y: Any) -> np.ndarray:
        return self.fit(X, y).labels_


def apply_to_run(run_dir: str | Path, *, corrector: NoisyLabelCorrector | None = None, split: str = "train",
                 checkpoint: str = "best", out_dir: str | Path | None = None) -> dict[str, Any]:
    """Correct the labels of one split of a trained run from its embeddings (`spreadcon apply noisy`).

    Writes OUT/<split>_corrected.csv (index,label,corrected_label,marked_noisy), OUT/<split>_scores.npy
    and OUT/<split>_summary.json (one per split, stamped with the checkpoint; with the run's clean labels, when it was
    trained on noisy ones, detection precision/recall and label accuracy before and after).
    OUT defaults to RUN_DIR/noisy; corrector defaults to NoisyLabelCorrector(0.2).
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    fit = clone(corrector if corrector is not None else NoisyLabelCorrector())
    _check_rate(fit.noise_rate)  # before any work
    run = load_run(run_dir, checkpoint=checkpoint)
    emb = run.embeddings(split)
    fit.fit(emb["embedding"], emb["label"])
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "noisy"
    check_owned(out, run_dir, "noisy --out")
    out.mkdir(parents=True, exist_ok=True)
    table = np.stack([emb["index"], emb["label"], fit.labels_, fit.noisy_mask_.astype(int)], 1)
    save_csv(table, out / f"{split}_corrected.csv", fmt="%d", delimiter=",",
             header="index,label,corrected_label,marked_noisy", comments="")
    save_npy(fit.scores_, out / f"{split}_scores.npy")
    summary: dict[str, Any] = {"run": str(run_dir), "split": split, "rate": float(fit.noise_rate),
                               "marked": int(fit.noisy_mask_.sum()), "changed": int((fit.labels_ != emb["label"]).sum()),
                               "stamp": checkpoint_stamp(run_dir, checkpoint)}
    if "clean_label" in emb:
        noisy = emb["label"] != emb["clean_label"]
        summary.update(detection_quality(fit.noisy_mask_, noisy))
        summary["accuracy_before"] = float((emb["label"] == emb["clean_label"]).mean())
        summary["accuracy_after"] = float((fit.labels_ == emb["clean_label"]).mean())
    save_json(summary, out / f"{split}_summary.json")
    return summary


def cleanlab_detect(X: Any, y: Any, *, n_splits: int = 5, seed: int = 0) -> np.ndarray:
    """Baseline: confident learning (`cleanlab.filter.find_label_issues`) on out-of-fold
    probabilities of a logistic regression on the embeddings X [N, D]. Returns a bool mask [N]."""
    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    x, labels = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.int64)
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    probs = cross_val_predict(LogisticRegression(max_iter=1000), x, labels, cv=folds,
                              method="predict_proba")
    return find_label_issues(labels, probs, n_jobs=1)
