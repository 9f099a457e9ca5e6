"""Unsupervised strata recovery: cluster each class of an embedding into pseudo-strata.

The paper's Section 5.2 follows GEORGE (Sohoni et al. 2020, "No Subclass Left Behind"): train on
class labels, then, separately within every class, optionally project the training embeddings
with UMAP (2 components, 10 neighbours, min_dist 0) and cluster them; the number of clusters k is
the one in `k_range` with the highest mean of per-cluster silhouette scores (each cluster's mean
silhouette, then averaged over clusters, so a small tight cluster counts as much as a large one).
The clusters become pseudo-groups for Group DRO (`spreadcon.apps.gdro`).

A known limit of the silhouette criterion: a rare stratum close to a large one barely dents the
mean silhouette when merged into it, so k is often chosen too small (on the `strata` dataset with
its default stratum_sep=1.5, k = 2 wins in classes of three strata; at stratum_sep=5 all are found).

    rec = StrataRecovery(reducer=None, clusterer="kmeans").fit(X, y)   # X [N, D], y [N]
    rec.pseudo_groups_                         # [N] global pseudo-group ids, 0..n_groups_-1
    rec.predict(X_val, y_val)                  # [M] pseudo-groups of new points (class known)
    StrataRecovery(overcluster=True)           # GEORGE's overclustering: split clusters where it helps
    recovery_scores(stratum, rec.pseudo_groups_)   # best-match precision/recall/F1, ARI, AMI

Works on numpy arrays (or anything `np.asarray` accepts, torch tensors included); no torch needed.
Inputs are checked by `spreadcon.apps.checks`: X finite [N, D] with N >= 1, y integer ids >= 0 [N];
new points must have the D features seen in fit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score, silhouette_samples
from sklearn.mixture import GaussianMixture
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from spreadcon.apps.checks import check_embeddings, check_features, check_labels

__all__ = ["StrataRecovery", "best_match_scores", "check_embeddings", "check_labels", "mean_cluster_silhouette",
           "recovery_scores"]

REDUCERS = ("umap", None)
CLUSTERERS = ("gmm", "kmeans")


def mean_cluster_silhouette(X: np.ndarray, labels: np.ndarray) -> float:
    """GEORGE's score: the mean over clusters of each cluster's mean silhouette; -1 if < 2 clusters."""
    present = np.unique(labels)
    if len(present) < 2 or len(present) >= len(labels):
        return -1.0
    s = silhouette_samples(X, labels)
    return float(np.mean([s[labels == c].mean() for c in present]))


class ClassClustering:
    """The fitted clustering of one class: a base clusterer, and with overclustering the
    sub-clusterers of its clusters and the map from (cluster, sub-cluster) to the final ids.

    `predict(Z)` gives ids 0..n_clusters-1 within the class for reduced points Z [n, d]."""

    def __init__(self, base: Any, k: int) -> None:
        self.base, self.n_clusters = base, k
        self.subs: dict[int, Any] = {}            # base cluster -> sub-clusterer
        self.label_map: dict[tuple[int, int], int] | None = None

    def predict(self, Z: np.ndarray) -> np.ndarray:
        labels = self.base.predict(Z)
        if self.label_map is None:
            return labels
        out = np.empty(len(Z), dtype=np.int64)
        for i in np.unique(labels):
            rows = labels == i
            sub = self.subs[i].predict(Z[rows]) if i in self.subs else np.zeros(rows.sum(), dtype=np.int64)
            out[rows] = [self.label_map[(int(i), int(j))] for j in sub]
        return out


class StrataRecovery(BaseEstimator):
    """Per-class UMAP + silhouette-selected clustering, after GEORGE (Sohoni et al. 2020).

    Parameters
    ----------
    reducer : "umap" or None. UMAP settings follow GEORGE: `n_components`, `n_neighbors`,
        `min_dist`. With None the clusterer sees the embeddings as they are.
    clusterer : "gmm" (Gaussian mixture, full covariance; GEORGE's default) or "kmeans".
    k_range : (k_min, k_max), inclusive, searched separately in every class (GEORGE's per-class
        search). k_min == k_max fixes k (no search); otherwise 2 <= k_min and each class keeps
        the k with the best `mean_cluster_silhouette`.
    overcluster : GEORGE's overclustering. Each chosen cluster is split into `overcluster_factor`
        sub-clusters; a sub-cluster is kept as a group of its own when its points' mean
        silhouette after the split exceeds both their mean before it and `overcluster_threshold`,
        and it holds at least max(`overcluster_min_fraction` * n_class, `overcluster_min_size`)
        points; the points of the sub-clusters not kept stay together as their cluster.
    n_init : restarts of the clusterer for each k.
    max_silhouette_points : the silhouette (O(n^2)) is scored on a seeded subsample of at most
        this many points of the class; the clustering itself uses every point.
    n_threads : BLAS/OpenMP threads while fitting (threadpoolctl; not torch's threads); None keeps
        the libraries' default. 1 by default: these fits are small, and on a loaded machine
        spinning OpenMP threads make scikit-learn's k-means and mixtures tens of times slower.
    random_state : seeds UMAP, the clusterer and the subsample. Same seed, same result.

    Attributes after `fit(X, y)`
    ----------------------------
    classes_ : [C] the class ids, sorted.
    n_clusters_ : [C] the number of groups of each class (after overclustering).
    silhouettes_ : list of C dicts {k: score} (empty when k is fixed).
    group_offsets_ : [C] first pseudo-group id of each class; class c owns
        group_offsets_[c] .. group_offsets_[c] + n_clusters_[c] - 1.
    group_class_ : [G] the class of each pseudo-group.  n_groups_ : G.
    pseudo_groups_ : [N] the pseudo-group of each training point.
    embedding_ : [N, n_components] the reduced coordinates (X itself without a reducer).
    reducers_, clusterings_ : the fitted per-class models (`ClassClustering`).
    """

    def __init__(
        self,
        reducer: str | None = "umap",
        n_components: int = 2,
        n_neighbors: int = 10,
        min_dist: float = 0.0,
        clusterer: str = "gmm",
        k_range: tuple[int, int] = (2, 10),
        *,
        overcluster: bool = False,
        overcluster_factor: int = 5,
        overcluster_threshold: float = 0.0,
        overcluster_min_fraction: float = 0.005,
        overcluster_min_size: int = 25,
        n_init: int = 3,
        max_silhouette_points: int = 5000,
        n_threads: int | None = 1,
        random_state: int = 0,
    ) -> None:
        self.reducer = reducer
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.clusterer = clusterer
        self.k_range = k_range
        self.overcluster = overcluster
        self.overcluster_factor = overcluster_factor
        self.overcluster_threshold = overcluster_threshold
        self.overcluster_min_fraction = overcluster_min_fraction
        self.overcluster_min_size = overcluster_min_size
        self.n_init = n_init
        self.max_silhouette_points = max_silhouette_points
        self.n_threads = n_threads
        self.random_state = random_state

    # --- parameters ----------------------------------------------------------------------
    def _check_params(self) -> tuple[int, int]:
        if self.reducer not in REDUCERS:
            raise ValueError(f"reducer must be one of {REDUCERS}, got {self.reducer!r}")
        if self.clusterer not in CLUSTERERS:
            raise ValueError(f"clusterer must be one of {CLUSTERERS}, got {self.clusterer!r}")
        k_min, k_max = (int(k) for k in self.k_range)
        if not 1 <= k_min <= k_max:
            raise ValueError(f"k_range must be (k_min, k_max) with 1 <= k_min <= k_max, got {self.k_range}")
        if k_min < 2 and k_max > k_min:
            raise ValueError("the silhouette is undefined for one cluster: search k_range from 2, "
                             "or fix k with k_range=(1, 1)")
        if self.overcluster and int(self.overcluster_factor) < 2:
            raise ValueError(f"overcluster_factor must be >= 2, got {self.overcluster_factor}")
        return k_min, k_max

    def _new_clusterer(self, k: int) -> GaussianMixture | KMeans:
        if self.clusterer == "gmm":
            return GaussianMixture(n_components=k, n_init=self.n_init, random_state=self.random_state)
        return KMeans(n_clusters=k, n_init=self.n_init, random_state=self.random_state)

    def _new_reducer(self):
        try:
            import umap  # slow to import (numba); only when asked for
        except ImportError as err:
            raise ImportError("reducer='umap' needs umap-learn: pip install 'spreadcon[apps]', "
                              "or use reducer=None") from err

        return umap.UMAP(n_components=self.n_components, n_neighbors=self.n_neighbors,
                         min_dist=self.min_dist, random_state=self.random_state, n_jobs=1)

    # --- fitting -------------------------------------------------------------------------
    def _subsample(self, n: int) -> np.ndarray:
        if n <= self.max_silhouette_points:
            return np.arange(n)
        rng = np.random.default_rng(self.random_state)
        return np.sort(rng.choice(n, self.max_silhouette_points, replace=False))

    def _fit_class(self, Z: np.ndarray, k_min: int, k_max: int) -> tuple[ClassClustering, dict[int, float]]:
        """The best clustering of one class's reduced points Z [n, d], and the silhouette per k."""
        if k_min == k_max:
            best, scores = self._new_clusterer(k_min).fit(Z), {}
        else:
            sub = self._subsample(len(Z))
            best, best_k, scores = None, k_min, {}
            for k in range(k_min, k_max + 1):
                model = self._new_clusterer(k).fit(Z)
                scores[k] = mean_cluster_silhouette(Z[sub], model.predict(Z[sub]))
                if best is None or scores[k] > scores[best_k]:  # ties keep the smaller k
                    best, best_k = model, k
        k = best.n_components if self.clusterer == "gmm" else best.n_clusters
        clustering = ClassClustering(best, int(k))
        if self.overcluster:
            self._overcluster(clustering, Z)
        return clustering, scores

    def _overcluster(self, clustering: ClassClustering, Z: np.ndarray) -> None:
        """GEORGE's overclustering of one class (see the class docstring), in place."""
        factor = int(self.overcluster_factor)
        base = clustering.base.predict(Z)
        fine = base * factor
        for i in np.unique(base):
            rows = base == i
            if rows.sum() > factor:  # too few points to split: the cluster stays whole
                clustering.subs[int(i)] = self._new_clusterer(factor).fit(Z[rows])
                fine[rows] += clustering.subs[int(i)].predict(Z[rows])
        sub = self._subsample(len(Z))
        before = silhouette_samples(Z[sub], base[sub]) if len(np.unique(base[sub])) > 1 else np.zeros(len(sub))
        after = silhouette_samples(Z[sub], fine[sub]) if len(np.unique(fine[sub])) > 1 else np.zeros(len(sub))
        min_size = max(self.overcluster_min_fraction * len(Z), self.overcluster_min_size)
        keep = {int(f) for f in np.unique(fine[sub])
                if after[fine[sub] == f].mean() > max(before[fine[sub] == f].mean(), self.overcluster_threshold)
                and (fine == f).sum() >= min_size}
        label_map, next_id = {}, 0
        for i in range(clustering.n_clusters):
            members = [j for j in range(factor) if i * factor + j in keep]
            rest_id = None
            if len(members) < factor:  # the sub-clusters not kept stay together
                rest_id, next_id = next_id, next_id + 1
            for j in range(factor):
                if j in members:
                    label_map[(i, j)], next_id = next_id, next_id + 1
                else:
                    label_map[(i, j)] = rest_id
        clustering.label_map, clustering.n_clusters = label_map, next_id

    def fit(self, X: Any, y: Any) -> "StrataRecovery":
        """Cluster each class of X [N, D] (labels y [N]) into pseudo-strata."""
        with threadpool_limits(self.n_threads):
            return self._fit(X, y)

    def _check_class_sizes(self, y: np.ndarray, k_max: int) -> None:
        for c in self.classes_:
            n_c = int((y == c).sum())
            if n_c <= k_max:
                raise ValueError(f"class {c} has {n_c} points but up to k={k_max} clusters are asked "
                                 f"(the silhouette needs more points than clusters); lower k_range")
            if self.reducer == "umap" and n_c <= self.n_neighbors:
                raise ValueError(f"class {c} has {n_c} points, too few for UMAP with "
                                 f"n_neighbors={self.n_neighbors}; lower it or use reducer=None")

    def _fit(self, X: Any, y: Any) -> "StrataRecovery":
        k_min, k_max = self._check_params()
        X = check_embeddings(X)
        y = check_labels(y, len(X), "y")
        self.classes_ = np.unique(y)
        self.n_features_in_ = X.shape[1]
        self._check_class_sizes(y, k_max)
        dim = self.n_components if self.reducer == "umap" else X.shape[1]
        self.embedding_ = np.zeros((len(X), dim))
        self.pseudo_groups_ = np.zeros(len(X), dtype=np.int64)
        self.reducers_, self.clusterings_, self.silhouettes_ = [], [], []
        n_clusters, offset = [], 0
        for c in self.classes_:
            rows = y == c
            reducer = self._new_reducer().fit(X[rows]) if self.reducer == "umap" else None
            Z = reducer.embedding_ if reducer is not None else X[rows]
            clustering, scores = self._fit_class(Z, k_min, k_max)
            self.reducers_.append(reducer)
            self.clusterings_.append(clustering)
            self.silhouettes_.append(scores)
            self.embedding_[rows] = Z
            self.pseudo_groups_[rows] = offset + clustering.predict(Z)
            n_clusters.append(clustering.n_clusters)
            offset += clustering.n_clusters
        self.n_clusters_ = np.array(n_clusters)
        self.group_offsets_ = np.concatenate([[0], np.cumsum(self.n_clusters_)[:-1]])
        self.group_class_ = np.repeat(self.classes_, self.n_clusters_)
        self.n_groups_ = int(offset)
        return self

    def fit_predict(self, X: Any, y: Any) -> np.ndarray:
        return self.fit(X, y).pseudo_groups_

    # --- new points ----------------------------------------------------------------------
    def _check_fitted(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        check_is_fitted(self, "classes_")
        X = check_embeddings(X)
        y = check_labels(y, len(X), "y")
        check_features(X, self.n_features_in_)
        unknown = np.setdiff1d(np.unique(y), self.classes_)
        if len(unknown):
            raise ValueError(f"classes {unknown.tolist()} were not seen in fit; "
                             f"known classes are {self.classes_.tolist()}")
        return X, y

    def transform(self, X: Any, y: Any) -> np.ndarray:
        """Reduced coordinates [M, n_components] of new points X [M, D] with classes y [M]."""
        X, y = self._check_fitted(X, y)
        return self._transform(X, y)

    def _transform(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        out = np.zeros((len(X), self.embedding_.shape[1]))
        for i, c in enumerate(self.classes_):
            rows = y == c
            if rows.any():
                reducer = self.reducers_[i]
                out[rows] = X[rows] if reducer is None else reducer.transform(X[rows])
        return out

    def predict(self, X: Any, y: Any) -> np.ndarray:
        """Pseudo-groups [M] of new points X [M, D] whose classes y [M] are known."""
        X, y = self._check_fitted(X, y)
        with threadpool_limits(self.n_threads):
            Z = self._transform(X, y)
            out = np.zeros(len(Z), dtype=np.int64)
            for i, c in enumerate(self.classes_):
                rows = y == c
                if rows.any():
                    out[rows] = self.group_offsets_[i] + self.clusterings_[i].predict(Z[rows])
        return out


def best_match_scores(true: Any, pred: Any, average: str = "macro") -> dict[str, float]:
    """Best-match precision, recall and F1 of clusters `pred` [N] against true strata `true` [N].

    For a true stratum S and a cluster C: precision = |S ∩ C| / |C|, recall = |S ∩ C| / |S|,
    F1 = 2 PR / (P + R). Each true stratum is matched with the cluster of highest F1 with it
    (several strata may match the same cluster). The scores are the precision, recall and F1 of
    those best matches, averaged over the true strata: unweighted ("macro", default, so a rare
    stratum counts as much as a common one) or weighted by stratum size ("weighted").

    Example: true [0,0,0,0,1,1], pred [0,0,0,1,1,1]. Stratum 0 (4 points) vs cluster 0: P = 1,
    R = 3/4, F1 = 6/7; vs cluster 1: P = 1/3, R = 1/4, F1 = 2/7 -> cluster 0. Stratum 1 vs
    cluster 1: P = 2/3, R = 1, F1 = 4/5. Macro F1 = (6/7 + 4/5) / 2 = 58/70.
    """
    if average not in ("macro", "weighted"):
        raise ValueError(f"average must be 'macro' or 'weighted', got {average!r}")
    true = np.asarray(true)
    if true.ndim != 1 or len(true) == 0:
        raise ValueError(f"true must be a 1-d array of strata ids with at least one row, got shape {true.shape}")
    pred = check_labels(pred, len(true), "pred", nonnegative=False)  # e.g. -1 for noise of a clusterer
    true = check_labels(true, len(true), "true", nonnegative=False)
    strata, t = np.unique(true, return_inverse=True)
    clusters, p = np.unique(pred, return_inverse=True)
    counts = np.zeros((len(strata), len(clusters)))
    np.add.at(counts, (t, p), 1)
    precision = counts / counts.sum(axis=0, keepdims=True)
    recall = counts / counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(counts > 0, 2 * precision * recall / (precision + recall), 0.0)
    best = f1.argmax(axis=1)
    rows = np.arange(len(strata))
    sizes = counts.sum(axis=1)
    weights = sizes / sizes.sum() if average == "weighted" else np.full(len(strata), 1 / len(strata))
    return {
        "precision": float(weights @ precision[rows, best]),
        "recall": float(weights @ recall[rows, best]),
        "f1": float(weights @ f1[rows, best]),
    }


def recovery_scores(true: Any, pred: Any, average: str = "macro") -> dict[str, float]:
    """Best-match precision/recall/F1 (see `best_match_scores`), ARI and AMI of `pred` vs `true`.

    true, pred : [N] integer ids (true strata or groups; recovered pseudo-groups).
    ARI and AMI are scikit-learn's, computed over all N points at once.
    """
    scores = best_match_scores(true, pred, average)
    scores["ari"] = float(adjusted_rand_score(true, pred))
    scores["ami"] = float(adjusted_mutual_info_score(true, pred))
    return scores
