"""The paper's generative model of strata (Section 2.1), and the `strata` dataset drawn from it.

K classes, each with m strata (C = K * m); stratum z = k * m + j has label S(z) = z // m. A point
draws its stratum z from p(z), then x ~ N(mu_z, noise^2 I) in R^d. Classes are balanced
(p(y) = 1/K); inside a class, strata have the relative weights `within`, so
p(z) = within[j] / sum(within) / K. Centres, drawn once from numpy's default_rng(seed):

    mu_k      = class_sep   * u_k                       (u_k random unit vectors)
    mu_(k,j)  = mu_k + stratum_sep * v_(k,j)            (v_(k,j) random unit vectors)

so strata of one class are distinct clusters around their class centre. `StrataModel` is the
model (used by spreadcon.theory for Section 4.1); `strata(...)` is the registered dataset: counts
allocated exactly (largest remainder), so even a small n holds every rare stratum in its
proportion; rows are shuffled, then split like every dataset (test, then 10% of train for val).

    x [n, d] float32, label [n], stratum [n] (= k * m + j)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from spreadcon.data.base import StrataDataset
from spreadcon.data.splits import allocate, check_fraction, train_val_test
from spreadcon.data.validate import as_number


@dataclass
class StrataModel:
    """Gaussian strata (Section 2.1). `within` [m]: positive relative weights of a class's strata.

    means [C, dim] float64 tensor (stratum z's centre mu_z), seeded by `seed`."""

    num_classes: int = 2
    within: tuple[float, ...] = (1.0, 1.0, 0.1)
    dim: int = 16
    class_sep: float = 3.0
    stratum_sep: float = 1.5
    noise: float = 0.5
    seed: int = 0
    means: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        k, d = (as_number(key, getattr(self, key), integer=True) for key in ("num_classes", "dim"))
        weights = [as_number("within", w) for w in self.within]
        if k < 2 or d < 1 or not weights or min(weights) <= 0:
            raise ValueError(f"the strata model needs num_classes >= 2, dim >= 1 and positive within-class "
                             f"weights; got num_classes={k}, dim={d}, within={self.within}")
        if min(as_number(key, getattr(self, key)) for key in ("class_sep", "stratum_sep", "noise")) < 0:
            raise ValueError("class_sep, stratum_sep and noise must be >= 0")
        self.num_classes, self.dim, self.within = k, d, tuple(weights)
        self.means = torch.from_numpy(self.draw_means(np.random.default_rng(self.seed)))

    @property
    def m(self) -> int:
        """Strata per class."""
        return len(self.within)

    @property
    def p(self) -> np.ndarray:
        """[C] stratum probabilities p(z); stratum z belongs to class z // m."""
        w = np.asarray(self.within, dtype=float)
        return np.tile(w / w.sum(), self.num_classes) / self.num_classes

    def draw_means(self, rng: np.random.Generator) -> np.ndarray:
        """[C, dim] centres from `rng` (the first draws of default_rng(seed) give `means`)."""
        def unit(*shape: int) -> np.ndarray:
            v = rng.standard_normal((*shape, self.dim))
            return v / np.linalg.norm(v, axis=-1, keepdims=True)

        centres = self.class_sep * unit(self.num_classes)[:, None, :] + self.stratum_sep * unit(self.num_classes, self.m)
        return centres.reshape(self.num_classes * self.m, self.dim)

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """n i.i.d. points: x [n, dim] float32, label [n], stratum [n] (int64)."""
        z = torch.multinomial(torch.as_tensor(self.p), n, replacement=True, generator=generator)
        return self.sample_strata(z, generator), z // self.m, z

    def sample_strata(self, z: Tensor, generator: torch.Generator) -> Tensor:
        """x [n, dim] float32 for given strata z [n]."""
        noise = torch.randn(len(z), self.dim, generator=generator, dtype=torch.float64)
        return (self.means[z] + self.noise * noise).float()


def strata(seed: int = 0, *, n: int = 3000, K: int = 2, m: int = 3, d: int = 16,
           stratum_probs: list[float] | None = None, rare: float = 0.1, class_sep: float = 3.0,
           stratum_sep: float = 1.5, noise: float = 0.5, test_fraction: float = 0.2,
           val_fraction: float = 0.1) -> StrataDataset:
    if K < 2 or m < 1 or d < 1 or n < K * m:
        raise ValueError(f"strata needs K >= 2, m >= 1, d >= 1 and n >= K * m; got K={K}, m={m}, d={d}, n={n}")
    if not 0 < rare:
        raise ValueError(f"rare must be > 0, got {rare}")
    weights = np.array(stratum_probs if stratum_probs is not None else [1.0] * (m - 1) + [rare], dtype=float)
    if weights.shape != (m,) or (weights <= 0).any():
        raise ValueError(f"stratum_probs must be {m} positive weights (one per stratum of a class), got {stratum_probs}")
    check_fraction("test_fraction", test_fraction)
    check_fraction("val_fraction", val_fraction, allow_zero=True)
    model = StrataModel(num_classes=K, within=tuple(weights), dim=d, class_sep=class_sep,
                        stratum_sep=stratum_sep, noise=noise, seed=seed)

    rng = np.random.default_rng(seed)
    centres = model.draw_means(rng)  # = model.means; rng continues from here for counts and noise
    per_class = allocate(n, np.ones(K))
    counts = np.concatenate([allocate(int(c), weights) for c in per_class])  # [K * m]
    stratum = rng.permutation(np.repeat(np.arange(K * m), counts))
    x = centres[stratum] + noise * rng.standard_normal((n, d))

    stratum_t = torch.from_numpy(stratum.astype(np.int64))
    return StrataDataset(
        name="strata", x=torch.from_numpy(x.astype(np.float32)), label=stratum_t // m,
        stratum=stratum_t, split=train_val_test(stratum_t, test_fraction, val_fraction, seed),
        class_names=[f"class {k}" for k in range(K)],
        stratum_names=[f"class {k} / stratum {j}" for k in range(K) for j in range(m)],
        meta={"stratum_probs": model.p.round(6).tolist(), "centres": centres.round(6).tolist()},
    )
