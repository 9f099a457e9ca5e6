"""Tables of results: mean ± std over seeds, side by side with the paper's numbers.

A result row is a flat dict (one per run): grouping keys (`dataset`, `loss`, ...), `seed`, and
metric values. `summarise` groups rows and reduces a metric over seeds; `markdown` lays the
summary out with one grouping key down and one across, plus the paper's numbers where known.
The std is the sample standard deviation (ddof = 1) over seeds; with one seed only the mean is shown.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float  # sample std (ddof = 1); nan when n == 1
    n: int

    def format(self, scale: float = 1.0, digits: int = 1) -> str:
        if self.n == 0 or math.isnan(self.mean):
            return "–"
        if self.n == 1 or math.isnan(self.std):
            return f"{self.mean * scale:.{digits}f}"
        return f"{self.mean * scale:.{digits}f} ± {self.std * scale:.{digits}f}"


def mean_std(values: Iterable[float]) -> Stat:
    """Mean and sample standard deviation (ddof = 1) of the finite values; NaNs are dropped."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(vals)
    if n == 0:
        return Stat(math.nan, math.nan, 0)
    mean = sum(vals) / n
    if n == 1:
        return Stat(mean, math.nan, 1)
    var = sum((v - mean) ** 2 for v in vals) / (n - 1)
    return Stat(mean, math.sqrt(var), n)


def summarise(rows: Sequence[dict[str, Any]], by: Sequence[str], metric: str) -> dict[tuple, Stat]:
    """{group values (in `by` order): Stat of `metric` over the rows of that group (the seeds)}."""
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        if metric not in row:
            continue
        groups.setdefault(tuple(row.get(k) for k in by), []).append(row[metric])
    return {k: mean_std(v) for k, v in groups.items()}


def _ordered(values: Iterable[Any]) -> list[Any]:
    seen: list[Any] = []
    for v in values:
        if v not in seen:
            seen.append(v)
    return seen


def _cell(stats: dict[tuple, Stat], r: Any, c: Any, floor: Any, scale: float, digits: int) -> str:
    stat = stats.get((r, c), Stat(math.nan, math.nan, 0))
    low = stats.get((r, floor))
    below = c != floor and low is not None and stat.n > 0 and stat.mean < low.mean
    return stat.format(scale, digits) + (" (below floor)" if below else "")


def markdown(
    rows: Sequence[dict[str, Any]],
    *,
    row_key: str,
    col_key: str,
    metric: str,
    paper: Callable[[Any, Any], float | None] | None = None,
    scale: float = 100.0,
    digits: int = 1,
    col_names: dict[Any, str] | None = None,
    floor: Any = "raw-pixels",
) -> str:
    """A markdown table: `row_key` values down, `col_key` values across, cells mean ± std of `metric`.

    `scale` multiplies measured values (100: fractions shown as percent); `paper(row, col)` gives
    the paper's number (already in display units) for the same cell, shown in extra columns.
    `floor`: the column no other may lose to (the raw-input probe of `common.floor_specs`); a cell
    whose mean is below it in its row is marked "(below floor)".
    """
    stats = summarise(rows, (row_key, col_key), metric)
    row_vals = _ordered(r.get(row_key) for r in rows)
    col_vals = _ordered(r.get(col_key) for r in rows)
    names = col_names or {}
    seeds = sorted({s.n for s in stats.values()}) or [0]
    header = [row_key] + [f"{names.get(c, c)}" for c in col_vals]
    paper_cols = [c for c in col_vals if paper is not None and any(paper(r, c) is not None for r in row_vals)]
    header += [f"{names.get(c, c)} (paper)" for c in paper_cols]
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "---|" * len(header)]
    for r in row_vals:
        cells = [str(r)] + [_cell(stats, r, c, floor, scale, digits) for c in col_vals]
        for c in paper_cols:
            value = paper(r, c) if paper is not None else None
            cells.append("–" if value is None else f"{value:.{digits}f}")
        lines.append("| " + " | ".join(cells) + " |")
    n_text = "/".join(str(n) for n in seeds)
    if any("(below floor)" in line for line in lines):
        lines += ["", f"(below floor): the mean is below the `{floor}` column's in its row."]
    lines.append("")
    lines.append(f"`{metric}`{' ×100' if scale == 100 else ''}, mean ± std over {n_text} seed(s).")
    return "\n".join(lines) + "\n"
