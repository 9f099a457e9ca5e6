"""Pictures of an embedding (PNG, matplotlib Agg): the paper's Figures 2 and 3.

    coords, idx = project(z, method="tsne", max_points=2000, seed=0)     # [M, 2], rows of z used
    embedding_picture(z, labels, strata, "fig2.png")                      # by class | by stratum
    strata_size_scatter(z, labels, strata, "fig3.png")                    # by stratum size
    coloured_pair(coords, groups, clusters, "class0.png")                 # one class: truth | recovery

t-SNE comes from scikit-learn; UMAP needs umap-learn (`pip install spreadcon[viz]`). Both are
seeded, and at most `max_points` points (a seeded random subset) are projected.
"""

from __future__ import annotations

import colorsys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from spreadcon.evaluate.geometry import strata_centre_distances
from spreadcon.io import save_figure


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def project(z: Tensor, *, method: str = "tsne", max_points: int | None = 2000, seed: int = 0,
            normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """2-D coordinates [M, 2] of (a seeded subset of at most max_points rows of) z [N, D], and the
    row indices [M] used. normalize: L2-normalise rows first (the geometry the losses see)."""
    if z.dim() != 2 or z.shape[0] < 3:
        raise ValueError(f"project needs embeddings [N, D] with N >= 3, got {list(z.shape)}")
    n = z.shape[0]
    idx = np.arange(n)
    if max_points is not None and n > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))
    x = torch.nn.functional.normalize(z.float(), dim=1) if normalize else z.float()
    x = x[torch.from_numpy(idx)].cpu().numpy()
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = min(30.0, (len(x) - 1) / 3)
        coords = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    elif method == "umap":
        try:
            import umap
        except ImportError as err:
            raise ImportError("method='umap' needs umap-learn: pip install 'spreadcon[viz]' (or use method='tsne')") from err
        coords = umap.UMAP(n_components=2, random_state=seed, n_jobs=1).fit_transform(x)
    else:
        raise ValueError(f"unknown projection method {method!r}; choose 'tsne' or 'umap'")
    return np.asarray(coords, dtype=np.float64), idx


def _palette(values: np.ndarray, parent: np.ndarray | None) -> dict[int, tuple]:
    """A colour per value. With `parent` (each point's class), strata of one class share the
    class's hue in different shades, so the stratum panel still reads by class."""
    from matplotlib.colors import to_rgb

    plt = _pyplot()
    ids = [int(v) for v in np.unique(values)]
    if parent is None:
        cmap = plt.get_cmap("tab10" if len(ids) <= 10 else "tab20")
        return {v: cmap(k % cmap.N) for k, v in enumerate(ids)}
    classes = [int(c) for c in np.unique(parent)]
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    colours = {}
    for k, c in enumerate(classes):
        members = sorted({int(v) for v in values[parent == c]})
        hue, _, sat = colorsys.rgb_to_hls(*to_rgb(cmap(k % cmap.N)))
        for j, v in enumerate(members):
            t = j / (len(members) - 1) if len(members) > 1 else 0.5
            # dark to light, with a small hue step so neighbours stay distinguishable
            colours.setdefault(v, colorsys.hls_to_rgb((hue + 0.06 * (t - 0.5)) % 1.0, 0.22 + 0.58 * t, sat))
    return colours


def _scatter_by(ax, coords: np.ndarray, values: np.ndarray, names: Sequence[str] | None, title: str,
                parent: np.ndarray | None = None) -> None:
    colours = _palette(values, parent)
    for v, colour in colours.items():
        m = values == v
        label = names[v] if names is not None and v < len(names) else str(v)
        ax.scatter(coords[m, 0], coords[m, 1], s=5, alpha=0.8, color=colour, label=label)
    if len(colours) <= 20:
        ax.legend(markerscale=3, fontsize=7, loc="best", frameon=False, ncol=1 if len(colours) <= 10 else 2)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])


