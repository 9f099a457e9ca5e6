"""`strata`: vectors from the paper's generative model of strata (Section 2.1).

K classes, each with m strata (C = K * m); stratum c has label S(c) = c // m. A point draws its
stratum z from p(z), then x ~ N(mu_z, noise^2 I) in R^d. Classes are balanced (p(y) = 1/K);
inside a class, strata have the relative weights `stratum_probs` (default: m - 1 common strata
and one rare one with weight `rare`). Centres:

    mu_k      = class_sep   * u_k                       (u_k random unit vectors)
    mu_(k,j)  = mu_k + stratum_sep * v_(k,j)            (v_(k,j) random unit vectors)

so strata of one class are distinct clusters around their class centre. Counts are allocated
exactly (largest remainder), so even a small n contains every rare stratum in expectation's
proportion; rows are shuffled, then split like every dataset (test, then 10% of train for val).

    x [n, d] float32, label [n], stratum [n] (= k * m + j)
"""

from __future__ import annotations

import numpy as np
import torch

from spreadcon.data.base import StrataDataset
from spreadcon.data.splits import allocate, check_fraction, train_val_test


def strata(seed: int = 0, *, n: int = 3000, K: int = 2, m: int = 3, d: int = 16,
           stratum_probs: list[float] | None = None, rare: float = 0.1, class_sep: float = 3.0,
           stratum_sep: float = 1.5, noise: float = 0.5, test_fraction: float = 0.2,
           val_fraction: float = 0.1) -> StrataDataset:
    if K < 2 or m < 1 or d < 1 or n < K * m:
        raise ValueError(f"strata needs K >= 2, m >= 1, d >= 1 and n >= K * m; got K={K}, m={m}, d={d}, n={n}")
    if min(class_sep, stratum_sep, noise) < 0 or not 0 < rare:
        raise ValueError("class_sep, stratum_sep and noise must be >= 0 and rare > 0")
    weights = np.array(stratum_probs if stratum_probs is not None else [1.0] * (m - 1) + [rare], dtype=float)
    if weights.shape != (m,) or (weights <= 0).any():
        raise ValueError(f"stratum_probs must be {m} positive weights (one per stratum of a class), got {stratum_probs}")
    check_fraction("test_fraction", test_fraction)
    check_fraction("val_fraction", val_fraction, allow_zero=True)

    rng = np.random.default_rng(seed)
    unit = lambda *shape: (v := rng.standard_normal((*shape, d))) / np.linalg.norm(v, axis=-1, keepdims=True)
    centres = class_sep * unit(K)[:, None, :] + stratum_sep * unit(K, m)  # [K, m, d]
    per_class = allocate(n, np.ones(K))
    counts = np.concatenate([allocate(int(c), weights) for c in per_class])  # [K * m]
    stratum = rng.permutation(np.repeat(np.arange(K * m), counts))
    x = centres.reshape(K * m, d)[stratum] + noise * rng.standard_normal((n, d))

    stratum_t = torch.from_numpy(stratum.astype(np.int64))
    probs = (weights / weights.sum() / K).round(6).tolist()
    return StrataDataset(
        name="strata", x=torch.from_numpy(x.astype(np.float32)), label=stratum_t // m,
        stratum=stratum_t, split=train_val_test(stratum_t, test_fraction, val_fraction, seed),
        class_names=[f"class {k}" for k in range(K)],
        stratum_names=[f"class {k} / stratum {j}" for k in range(K) for j in range(m)],
        meta={"stratum_probs": probs * K, "centres": centres.reshape(K * m, d).round(6).tolist()},
    )
