"""Strata recovery (spreadcon.apps.strata): planted strata are found, scores match their definition."""

from __future__ import annotations

import numpy as np
import pytest

from spreadcon.apps.strata import StrataRecovery, best_match_scores, mean_cluster_silhouette, recovery_scores


def planted(seed: int = 0, sizes=((200, 120, 15), (150, 150)), dim: int = 8, spread: float = 20.0):
    """Gaussian blobs: class c has strata of the given sizes, centres `spread` apart (unit noise).

    Returns X [N, dim], y [N] class, s [N] global stratum id. The last stratum of class 0 is rare.
    """
    rng = np.random.default_rng(seed)
    X, y, s, sid = [], [], [], 0
    for c, strata in enumerate(sizes):
        for n in strata:
            centre = rng.normal(size=dim)
            centre *= spread / np.linalg.norm(centre)
            X.append(centre + rng.normal(size=(n, dim)))
            y += [c] * n
            s += [sid] * n
            sid += 1
    return np.concatenate(X), np.array(y), np.array(s)


@pytest.mark.parametrize("clusterer", ["gmm", "kmeans"])
def test_recovers_planted_strata_including_a_rare_one(clusterer):
    X, y, s = planted()
    rec = StrataRecovery(reducer=None, clusterer=clusterer, k_range=(2, 6)).fit(X, y)
    assert rec.n_clusters_.tolist() == [3, 2]
    scores = recovery_scores(s, rec.pseudo_groups_)
    assert scores["ari"] > 0.9 and scores["ami"] > 0.9 and scores["f1"] > 0.95
    rare = s == 2  # 15 points out of 335 in class 0
    assert len(np.unique(rec.pseudo_groups_[rare])) == 1
    assert (rec.pseudo_groups_ == rec.pseudo_groups_[rare][0]).sum() == rare.sum()


def test_pseudo_groups_are_nested_in_classes_and_numbered_globally():
    X, y, _ = planted()
    rec = StrataRecovery(reducer=None, clusterer="kmeans", k_range=(2, 4)).fit(X, y)
    assert rec.n_groups_ == rec.n_clusters_.sum() == len(rec.group_class_)
    assert rec.group_offsets_.tolist() == [0, rec.n_clusters_[0]]
    assert np.array_equal(rec.group_class_[rec.pseudo_groups_], y)
    assert sorted(rec.silhouettes_[0]) == [2, 3, 4]
    assert max(rec.silhouettes_[0], key=rec.silhouettes_[0].get) == rec.n_clusters_[0]


def test_predict_on_the_training_points_gives_the_fitted_groups_and_new_points_follow():
    X, y, s = planted(seed=0)
    rec = StrataRecovery(reducer=None, clusterer="gmm", k_range=(2, 5)).fit(X, y)
    assert np.array_equal(rec.predict(X, y), rec.pseudo_groups_)
    # fresh draws around the same centres land in the matching pseudo-groups
    rng = np.random.default_rng(5)
    idx = rng.choice(len(X), 100, replace=False)
    X_new = X[idx] + 0.1 * rng.normal(size=(100, X.shape[1]))
    assert recovery_scores(s[idx], rec.predict(X_new, y[idx]))["ari"] > 0.9
    assert rec.transform(X_new, y[idx]).shape == (100, X.shape[1])


def test_same_seed_same_groups():
    X, y, _ = planted(sizes=((60, 60), (60, 40)), spread=2.0)  # overlapping: the seed matters
    a = StrataRecovery(reducer=None, k_range=(2, 5), random_state=3).fit(X, y).pseudo_groups_
    b = StrataRecovery(reducer=None, k_range=(2, 5), random_state=3).fit(X, y).pseudo_groups_
    assert np.array_equal(a, b)


def test_fixed_k_skips_the_search():
    X, y, _ = planted()
    rec = StrataRecovery(reducer=None, clusterer="kmeans", k_range=(4, 4)).fit(X, y)
    assert rec.n_clusters_.tolist() == [4, 4] and rec.silhouettes_ == [{}, {}]


