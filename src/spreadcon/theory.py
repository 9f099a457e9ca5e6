"""The paper's closed forms, and the subsampling thought experiment of Section 4.1.

Three pieces, each checkable against a simulation:

1. Appendix C.2: when an encoder is trained on a random subsample D_t of tN points, which of two
   strata z, z' appear in it. `presence_probabilities` is the closed form, `simulate_presence`
   draws subsamples and counts.
2. Appendix C.3, Lemma 3: collapsed embeddings (one regular-simplex vertex per class) pay at
   least log(m e + (C - m) e^{c_K}) - 1 on coarse-to-fine transfer and log(e + (K - 1) e^{c_K}) - 1
   on the original task. `collapsed_error` builds such embeddings and measures the error.
3. Section 4.1: train a small encoder on D_t for growing t and measure the distance between the
   centres of a common-common and a common-rare pair of strata of the same class
   (`thought_experiment`, `plot_thought_experiment`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from spreadcon.data.synthetic import StrataModel
from spreadcon.io import save_figure
from spreadcon.losses import LOSSES

CASES = ("both", "only_z", "only_z2", "neither")


# --- 1. Appendix C.2: which strata a subsample contains --------------------------------------
def _check_probs(p_z: float, p_z2: float) -> None:
    if not (0 <= p_z <= 1 and 0 <= p_z2 <= 1 and p_z + p_z2 <= 1 + 1e-12):
        raise ValueError(f"need p(z), p(z') in [0, 1] with p(z) + p(z') <= 1, got {p_z}, {p_z2}")


def presence_probabilities(p_z: float, p_z2: float, n: float | np.ndarray) -> dict[str, np.ndarray]:
    """Appendix C.2: probabilities that strata z, z' appear in n = tN i.i.d. draws from P.

    Pr(neither) = (1 - p(z) - p(z'))^n;  Pr(only z) = (1 - p(z'))^n - (1 - p(z) - p(z'))^n;
    Pr(both) = 1 + (1 - p(z) - p(z'))^n - (1 - p(z'))^n - (1 - p(z))^n.
    `n` may be an array (one entry per subsample size); each returned array has its shape.
    The four cases partition the outcomes, so they sum to 1.
    """
    _check_probs(p_z, p_z2)
    n = np.asarray(n, dtype=float)
    if np.any(n < 0):
        raise ValueError(f"the subsample size n = tN must be >= 0, got {n}")
    neither = (1 - p_z - p_z2) ** n
    only_z = (1 - p_z2) ** n - neither
    only_z2 = (1 - p_z) ** n - neither
    both = 1 + neither - (1 - p_z2) ** n - (1 - p_z) ** n
    return {"both": both, "only_z": only_z, "only_z2": only_z2, "neither": neither}


def simulate_presence(p: Sequence[float], z: int, z2: int, n: int, *, trials: int = 10000,
                      seed: int = 0, population: int | None = None) -> dict[str, float]:
    """Frequencies of the four C.2 cases over `trials` simulated subsamples of size n.

    p: [C] stratum distribution p(z). With population=None each subsample is n i.i.d. draws
    from p (the model C.2 assumes). With population=N the subsample is n points drawn without
    replacement from a fixed training set of N points holding round(N p) points per stratum
    (what subsampling a real dataset does; close to the i.i.d. model when n << N).
    """
    p = np.asarray(p, dtype=float)
    if p.ndim != 1 or np.any(p < 0) or abs(p.sum() - 1) > 1e-6:
        raise ValueError("p must be a 1-d probability vector over strata (non-negative, sums to 1)")
    if z == z2 or not (0 <= z < len(p) and 0 <= z2 < len(p)):
        raise ValueError(f"z and z' must be two different strata in [0, {len(p)}), got {z}, {z2}")
    rng = np.random.default_rng(seed)
    if population is None:
        counts = rng.multinomial(n, p / p.sum(), size=trials)  # [trials, C]
    else:
        sizes = np.round(p * population).astype(np.int64)
        if n > sizes.sum():
            raise ValueError(f"cannot draw n={n} points from a population of {sizes.sum()}")
        counts = rng.multivariate_hypergeometric(sizes, n, size=trials)
    a, b = counts[:, z] > 0, counts[:, z2] > 0
    return {"both": float(np.mean(a & b)), "only_z": float(np.mean(a & ~b)),
            "only_z2": float(np.mean(~a & b)), "neither": float(np.mean(~a & ~b))}


def presence_table(p: Sequence[float], pairs: dict[str, tuple[int, int]], fractions: Sequence[float],
                   n_train: int, *, trials: int = 10000, seed: int = 0) -> list[dict]:
    """C.2 closed form next to simulated frequencies (i.i.d. draws, and subsamples of a fixed
    n_train-point set), one row per pair, fraction t and case."""
    rows = []
    for name, (z, z2) in pairs.items():
        for t in fractions:
            n = max(1, round(t * n_train))
            closed = presence_probabilities(p[z], p[z2], n)
            iid = simulate_presence(p, z, z2, n, trials=trials, seed=seed)
            sub = simulate_presence(p, z, z2, n, trials=trials, seed=seed, population=n_train)
            rows += [{"pair": name, "t": t, "n": n, "case": c, "closed_form": float(closed[c]),
                      "simulated_iid": iid[c], "simulated_subsample": sub[c]} for c in CASES]
    return rows


# --- 2. Lemma 3: the error of collapsed embeddings --------------------------------------------
def simplex(k: int, *, dtype: torch.dtype = torch.float64) -> Tensor:
    """[K, K] vertices of a regular simplex on the unit sphere (Definition 1).

    Rows sum to 0, have norm 1, and pairwise dot products c_K = -1/(K-1). They live in the
    (K-1)-dimensional subspace orthogonal to the all-ones vector of R^K.
    """
    if k < 2:
        raise ValueError(f"a regular simplex needs K >= 2 vertices, got {k}")
    v = torch.eye(k, dtype=dtype) - 1.0 / k
    return v / v.norm(dim=1, keepdim=True)


def simplex_dot(k: int) -> float:
    """c_K = -1/(K-1), the dot product of two vertices of the regular K-simplex."""
    return -1.0 / (k - 1)


# The paper writes the bound as "log(m exp(1) + (C - m) exp(cK) - 1" (a parenthesis is lost) and,
# in the proof, "log sum_i exp(v_y^T W_i) = m exp(1) + ..." (a log is lost). The proof gives the
# exact error log(m e + (C - m) e^{c_K}) - c_K - (1 - c_K) E_z E_x[p(y = S(z) | x)], hence the
# lower bound "- 1" below, reached when labels are deterministic (p(y = S(z) | x) = 1), and an
# upper bound "- c_K". It assumes the classifier rows are norm-bounded (||W_z|| <= 1, Lemma 4
# then gives W_z = v_S(z)), strata class-balanced, m strata per class, C = K m, and K <= d + 1.
def coarse_to_fine_bound(k: int, m: int) -> float:
    """Lemma 3: coarse-to-fine error of collapsed embeddings >= log(m e + (C - m) e^{c_K}) - 1."""
    if m < 1:
        raise ValueError(f"need m >= 1 strata per class, got {m}")
    c, ck = k * m, simplex_dot(k)
    return math.log(m * math.e + (c - m) * math.exp(ck)) - 1


def original_task_bound(k: int) -> float:
    """Lemma 3: original-task error of collapsed embeddings >= log(e + (K - 1) e^{c_K}) - 1."""
    return coarse_to_fine_bound(k, 1)


def collapsed_exact_error(k: int, m: int, p_correct: float = 1.0) -> float:
    """The proof's exact error: log(m e + (C - m) e^{c_K}) - c_K - (1 - c_K) p_correct.

    p_correct = E_z E_x[p(y = S(z) | x)], the chance that a point's training label is its class.
    """
    ck = simplex_dot(k)
    return coarse_to_fine_bound(k, m) + 1 - ck - (1 - ck) * p_correct


def collapsed_error(k: int, m: int, *, p_correct: float = 1.0, n_per_stratum: int = 200,
                    fit_classifier: bool = False, steps: int = 300, seed: int = 0) -> float:
    """Measured error of collapsed embeddings on the stratum task (m = 1: the original task).

    Builds C = K m strata, n_per_stratum points each (class-balanced across z). A point of
    stratum z gets the training label S(z) with probability p_correct, otherwise a uniformly
    drawn other class, and the collapsed embedding f(x) = v_label (a simplex vertex). The error
    is the mean cross-entropy -log softmax(f(x)^T W)[z] of the linear classifier W [C, K] over
    these cosine logits: W_z = v_S(z) (Lemma 4's optimum), or with fit_classifier=True, W
    learned by projected gradient descent under ||W_z|| <= 1 (to check Lemma 4 numerically).
    """
    if not 0 <= p_correct <= 1:
        raise ValueError(f"p_correct must be in [0, 1], got {p_correct}")
    g = torch.Generator().manual_seed(seed)
    v = simplex(k)                                                    # [K, K]
    cls_of = torch.arange(k * m) // m                                 # S(z), [C]
    z = torch.arange(k * m).repeat_interleave(n_per_stratum)          # [n]
    label = cls_of[z].clone()
    wrong = torch.rand(len(z), generator=g, dtype=torch.float64) >= p_correct
    shift = torch.randint(1, k, (len(z),), generator=g)              # a uniform other class
    label[wrong] = (label[wrong] + shift[wrong]) % k
    f = v[label]                                                      # [n, K], collapsed
    w = v[cls_of].clone()                                             # [C, K]
    if fit_classifier:
        w = _fit_bounded_classifier(f, z, k * m, steps=steps, generator=g)
    return F.cross_entropy(f @ w.T, z).item()


def _fit_bounded_classifier(f: Tensor, y: Tensor, c: int, *, steps: int, generator: torch.Generator,
                            lr: float = 2.0) -> Tensor:
    """argmin_W mean CE(f W^T, y) s.t. ||W_z|| <= 1, by projected gradient descent (convex).

    f [n, d], y [n] -> W [c, d].
    """
    w = 0.01 * torch.randn(c, f.shape[1], generator=generator, dtype=f.dtype)
    onehot = F.one_hot(y, c).to(f.dtype)
    for _ in range(steps):
        grad = (torch.softmax(f @ w.T, dim=1) - onehot).T @ f / len(f)  # d mean CE / dW
        w = w - lr * grad
        w = w / w.norm(dim=1, keepdim=True).clamp(min=1.0)  # project onto ||W_z|| <= 1
    return w


def lemma3_table(settings: Sequence[tuple[int, int]] = ((2, 1), (2, 5), (10, 1), (10, 5), (20, 5)),
                 p_correct: Sequence[float] = (1.0, 0.9)) -> list[dict]:
    """Lemma 3's bound next to the measured error of collapsed embeddings (with W = V_y and with
    a fitted norm-bounded classifier), per (K, m) and label-correctness rate (m = 1: original task)."""
    rows = []
    for k, m in settings:
        bound = coarse_to_fine_bound(k, m)
        for pc in p_correct:
            rows.append({"K": k, "m": m, "task": "original" if m == 1 else "coarse-to-fine",
                         "p_correct": pc, "bound": bound, "exact": collapsed_exact_error(k, m, pc),
                         "measured": collapsed_error(k, m, p_correct=pc),
                         "measured_fitted_W": collapsed_error(k, m, p_correct=pc, fit_classifier=True)})
    return rows


# --- 3. Section 4.1: strata distances as the training fraction t grows ------------------------
# The generative model of Section 2.1 lives once, in spreadcon.data.synthetic (it also builds the
# `strata` dataset). Section 4.1 uses two common strata (48% of a class each) and a rare one (4%),
# well separated, so that a rare stratum's presence in D_t is what decides its distance.
SECTION_41 = {"within": (0.48, 0.48, 0.04), "stratum_sep": 4.0}


def section41_model(seed: int = 0) -> StrataModel:
    """The thought experiment's default model: StrataModel(**SECTION_41, seed=seed)."""
    return StrataModel(**SECTION_41, seed=seed)


def strata_centre_distance(emb: Tensor, stratum: Tensor, z: int, z2: int) -> float:
    """delta(f, z, z') = || mean of emb over stratum z - mean over z' ||_2. emb [n, d], stratum [n]."""
    return (emb[stratum == z].mean(0) - emb[stratum == z2].mean(0)).norm().item()


def _train_encoder(x: Tensor, y: Tensor, loss_fn: Callable[[Tensor, Tensor], Tensor], *, steps: int,
                   batch_size: int, aug_noise: float, lr: float, generator: torch.Generator) -> nn.Module:
    """A 2-layer MLP with L2-normalised output, trained with loss_fn(z [B, 2, D], labels [B])."""
    with torch.random.fork_rng(devices=[]):  # seeded initialisation, global RNG untouched
        torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=generator)))
        net = nn.Sequential(nn.Linear(x.shape[1], 64), nn.ReLU(), nn.Linear(64, 16))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        idx = torch.randperm(len(x), generator=generator)[:batch_size]
        views = x[idx, None] + aug_noise * torch.randn(len(idx), 2, x.shape[1], generator=generator)
        z = F.normalize(net(views), dim=-1)                             # [B, 2, 16]
        opt.zero_grad()
        loss_fn(z, y[idx]).backward()
        opt.step()
    return net.eval()


