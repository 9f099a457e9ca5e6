"""Group DRO on frozen embeddings (Sagawa et al. 2019), its ERM baseline, and group metrics.

Group DRO minimises the worst expected loss over groups with online exponentiated-gradient
weights q over the G training groups. At each minibatch, with L_g the mean loss of group g in the
batch (0 for a group absent from it) and n_g the size of group g in the training set:

    q_g <- q_g * exp(eta * (L_g + C / sqrt(n_g)))      then q <- q / sum(q)
    loss = sum_g q_g L_g

C (`adjustment`) is Sagawa et al.'s group-size adjustment (C = 0 turns it off). `robust=False`
gives ERM: the plain mean loss over the batch. The end model is linear on the (standardised)
embeddings. Model selection keeps the epoch with the best validation score: worst-group accuracy
over the validation groups given (pseudo-groups in GEORGE's pipeline), or average accuracy.

    model = GroupDRO(eta=0.01, random_state=0).fit(X, y, groups, X_val=Xv, y_val=yv, groups_val=gv)
    evaluate(y_test, model.predict(X_test), true_groups_test, train_groups=true_groups_train)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import Tensor, nn

from spreadcon.apps.strata import check_embeddings, check_labels

SELECT_BY = ("worst_group", "average")


# --- metrics -------------------------------------------------------------------------------
def group_accuracies(y_true: Any, y_pred: Any, groups: Any) -> dict[int, float]:
    """Accuracy within each group present in `groups` [N]; y_true, y_pred [N]."""
    y_true = np.asarray(y_true)
    y_pred = check_labels(y_pred, len(y_true), "y_pred")
    groups = check_labels(groups, len(y_true), "groups")
    correct = y_pred == y_true
    return {int(g): float(correct[groups == g].mean()) for g in np.unique(groups)}


def worst_group_accuracy(y_true: Any, y_pred: Any, groups: Any) -> float:
    """The lowest accuracy over the groups present in `groups` [N]."""
    return min(group_accuracies(y_true, y_pred, groups).values())


def weighted_average_accuracy(y_true: Any, y_pred: Any, groups: Any, train_groups: Any) -> float:
    """Per-group accuracies weighted by the groups' proportions in the training set.

    The Waterbirds convention (Sagawa et al. 2019): the test set is group-balanced, so its plain
    accuracy would overweight rare groups; reweighting by training proportions estimates accuracy
    on the training distribution. Groups absent from `groups` are dropped and weights renormalised.
    """
    accs = group_accuracies(y_true, y_pred, groups)
    ids, counts = np.unique(np.asarray(train_groups), return_counts=True)
    weight = {int(g): c for g, c in zip(ids, counts) if int(g) in accs}
    if not weight:
        raise ValueError("no group of the evaluation set appears in train_groups; "
                         "pass the training groups with the same ids")
    total = sum(weight.values())
    return float(sum(accs[g] * w for g, w in weight.items()) / total)


def worst_group_auroc(y_true: Any, scores: Any, groups: Any) -> float:
    """Binary tasks (ISIC): the lowest, over groups g, of the AUROC of the points of g against all
    points of the other class. scores [N] = the model's score for class 1; groups [N] nested in
    classes (a group holding both classes is scored as is)."""
    y_true = np.asarray(y_true)
    scores = np.asarray(scores, dtype=np.float64)
    groups = check_labels(groups, len(y_true), "groups")
    if set(np.unique(y_true)) != {0, 1}:
        raise ValueError("worst_group_auroc is for binary tasks with labels 0 and 1")
    aucs = []
    for g in np.unique(groups):
        in_g = groups == g
        classes = np.unique(y_true[in_g])
        rows = in_g | np.isin(y_true, np.setdiff1d([0, 1], classes))
        if len(np.unique(y_true[rows])) == 2:
            aucs.append(roc_auc_score(y_true[rows], scores[rows]))
    return float(min(aucs))


def evaluate(y_true: Any, probs: Any, groups: Any, train_groups: Any | None = None) -> dict[str, Any]:
    """Accuracy, per-group and worst-group accuracy (+ weighted average, AUROCs for binary tasks).

    probs [N, K] probabilities of the classes 0..K-1; groups [N] true (or pseudo) groups; train_groups [N_train]
    the training set's groups, for the weighted average accuracy.
    """
    y_true = np.asarray(y_true)
    probs = np.asarray(probs)
    y_pred = probs.argmax(axis=1)
    out: dict[str, Any] = {
        "accuracy": float((y_pred == y_true).mean()),
        "group_accuracy": group_accuracies(y_true, y_pred, groups),
        "worst_group_accuracy": worst_group_accuracy(y_true, y_pred, groups),
    }
    if train_groups is not None:
        out["average_accuracy"] = weighted_average_accuracy(y_true, y_pred, groups, train_groups)
    if probs.shape[1] == 2 and len(np.unique(y_true)) == 2:
        out["auroc"] = float(roc_auc_score(y_true, probs[:, 1]))
        out["worst_group_auroc"] = worst_group_auroc(y_true, probs[:, 1], groups)
    return out


# --- the robust loss ------------------------------------------------------------------------
def group_losses(losses: Tensor, groups: Tensor, n_groups: int) -> tuple[Tensor, Tensor]:
    """Mean loss per group [G] (0 where a group has no point) and the counts [G]; losses, groups [B]."""
    counts = torch.bincount(groups, minlength=n_groups).to(losses.dtype)
    sums = torch.zeros(n_groups, dtype=losses.dtype, device=losses.device).index_add(0, groups, losses)
    return sums / counts.clamp(min=1), counts


def dro_step(q: Tensor, losses: Tensor, groups: Tensor, eta: float, adjust: Tensor) -> tuple[Tensor, Tensor]:
    """One exponentiated-gradient update of q [G] and the robust loss sum_g q_g L_g.

    losses [B] per-example losses, groups [B] in 0..G-1, adjust [G] = C / sqrt(n_g).
    """
    mean_loss, _ = group_losses(losses, groups, len(q))
    q = q * torch.exp(eta * (mean_loss.detach() + adjust))
    q = q / q.sum()
    return q, (q * mean_loss).sum()


# --- the estimator --------------------------------------------------------------------------
class GroupDRO:
    """A linear classifier on frozen embeddings, trained with Group DRO (or ERM).

    Parameters
    ----------
    robust : True for Group DRO, False for ERM (groups are then used for model selection only).
    eta : step size of the exponentiated-gradient group weights (Sagawa et al.: 0.01).
    adjustment : C of the group-size adjustment C / sqrt(n_g); 0 turns it off.
    epochs, batch_size, lr, weight_decay : Adam on the cross-entropy; weight_decay is L2 (the strong
        regularisation Sagawa et al. found necessary for worst-group generalisation).
    standardize : z-score the features with the training mean and std before the linear layer.
    select_by : "worst_group" (worst validation-group accuracy) or "average" (validation accuracy)
        to pick the epoch kept; without a validation set the last epoch is kept.
    n_threads : torch CPU threads during fit (restored afterwards); None leaves torch's setting.
        The model is tiny, so extra threads only cost synchronisation.
    random_state : seeds the initialisation and the minibatch order.

    Attributes after fit: `linear_` (nn.Linear), `q_` [G] final group weights, `group_ids_` [G] the
    training group ids in q's order, `history_` (per-epoch dicts), `best_epoch_`, `best_score_`.
    """

    def __init__(
        self,
        robust: bool = True,
        eta: float = 0.01,
        adjustment: float = 0.0,
        epochs: int = 50,
        batch_size: int = 256,
        lr: float = 1e-2,
        weight_decay: float = 1e-3,
        standardize: bool = True,
        select_by: str = "worst_group",
        n_threads: int | None = 1,
        random_state: int = 0,
    ) -> None:
        self.robust = robust
        self.eta = eta
        self.adjustment = adjustment
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.standardize = standardize
        self.select_by = select_by
        self.n_threads = n_threads
        self.random_state = random_state

    def _check_params(self) -> None:
        if self.select_by not in SELECT_BY:
            raise ValueError(f"select_by must be one of {SELECT_BY}, got {self.select_by!r}")
        if self.eta < 0 or self.adjustment < 0:
            raise ValueError(f"eta and adjustment must be >= 0, got {self.eta} and {self.adjustment}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}")

    def _features(self, X: np.ndarray) -> Tensor:
        return torch.as_tensor((X - self.mean_) / self.std_, dtype=torch.float32)

    def fit(
        self,
        X: Any,
        y: Any,
        groups: Any | None = None,
        *,
        X_val: Any | None = None,
        y_val: Any | None = None,
        groups_val: Any | None = None,
    ) -> "GroupDRO":
        """Train on X [N, D], labels y [N], groups [N] (required when robust); validate on X_val."""
        threads = torch.get_num_threads()
        if self.n_threads is not None:
            torch.set_num_threads(self.n_threads)
        try:
            return self._fit(X, y, groups, X_val, y_val, groups_val)
        finally:
            torch.set_num_threads(threads)

    def _fit(self, X, y, groups, X_val, y_val, groups_val) -> "GroupDRO":
        self._check_params()
        X = check_embeddings(X)
        y = check_labels(y, len(X), "y")
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError(f"y holds a single class ({self.classes_.tolist()}); a classifier needs two or more")
        if groups is None:
            if self.robust:
                raise ValueError("Group DRO needs groups [N]; pass them or use robust=False (ERM)")
            groups = np.zeros(len(X), dtype=np.int64)
        groups = check_labels(groups, len(X), "groups")
        self.group_ids_, g = np.unique(groups, return_inverse=True)
        n_g = np.bincount(g)
        validate = X_val is not None
        if validate:
            X_val = check_embeddings(X_val, "X_val")
            y_val = check_labels(y_val, len(X_val), "y_val")
            if self.select_by == "worst_group":
                if groups_val is None:
                    raise ValueError("select_by='worst_group' needs groups_val [N_val]")
                groups_val = check_labels(groups_val, len(X_val), "groups_val")

        self.mean_ = X.mean(axis=0) if self.standardize else np.zeros(X.shape[1])
        self.std_ = X.std(axis=0) + 1e-8 if self.standardize else np.ones(X.shape[1])
        to_index = {c: i for i, c in enumerate(self.classes_)}
        targets = torch.as_tensor([to_index[c] for c in y], dtype=torch.int64)
        features, g = self._features(X), torch.as_tensor(g)

        generator = torch.Generator().manual_seed(self.random_state)
        linear = nn.utils.skip_init(nn.Linear, X.shape[1], len(self.classes_))
        with torch.no_grad():  # nn.Linear's own init, drawn from our generator, not the global one
            bound = 1.0 / np.sqrt(X.shape[1])
            for p in linear.parameters():
                p.copy_(torch.rand(p.shape, generator=generator) * 2 * bound - bound)
        optimizer = torch.optim.Adam(linear.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        q = torch.full((len(n_g),), 1.0 / len(n_g))
        adjust = torch.as_tensor(self.adjustment / np.sqrt(n_g), dtype=torch.float32)

        self.history_, best_state, self.best_score_, self.best_epoch_ = [], None, -np.inf, self.epochs - 1
        for epoch in range(self.epochs):
            for batch in torch.randperm(len(X), generator=generator).split(self.batch_size):
                losses = nn.functional.cross_entropy(linear(features[batch]), targets[batch], reduction="none")
                if self.robust:
                    q, loss = dro_step(q, losses, g[batch], self.eta, adjust)
                else:
                    loss = losses.mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            self.linear_, self.q_ = linear, q.clone()
            record = {"epoch": epoch, "q": q.tolist()}
            if validate:
                pred = self.predict(X_val)
                record["val_accuracy"] = float((pred == y_val).mean())
                if groups_val is not None:
                    record["val_worst_group_accuracy"] = worst_group_accuracy(y_val, pred, groups_val)
                score = record["val_worst_group_accuracy" if self.select_by == "worst_group" else "val_accuracy"]
                if score > self.best_score_:  # ties keep the earlier epoch
                    best_state = {k: v.clone() for k, v in linear.state_dict().items()}
                    self.best_score_, self.best_epoch_ = score, epoch
            self.history_.append(record)
        if best_state is not None:
            linear.load_state_dict(best_state)
        self.linear_ = linear.eval()
        return self

    # --- prediction ----------------------------------------------------------------------
    def decision_function(self, X: Any) -> np.ndarray:
        """Logits [M, K] for X [M, D]."""
        if not hasattr(self, "linear_"):
            raise ValueError("this GroupDRO is not fitted yet; call fit first")
        X = check_embeddings(X)
        if X.shape[1] != len(self.mean_):
            raise ValueError(f"X has {X.shape[1]} features, the model was fitted on {len(self.mean_)}")
        with torch.no_grad():
            return self.linear_(self._features(X)).double().numpy()

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities [M, K], columns in the order of `classes_`."""
        logits = self.decision_function(X)
        logits = logits - logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted class ids [M]."""
        return self.classes_[self.decision_function(X).argmax(axis=1)]