@pytest.mark.slow  # UMAP's numba JIT takes ~30 s of CPU on first use
def test_umap_path_recovers_separated_strata():
    X, y, s = planted(sizes=((120, 60), (100, 80)), dim=16)
    rec = StrataRecovery(reducer="umap", clusterer="kmeans", k_range=(2, 4)).fit(X, y)
    assert rec.embedding_.shape == (len(X), 2)
    assert recovery_scores(s, rec.pseudo_groups_)["ari"] > 0.9
    assert rec.transform(X[:5], y[:5]).shape == (5, 2)


def test_best_match_f1_on_a_hand_made_example():
    # docstring example: stratum 0 -> cluster 0 (P 1, R 3/4), stratum 1 -> cluster 1 (P 2/3, R 1)
    true = [0, 0, 0, 0, 1, 1]
    pred = [0, 0, 0, 1, 1, 1]
    scores = best_match_scores(true, pred)
    assert scores["f1"] == pytest.approx((6 / 7 + 4 / 5) / 2)
    assert scores["precision"] == pytest.approx((1 + 2 / 3) / 2)
    assert scores["recall"] == pytest.approx((3 / 4 + 1) / 2)
    weighted = best_match_scores(true, pred, average="weighted")
    assert weighted["f1"] == pytest.approx(4 / 6 * 6 / 7 + 2 / 6 * 4 / 5)


def test_best_match_f1_edge_cases():
    labels = np.array([3, 3, 7, 7, 7, 9])
    assert best_match_scores(labels, labels + 100)["f1"] == pytest.approx(1.0)  # ids need not agree
    # one cluster for everything: each stratum matches it with recall 1
    merged = best_match_scores([0, 0, 0, 1], [5, 5, 5, 5])
    assert merged["recall"] == 1.0 and merged["precision"] == pytest.approx((3 / 4 + 1 / 4) / 2)
    # all singletons: precision 1, recall 1/|S|
    single = best_match_scores([0, 0, 1, 1], [0, 1, 2, 3])
    assert single["precision"] == 1.0 and single["recall"] == 0.5


def test_f1_loop_oracle_on_random_labels():
    rng = np.random.default_rng(0)
    true, pred = rng.integers(0, 4, 200), rng.integers(0, 6, 200)
    f1s = []
    for t in np.unique(true):
        best = 0.0
        for c in np.unique(pred):
            inter = np.sum((true == t) & (pred == c))
            p, r = inter / np.sum(pred == c), inter / np.sum(true == t)
            best = max(best, 0.0 if inter == 0 else 2 * p * r / (p + r))
        f1s.append(best)
    assert best_match_scores(true, pred)["f1"] == pytest.approx(np.mean(f1s))


def test_mean_cluster_silhouette_weights_clusters_equally():
    X = np.array([[0.0], [0.1], [0.2], [0.3], [10.0]])
    labels = np.array([0, 0, 0, 0, 1])
    # the singleton's silhouette is 0 by convention; the big cluster's is near 1
    assert mean_cluster_silhouette(X, labels) == pytest.approx(0.5, abs=0.02)
    assert mean_cluster_silhouette(X, np.zeros(5, dtype=int)) == -1.0


# --- bad input -------------------------------------------------------------------------------
def test_too_few_points_for_the_clusters_asked():
    X, y, _ = planted(sizes=((100,), (8,)))
    with pytest.raises(ValueError, match="class 1 has 8 points"):
        StrataRecovery(reducer=None, k_range=(2, 10)).fit(X, y)


