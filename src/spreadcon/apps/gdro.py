"""Group DRO end models on frozen embeddings (Sagawa et al. 2020), and their ERM baseline.

The online objective itself is `spreadcon.group_dro.group_dro_loss` (exponentiated-gradient
group weights, step eta, size adjustment C / sqrt(n_g)); this module trains a linear layer with
it on fixed embeddings, `mode="linear-frozen"`, the fast option of GEORGE's pipeline. Training the
whole network under the same objective is a trainer objective (issue 14), not this estimator.

    model = GroupDRO(eta=0.01, random_state=0).fit(X, y, groups, X_val=Xv, y_val=yv, groups_val=gv)
    group_metrics(model.predict_proba(X_test), y_test, groups_test, train_group=groups_train)

Choices, each a parameter:
- `adjustment` (C) defaults to 0, Sagawa et al.'s code default: C is tuned on validation data (2 on
  Waterbirds) to counter a large network memorising its small groups, which a linear layer on
  frozen features cannot do to the same degree.
- `reweight_groups` (Sagawa's --reweight_groups): minibatches drawn with replacement with
  probability 1 / n_g per example, so every group is seen equally often.
- `select_by="worst_group"`: the epoch kept has the best worst validation (pseudo-)group accuracy,
  GEORGE's and Sagawa's model selection; "average" keeps the best validation accuracy (ERM).
Group metrics live in `spreadcon.evaluate.metrics` (`group_metrics`).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted
from torch import Tensor, nn

from spreadcon.apps.checks import check_embeddings, check_features, check_labels
from spreadcon.evaluate.metrics import worst_group_accuracy
from spreadcon.group_dro import check_eta, group_dro_loss, size_adjustment

SELECT_BY = ("worst_group", "average")
MODES = ("linear-frozen",)


def _finite(name: str, value: Any, low: float, *, strict: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or (v <= low if strict else v < low):
        raise ValueError(f"{name} must be finite and {'>' if strict else '>='} {low:g}, got {value}")
    return v


class GroupDRO(ClassifierMixin, BaseEstimator):
    """A linear classifier on frozen embeddings, trained with Group DRO (or ERM).

    Parameters
    ----------
    robust : True for Group DRO, False for ERM (groups are then used for model selection only).
    mode : "linear-frozen" (the only mode: a linear layer on fixed embeddings, the fast option).
    eta : step size of the group weights, finite and in (0, 10] (Sagawa et al.: 0.01).
    adjustment : C of the group-size adjustment C / sqrt(n_g), finite >= 0; 0 (default) turns it off.
    reweight_groups : draw minibatches group-balanced (with replacement, probability 1 / n_g).
    epochs, batch_size, lr, weight_decay : Adam on the cross-entropy; weight_decay is L2 (the strong
        regularisation Sagawa et al. found necessary for worst-group generalisation).
    standardize : z-score the features with the training mean and std before the linear layer.
    select_by : "worst_group" or "average", the validation score that picks the epoch kept; without
        a validation set the last epoch is kept.
    random_state : seeds the initialisation and the minibatch order.

    Attributes after fit: `linear_` (nn.Linear), `classes_` [K], `q_` [G] final group weights,
    `group_ids_` [G] the training group ids in q's order, `group_counts_` [G], `history_` (per-epoch
    dicts), `best_epoch_`, `best_score_` (-inf without a validation set), `unscored_groups_` (training
    groups with no validation member, which worst-group selection could not score),
    `unseen_val_classes_` (classes of y_val absent from y: their rows are left out of selection, with
    a warning). Inputs are checked by `spreadcon.apps.checks` (shapes, integer ids >= 0, finite X).
    Torch threads are not touched: `spreadcon --threads` sets them once for a process.
    """

    def __init__(self, robust: bool = True, *, mode: str = "linear-frozen", eta: float = 0.01,
                 adjustment: float = 0.0, reweight_groups: bool = False, epochs: int = 50,
                 batch_size: int = 256, lr: float = 1e-2, weight_decay: float = 1e-3,
                 standardize: bool = True, select_by: str = "worst_group", random_state: int = 0) -> None:
        self.robust = robust
        self.mode = mode
        self.eta = eta
        self.adjustment = adjustment
        self.reweight_groups = reweight_groups
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.standardize = standardize
        self.select_by = select_by
        self.random_state = random_state

    # --- parameters and data -----------------------------------------------------------------
    def _check_params(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}; training the whole network "
                             f"under Group DRO is done by the trainer, not by this estimator")
        if self.select_by not in SELECT_BY:
            raise ValueError(f"select_by must be one of {SELECT_BY}, got {self.select_by!r}")
        check_eta(self.eta)
        _finite("adjustment", self.adjustment, 0.0, strict=False)
        _finite("lr", self.lr, 0.0, strict=True)
        _finite("weight_decay", self.weight_decay, 0.0, strict=False)
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")

    def _check_data(self, X, y, groups, X_val, y_val, groups_val) -> tuple:
        """X [N, D], y [N], groups [N] and the validation arrays checked (`spreadcon.apps.checks`)."""
        X = check_embeddings(X)
        y = check_labels(y, len(X), "y")
        classes = np.unique(y)
        if len(classes) < 2:
            raise ValueError(f"y holds a single class ({classes.tolist()}); a classifier needs two or more")
        if groups is None:
            if self.robust:
                raise ValueError("Group DRO needs groups [N]; pass them or use robust=False (ERM)")
            groups = np.zeros(len(X), dtype=np.int64)
        groups = check_labels(groups, len(X), "groups")
        return (X, y, groups, *self._check_validation(X, X_val, y_val, groups_val))

    def _check_validation(self, X: np.ndarray, X_val, y_val, groups_val) -> tuple:
        """(X_val [M, D], y_val [M], groups_val [M] or None) checked; all None without X_val."""
        if X_val is None:
            if y_val is not None or groups_val is not None:
                raise ValueError("y_val / groups_val were given without X_val; pass X_val [N_val, D] as well")
            return None, None, None
        X_val = check_embeddings(X_val, "X_val")
        check_features(X_val, X.shape[1], "X_val")
        if y_val is None:
            raise ValueError("X_val needs y_val [N_val], the class of each validation row")
        y_val = check_labels(y_val, len(X_val), "y_val")
        if self.select_by == "worst_group" and groups_val is None:
            raise ValueError("select_by='worst_group' needs groups_val [N_val]")
        if groups_val is not None:
            groups_val = check_labels(groups_val, len(X_val), "groups_val")
        return X_val, y_val, groups_val

    def _drop_unseen_classes(self, X_val: np.ndarray, y_val: np.ndarray, groups_val: np.ndarray | None) -> tuple:
        """The validation rows whose class is one of `classes_`. Rows of classes absent from training
        can never be predicted right (each would score 0.0 and pin the worst group at 0.0 every
        epoch), so they are left out of model selection with a warning; recorded in
        `unseen_val_classes_`. All rows unseen: a ValueError."""
        seen = np.isin(y_val, self.classes_)
        self.unseen_val_classes_ = sorted(np.unique(y_val[~seen]).tolist())
        if seen.all():
            return X_val, y_val, groups_val
        if not seen.any():
            raise ValueError(f"y_val holds only classes {self.unseen_val_classes_}, none of which is in y "
                             f"(classes {self.classes_.tolist()}); pass a validation set of the training classes")
        warnings.warn(f"y_val holds classes {self.unseen_val_classes_[:10]} ({int((~seen).sum())} of {len(y_val)} "
                      f"rows) that y does not; the model cannot predict them, so those rows are left out of model "
                      f"selection (they would score 0.0 every epoch). Add training rows of those classes or drop "
                      f"them from the validation set", stacklevel=3)
        return X_val[seen], y_val[seen], None if groups_val is None else groups_val[seen]

    def _features(self, X: np.ndarray) -> Tensor:
        return torch.as_tensor((X - self.mean_) / self.std_, dtype=torch.float32)

    # --- fitting ---------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any, groups: Any | None = None, *, X_val: Any | None = None,
            y_val: Any | None = None, groups_val: Any | None = None) -> "GroupDRO":
        """Train on X [N, D], labels y [N], groups [N] (required when robust); validate on X_val [M, D],
        y_val [M], groups_val [M] (needed for select_by="worst_group")."""
        self._check_params()
        X, y, groups, X_val, y_val, groups_val = self._check_data(X, y, groups, X_val, y_val, groups_val)
        self.classes_ = np.unique(y)
        self.unseen_val_classes_: list[int] = []
        if X_val is not None:
            X_val, y_val, groups_val = self._drop_unseen_classes(X_val, y_val, groups_val)
        self.group_ids_, g = np.unique(groups, return_inverse=True)
        self.group_counts_ = np.bincount(g)
        self.unscored_groups_ = []
        if groups_val is not None:
            self.unscored_groups_ = sorted(set(self.group_ids_.tolist()) - set(np.unique(groups_val).tolist()))
            if self.unscored_groups_:
                warnings.warn(f"groups {self.unscored_groups_} of the training set have no members in the "
                              f"validation split; worst-group model selection cannot score them", stacklevel=2)
        self.mean_ = X.mean(axis=0) if self.standardize else np.zeros(X.shape[1])
        self.std_ = X.std(axis=0) + 1e-8 if self.standardize else np.ones(X.shape[1])
        targets = torch.as_tensor(np.searchsorted(self.classes_, y), dtype=torch.int64)
        generator = torch.Generator().manual_seed(int(self.random_state))
        linear = self._init_linear(X.shape[1], generator)
        validation = None if X_val is None else (X_val, y_val, groups_val)
        self._train(linear, self._features(X), targets, torch.as_tensor(g), generator, validation)
        return self

    def _init_linear(self, d: int, generator: torch.Generator) -> nn.Linear:
        """nn.Linear's own init (uniform +- 1/sqrt(d)), drawn from our generator, not the global one."""
        linear = nn.utils.skip_init(nn.Linear, d, len(self.classes_))
        with torch.no_grad():
            bound = 1.0 / np.sqrt(d)
            for p in linear.parameters():
                p.copy_(torch.rand(p.shape, generator=generator) * 2 * bound - bound)
        return linear

    def _batches(self, g: Tensor, generator: torch.Generator) -> list[Tensor]:
        """One epoch of minibatch indices: a permutation, or N group-balanced draws with replacement."""
        n = len(g)
        if self.reweight_groups:
            counts = torch.as_tensor(self.group_counts_, dtype=torch.float64)
            order = torch.multinomial(1.0 / counts[g], n, replacement=True, generator=generator)
        else:
            order = torch.randperm(n, generator=generator)
        return list(order.split(int(self.batch_size)))

    def _train(self, linear: nn.Linear, features: Tensor, targets: Tensor, g: Tensor,
               generator: torch.Generator, validation: tuple | None) -> None:
        optimizer = torch.optim.Adam(linear.parameters(), lr=float(self.lr), weight_decay=float(self.weight_decay))
        q = torch.full((len(self.group_counts_),), 1.0 / len(self.group_counts_), dtype=torch.float64)
        adjust = size_adjustment(torch.as_tensor(self.group_counts_), self.adjustment)
        self.history_, best_state, self.best_score_, self.best_epoch_ = [], None, -np.inf, self.epochs - 1
        for epoch in range(self.epochs):
            for batch in self._batches(g, generator):
                losses = nn.functional.cross_entropy(linear(features[batch]), targets[batch], reduction="none")
                if self.robust:
                    loss, q = group_dro_loss(losses.double(), g[batch], q, eta=self.eta, adjustment=adjust)
                else:
                    loss = losses.mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            self.linear_, self.q_ = linear, q.numpy().copy()
            record = {"epoch": epoch, "q": q.tolist()}
            if validation is not None:
                record.update(self._validate(*validation))
                score = record["val_worst_group_accuracy" if self.select_by == "worst_group" else "val_accuracy"]
                if score > self.best_score_:  # ties keep the earlier epoch
                    best_state = {k: v.clone() for k, v in linear.state_dict().items()}
                    self.best_score_, self.best_epoch_ = score, epoch
            self.history_.append(record)
        if best_state is not None:
            linear.load_state_dict(best_state)
        self.linear_ = linear.eval()

    def _validate(self, X_val: np.ndarray, y_val: np.ndarray, groups_val: np.ndarray | None) -> dict[str, float]:
        pred = self.predict(X_val)
        out = {"val_accuracy": float((pred == y_val).mean())}
        if groups_val is not None:
            out["val_worst_group_accuracy"] = worst_group_accuracy(pred, y_val, groups_val)
        return out

    # --- prediction ------------------------------------------------------------------------------
    def decision_function(self, X: Any) -> np.ndarray:
        """Logits [M, K] for X [M, D], columns in the order of `classes_`."""
        check_is_fitted(self, "linear_")
        X = check_embeddings(X)
        check_features(X, len(self.mean_))
        with torch.no_grad():
            return self.linear_(self._features(X)).double().numpy()

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities [M, K], columns in the order of `classes_`."""
        return torch.softmax(torch.from_numpy(self.decision_function(X)), dim=1).numpy()

    def predict(self, X: Any) -> np.ndarray:
        """Predicted class ids [M]."""
        scores = self.decision_function(X)  # checks the model is fitted
        return self.classes_[scores.argmax(axis=1)]