def embedding_picture(z: Tensor, labels: Tensor, strata: Tensor, path: str | Path, *, method: str = "tsne",
                      max_points: int | None = 2000, seed: int = 0, class_names: Sequence[str] | None = None,
                      stratum_names: Sequence[str] | None = None, title: str | None = None,
                      stratum_sizes: dict[int, int] | None = None) -> Path:
    """Figure 2: a 2-D projection of z [N, D] coloured by class (left) and by stratum (right);
    with `stratum_sizes` ({stratum: training points}) a third panel colours each point by the
    size of its stratum (log scale), as in Figure 3. Writes a PNG to `path` and returns it.
    The project's one t-SNE figure: experiments draw theirs through this function."""
    if not labels.shape == strata.shape == (z.shape[0],):
        raise ValueError(f"labels and strata must be [N={z.shape[0]}], got {list(labels.shape)}, {list(strata.shape)}")
    coords, idx = project(z, method=method, max_points=max_points, seed=seed)
    plt = _pyplot()
    panels = 3 if stratum_sizes else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 5), constrained_layout=True)
    y, s = labels.cpu().numpy()[idx], strata.cpu().numpy()[idx]
    _scatter_by(axes[0], coords, y, class_names, "coloured by class")
    _scatter_by(axes[1], coords, s, stratum_names, "coloured by stratum (shades of its class)", parent=y)
    if stratum_sizes:
        from matplotlib.colors import LogNorm

        sizes = np.array([max(1, stratum_sizes.get(int(v), 1)) for v in s], dtype=float)
        norm = LogNorm(vmin=sizes.min(), vmax=max(sizes.max(), sizes.min() + 1))
        points = axes[2].scatter(coords[:, 0], coords[:, 1], c=sizes, s=4, cmap="viridis", norm=norm)
        fig.colorbar(points, ax=axes[2], label="training points in the point's stratum")
        axes[2].set(title="coloured by stratum size", xticks=[], yticks=[])
    fig.suptitle(title or f"{method.upper()} of {len(idx)} embeddings")
    return _save(fig, path)


def strata_size_scatter(z: Tensor, labels: Tensor, strata: Tensor, path: str | Path, *, method: str = "tsne",
                        max_points: int | None = 2000, seed: int = 0, title: str | None = None) -> Path:
    """Figure 3: left, the 2-D projection with each point coloured by the size of its stratum (log
    scale); right, each stratum's size against its mean distance to the other strata centres of
    its class (`geometry.strata_centre_distances` on all of z). Writes a PNG and returns its path."""
    if not labels.shape == strata.shape == (z.shape[0],):
        raise ValueError(f"labels and strata must be [N={z.shape[0]}], got {list(labels.shape)}, {list(strata.shape)}")
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    rows = strata_centre_distances(z, labels, strata)
    size_of = {r["stratum"]: r["size"] for r in rows}
    coords, idx = project(z, method=method, max_points=max_points, seed=seed)
    point_sizes = np.array([size_of[int(s)] for s in strata.cpu().numpy()[idx]], dtype=float)
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 5), constrained_layout=True)
    norm = LogNorm(vmin=point_sizes.min(), vmax=max(point_sizes.max(), point_sizes.min() + 1))
    sc = axes[0].scatter(coords[:, 0], coords[:, 1], c=point_sizes, s=4, cmap="viridis", norm=norm)
    fig.colorbar(sc, ax=axes[0], label="size of the point's stratum")
    axes[0].set_title(f"{method.upper()}, coloured by stratum size")
    axes[0].set_xticks([])
    axes[0].set_yticks([])
    have = [r for r in rows if r["mean_distance"] is not None]
    ax = axes[1]
    classes = sorted({r["label"] for r in have})
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for k, c in enumerate(classes):
        mine = [r for r in have if r["label"] == c]
        ax.scatter([r["size"] for r in mine], [r["mean_distance"] for r in mine], color=cmap(k % cmap.N), s=25,
                   label=f"class {c}")
    if len(classes) <= 10:
        ax.legend(fontsize=7, frameon=False)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_major_formatter(ScalarFormatter())
    sizes = sorted({r["size"] for r in have})
    if 0 < len(sizes) <= 8:
        ax.set_xticks(sizes)
    ax.set_xlabel("stratum size (points)")
    ax.set_ylabel("mean distance to the other strata centres of its class")
    ax.set_title("strata centre distance vs size")
    fig.suptitle(title or "stratum size")
    return _save(fig, path)


def coloured_pair(coords: np.ndarray, left: np.ndarray, right: np.ndarray, path: str | Path, *,
                  titles: tuple[str, str] = ("true group", "recovered cluster"), title: str | None = None) -> Path:
    """Two panels of the same 2-D points coords [M, 2], coloured by `left` [M] and by `right` [M]
    (e.g. true groups and recovered clusters of one class). Writes a PNG and returns its path."""
    coords, left, right = np.asarray(coords), np.asarray(left), np.asarray(right)
    if coords.ndim != 2 or coords.shape[1] != 2 or not left.shape == right.shape == (len(coords),):
        raise ValueError(f"coloured_pair needs coords [M, 2] and two [M] colourings, got "
                         f"{coords.shape}, {left.shape}, {right.shape}")
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), constrained_layout=True)
    for ax, values, name in zip(axes, (left, right), titles):
        _scatter_by(ax, coords, values.astype(np.int64), None, name)
    fig.suptitle(title or "")
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=110)
    _pyplot().close(fig)
    return path