def thought_experiment(fractions: Sequence[float] = (0.01, 0.03, 0.1, 0.3, 1.0), *,
                       losses: Sequence[str] = ("supcon", "spread"), seeds: Sequence[int] = (0, 1),
                       model: StrataModel | None = None, n_train: int = 2000, n_eval_per_stratum: int = 300,
                       steps: int = 300, batch_size: int = 128, aug_noise: float = 0.3, lr: float = 1e-2,
                       temperature: float = 0.5, alpha: float = 0.25) -> list[dict]:
    """Section 4.1: delta(f_t, z, z') for a common-common and a common-rare pair as t grows.

    A training set of n_train points is drawn from `model` once; for each t, loss and seed, a
    subsample D_t of round(t n_train) points (without replacement) trains a small encoder f_t,
    and the distances between strata centres of class 0 are measured on a fresh evaluation set
    (n_eval_per_stratum points per stratum). Class 0's strata 0, 1 are the common pair and
    strata 0, m-1 the common-rare pair (with the default model). Each row records which C.2
    case occurred in D_t, so distances can be read per case.

    For a given (t, seed) every loss sees the same subsample and the same encoder initialisation.
    alpha = 0.25 is the paper's coarse-to-fine setting for CIFAR (SPEC.md); on this model (300
    steps) alpha = 0.5 collapsed the strata almost as much as L_SC did.

    Returns rows {loss, t, seed, pair ("common-common" | "common-rare"), z, z2, delta, case}.
    """

    model = model or section41_model()
    m = model.m
    if m < 3:
        raise ValueError("the thought experiment needs >= 3 strata per class (two common, one rare)")
    data_gen = torch.Generator().manual_seed(model.seed)
    x, y, s = model.sample(n_train, data_gen)
    eval_s = torch.arange(model.num_classes * m).repeat_interleave(n_eval_per_stratum)
    eval_x = model.sample_strata(eval_s, data_gen)
    pairs = {"common-common": (0, 1), "common-rare": (0, m - 1)}
    rows = []
    for name in losses:
        kwargs = {"temperature": temperature} | ({"alpha": alpha} if name == "spread" else {})
        loss_fn = LOSSES[name](**kwargs)
        for t in fractions:
            n_t = max(2, round(t * n_train))
            for seed in seeds:
                g = torch.Generator().manual_seed(10_000 * seed + n_t)
                idx = torch.randperm(n_train, generator=g)[:n_t]
                net = _train_encoder(x[idx], y[idx], loss_fn, steps=steps, batch_size=batch_size,
                                     aug_noise=aug_noise, lr=lr, generator=g)
                with torch.no_grad():
                    emb = F.normalize(net(eval_x), dim=-1)
                present = set(s[idx].tolist())
                for pair, (z, z2) in pairs.items():
                    case = {(True, True): "both", (True, False): "only_z", (False, True): "only_z2",
                            (False, False): "neither"}[(z in present, z2 in present)]
                    rows.append({"loss": name, "t": t, "seed": seed, "pair": pair, "z": z, "z2": z2,
                                 "delta": strata_centre_distance(emb, eval_s, z, z2), "case": case})
    return rows