def test_nan_embeddings():
    X, y, _ = planted()
    X[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        StrataRecovery(reducer=None).fit(X, y)


def test_labels_that_do_not_match_the_data():
    X, y, s = planted()
    with pytest.raises(ValueError, match="one id per row"):
        StrataRecovery(reducer=None).fit(X, y[:-1])
    with pytest.raises(ValueError, match="one id per row"):
        recovery_scores(s, s[:-1])
    rec = StrataRecovery(reducer=None, k_range=(2, 3)).fit(X, y)
    with pytest.raises(ValueError, match="not seen in fit"):
        rec.predict(X[:3], np.array([0, 1, 2]))


def test_bad_parameters():
    X, y, _ = planted()
    for kwargs, msg in [({"reducer": "pca"}, "reducer"), ({"clusterer": "dbscan"}, "clusterer"),
                        ({"k_range": (3, 2)}, "k_range"), ({"k_range": (1, 4)}, "undefined")]:
        with pytest.raises(ValueError, match=msg):
            StrataRecovery(**kwargs).fit(X, y)
    with pytest.raises(ValueError, match="not fitted"):
        StrataRecovery().predict(X, y)


def test_recovers_the_strata_of_the_strata_dataset_rare_ones_included():
    data = pytest.importorskip("spreadcon.data")
    ds = data.load("strata", seed=0, stratum_sep=5.0).get_split("train")  # 2 classes x 3 strata, 1 rare
    X, y, s = ds.x.numpy(), ds.label.numpy(), ds.stratum.numpy()
    assert np.bincount(s).min() < 0.15 * np.bincount(s).max()  # the rare strata are there
    rec = StrataRecovery(reducer=None, clusterer="gmm", k_range=(2, 6)).fit(X, y)
    assert rec.n_clusters_.tolist() == [3, 3]
    scores = recovery_scores(s, rec.pseudo_groups_)
    assert scores["ari"] > 0.9 and scores["f1"] > 0.95


# --- scikit-learn conventions and GEORGE's options --------------------------------------------
def test_scikit_learn_conventions():
    from sklearn.base import clone
    from sklearn.exceptions import NotFittedError

    rec = StrataRecovery(reducer=None, k_range=(2, 4), overcluster=True, random_state=5)
    params = rec.get_params()
    assert params["k_range"] == (2, 4) and params["overcluster"] is True and params["random_state"] == 5
    assert clone(rec).get_params() == params
    with pytest.raises(NotFittedError):
        rec.predict(np.zeros((2, 8)), np.zeros(2, dtype=int))


def test_k_is_searched_separately_in_every_class():
    X, y, _ = planted(seed=1, sizes=((200, 200, 200, 200), (300, 300)))
    rec = StrataRecovery(reducer=None, clusterer="kmeans", k_range=(2, 6)).fit(X, y)
    assert rec.n_clusters_.tolist() == [4, 2]
    assert set(rec.silhouettes_[0]) == set(rec.silhouettes_[1]) == {2, 3, 4, 5, 6}


def test_overclustering_splits_a_cluster_that_hides_a_stratum():
    """Class 0: three blobs on a triangle, clustered with k fixed at 2, so two blobs share a
    cluster. Overclustering splits that cluster and keeps its parts (their silhouette rises from
    about 0.4 to 0.8), while the lone blob's halves are re-merged (theirs would fall)."""
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [5.0, 8.66]])
    X0 = np.concatenate([c + rng.normal(size=(150, 2)) for c in centres])
    X1 = rng.normal(size=(200, 2)) + [0.0, 60.0]
    X, y = np.concatenate([X0, X1]), np.repeat([0, 1], [450, 200])
    s = np.repeat([0, 1, 2, 3], [150, 150, 150, 200])
    plain = StrataRecovery(reducer=None, clusterer="kmeans", k_range=(2, 2)).fit(X, y)
    over = StrataRecovery(reducer=None, clusterer="kmeans", k_range=(2, 2), overcluster=True,
                          overcluster_factor=2, overcluster_min_size=25).fit(X, y)
    assert plain.n_clusters_.tolist() == [2, 2]
    assert over.n_clusters_[0] == 3
    assert recovery_scores(s[y == 0], over.pseudo_groups_[y == 0])["ari"] > 0.9
    assert np.array_equal(over.predict(X, y), over.pseudo_groups_)


def test_infinite_embeddings_are_refused_with_their_row_count():
    X, y, _ = planted()
    X[[3, 7], 0] = np.inf
    with pytest.raises(ValueError, match="2 rows with NaN or inf"):
        StrataRecovery(reducer=None).fit(X, y)
