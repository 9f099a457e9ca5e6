"""The experiments' charts: bars and lines of mean ± std over seeds, and t-SNE pictures of runs.

Figures are `matplotlib.figure.Figure`s (no pyplot state, no backend to choose) written by
`spreadcon.io.save_figure`, so a crash mid-write leaves the previous PNG intact.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from spreadcon.evaluate import plots
from spreadcon.experiments.table import summarise
from spreadcon.io import save_figure
from spreadcon.runs import load_run


def save(fig: Figure, path: Path) -> Path:
    """Lay the figure out and write it (PNG, 120 dpi)."""
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    return path


def _ylabel(metric: str, scale: float) -> str:
    return metric + (" (%)" if scale == 100 else "")


def bar_chart(rows: Sequence[dict[str, Any]], *, group: str, hue: str, metric: str, path: Path,
              title: str = "", scale: float = 100.0) -> Path | None:
    """Grouped bars of mean ± std over seeds: one group per `group` value, one bar per `hue` value."""
    stats = summarise(rows, (group, hue), metric)
    if not stats:
        return None
    groups = list(dict.fromkeys(r[group] for r in rows if metric in r))
    hues = list(dict.fromkeys(r[hue] for r in rows if metric in r))
    width = 0.8 / max(1, len(hues))
    fig = Figure(figsize=(max(4, 1.6 * len(groups) + 1), 3.5))
    ax = fig.subplots()
    for j, h in enumerate(hues):
        means = [stats[(g, h)].mean * scale if (g, h) in stats else np.nan for g in groups]
        stds = [np.nan_to_num(stats[(g, h)].std) * scale if (g, h) in stats else 0 for g in groups]
        ax.bar(np.arange(len(groups)) + j * width, means, width, yerr=stds, capsize=3, label=str(h))
    ax.set_xticks(np.arange(len(groups)) + width * (len(hues) - 1) / 2, [str(g) for g in groups])
    ax.set(ylabel=_ylabel(metric, scale), title=title)
    lo = np.nanmin([s.mean * scale for s in stats.values()])
    ax.set_ylim(max(0.0, lo - 10 if scale == 100 else lo - 0.1), None)
    ax.legend(fontsize=8)
    return save(fig, path)


def line_plot(rows: Sequence[dict[str, Any]], *, x: str, hue: str, metric: str, path: Path,
              title: str = "", scale: float = 100.0, logx: bool = False) -> Path | None:
    """Lines of mean ± std over seeds of `metric` against `x`, one per `hue` value."""
    stats = summarise(rows, (hue, x), metric)
    if not stats:
        return None
    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    for h in dict.fromkeys(k[0] for k in stats):
        xs = sorted(k[1] for k in stats if k[0] == h)
        ax.errorbar(xs, [stats[(h, v)].mean * scale for v in xs],
                    yerr=[np.nan_to_num(stats[(h, v)].std) * scale for v in xs], marker="o", capsize=3, label=str(h))
    ax.set(xlabel=x, ylabel=_ylabel(metric, scale), title=title)
    if logx:
        ax.set_xscale("log")
    ax.legend(fontsize=8)
    return save(fig, path)


def scatter_panels(points: Sequence[dict[str, Any]], *, x: str, panels: Sequence[Sequence[str]], hue: str,
                   path: Path, names: dict[str, str] | None = None, title: str = "") -> Path | None:
    """One scatter per metric of each panel row (`panels[i][j]` against `x`, log x-axis), one
    colour per `hue` value: Figure 3's strata by size."""
    if not points or not panels:
        return None
    ticks = sorted({p[x] for p in points})
    fig = Figure(figsize=(4 * max(map(len, panels)), 3.5 * len(panels)))
    axes = fig.subplots(len(panels), max(map(len, panels)), squeeze=False)
    for row, metrics in zip(axes, panels):
        for ax, metric in zip(row, metrics):
            _scatter(ax, points, x, metric, hue, names or {}, ticks)
    fig.suptitle(title)
    return save(fig, path)


def _scatter(ax: Axes, points: Sequence[dict[str, Any]], x: str, metric: str, hue: str, names: dict[str, str],
             ticks: list[Any]) -> None:
    for h in dict.fromkeys(p[hue] for p in points):
        sub = [p for p in points if p[hue] == h]
        ax.scatter([p[x] for p in sub], [p[metric] for p in sub], s=14, alpha=0.7, label=names.get(h, h))
    ax.set(xscale="log", xlabel="training points in the stratum", ylabel=metric)
    ax.set_xticks(ticks, [str(v) for v in ticks], minor=False)
    ax.set_xticks([], minor=True)
    ax.legend(fontsize=8)


def tsne_pictures(rows: Sequence[dict[str, Any]], out: Path, *, max_points: int, by_size: bool = False,
                  names: dict[str, str] | None = None) -> list[Path]:
    """t-SNE of the seed-0 test embeddings of each row's run (`spreadcon.evaluate.plots`):
    tsne_<dataset>_<loss>.png by class and by stratum (Figure 2), and with by_size
    strata_size_<dataset>_<loss>.png coloured by stratum size (Figure 3)."""
    paths = []
    for row in rows:
        if row.get("seed") != 0 or "run_dir" not in row:
            continue
        run = load_run(row["run_dir"])
        test = {k: torch.from_numpy(v) for k, v in run.embeddings("test").items()}
        stem = f"{row['dataset']}_{row['loss']}"
        title = f"{row['dataset']}, {(names or {}).get(row['loss'], row['loss'])} (test split)"
        args = (test["embedding"], test["label"], test["stratum"])  # [N, d], [N], [N]
        paths.append(plots.embedding_picture(*args, out / f"tsne_{stem}.png", max_points=max_points, title=title,
                                             class_names=run.dataset.class_names,
                                             stratum_names=run.dataset.stratum_names))
        if by_size:
            paths.append(plots.strata_size_scatter(*args, out / f"strata_size_{stem}.png", max_points=max_points,
                                                   title=title))
    return paths