def plot_thought_experiment(rows: list[dict], path: str | Path, *, model: StrataModel | None = None,
                            n_train: int = 2000, trials: int = 4000, seed: int = 0) -> Path:
    """PNG: left, delta(f_t, z, z') against t per loss and pair (mean +- std over seeds);
    right, the C.2 probability that both strata of each pair are in D_t (lines: closed form,
    markers: simulated subsamples of the n_train-point training set)."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    model = model or section41_model()
    fig = Figure(figsize=(10, 4))
    ax, bx = fig.subplots(1, 2)
    for (loss, pair) in sorted({(r["loss"], r["pair"]) for r in rows}):
        ts = sorted({r["t"] for r in rows if r["loss"] == loss and r["pair"] == pair})
        d = [[r["delta"] for r in rows if (r["loss"], r["pair"], r["t"]) == (loss, pair, t)] for t in ts]
        ax.errorbar(ts, [np.mean(v) for v in d], yerr=[np.std(v) for v in d], marker="o", capsize=3,
                    linestyle="-" if pair == "common-common" else "--", label=f"{loss}: {pair}")
    ax.set(xscale="log", yscale="log", xlabel="training fraction t", ylabel="distance between strata centres",
           title="Section 4.1: strata distances under subsampling")
    ax.legend(fontsize=8)
    ts = np.array(sorted({r["t"] for r in rows}))
    grid = np.geomspace(ts.min(), ts.max(), 100)
    for pair, (z, z2) in sorted({(r["pair"], (r["z"], r["z2"])) for r in rows}):
        p = model.p
        line, = bx.plot(grid, presence_probabilities(p[z], p[z2], grid * n_train)["both"], label=f"{pair}: closed form")
        sim = [simulate_presence(p, z, z2, max(2, round(t * n_train)), trials=trials, seed=seed,
                                 population=n_train)["both"] for t in ts]
        bx.plot(ts, sim, "o", color=line.get_color(), label=f"{pair}: simulated")
    bx.set(xscale="log", xlabel="training fraction t", ylabel="Pr(both strata in D_t)",
           title="Appendix C.2")
    bx.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path)
    return path
