"""Verdicts that can fail: claims checked on paired seeds with a 95% interval.

A claim is `(kind, claim, verdict)`:

    kind     "paper"   a claim the paper makes (its text, tables or figures)
             "target"  a target this project set itself (e.g. a 5-point transfer margin)
             "sanity"  a check that cannot fail by construction on these runs, or a description;
                       reported, never counted as evidence
    verdict  "holds: ...", "fails: ..." or "not distinguishable: ...", followed by the numbers

A comparison claim ("A beats B on a metric") is decided by the paired difference A - B over the
seeds both have (same seed = same split and initialisation): with its 95% Student-t interval
(n - 1 degrees of freedom) it "holds" when the interval lies entirely on the claimed side of
zero (or of a margin), "fails" when it lies entirely on the other side, and is "not
distinguishable" otherwise, always so with one seed (no interval). A claim against several
rivals ("A is the best of three") holds only when it holds against each of them (an
intersection-union test: no multiplicity correction needed), and fails when it fails against any.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from scipy.stats import t as student_t

from spreadcon.experiments.paper import LOSS_NAMES

Claim = tuple[str, str, str]  # (kind, claim, verdict)
KINDS = {"paper": "The paper's claims", "target": "Project targets",
         "sanity": "Sanity checks and descriptions (cannot fail here, or not a test)"}
HOLDS, FAILS, UNCLEAR = "holds", "fails", "not distinguishable"
LEVEL = 0.95


def paired_difference(a_by_seed: Mapping[int, float], b_by_seed: Mapping[int, float]) -> dict[str, Any]:
    """Mean of a[s] - b[s] over the seeds s both have (NaN values dropped), with its 95%
    Student-t interval: {"mean", "low", "high", "n", "seeds"}. n = 1 gives (-inf, inf); n = 0
    a NaN mean; differences equal on every seed a zero-width interval."""
    seeds = sorted(s for s in set(a_by_seed) & set(b_by_seed)
                   if not (math.isnan(a_by_seed[s]) or math.isnan(b_by_seed[s])))
    diffs = [float(a_by_seed[s]) - float(b_by_seed[s]) for s in seeds]
    n = len(diffs)
    mean = statistics.fmean(diffs) if n else math.nan
    half = math.inf if n < 2 else student_t.ppf(0.5 + LEVEL / 2, n - 1) * statistics.stdev(diffs) / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n, "seeds": seeds}


def one_sample(values_by_seed: Mapping[int, float], reference: float = 0.0) -> dict[str, Any]:
    """paired_difference of per-seed values against a constant (a one-sample t interval)."""
    return paired_difference(values_by_seed, {s: reference for s in values_by_seed})


def outcome(diff: Mapping[str, Any], *, higher: bool = True, margin: float = 0.0) -> str:
    """HOLDS when the interval lies entirely on the claimed side of `margin` (above it with
    higher=True, below it with higher=False), FAILS when it lies entirely on the other side,
    else UNCLEAR (always with n < 2)."""
    low, high = diff["low"], diff["high"]
    if diff["n"] < 2 or math.isnan(low) or math.isnan(high):
        return UNCLEAR
    above, below = low > margin, high < margin
    if above or below:
        return HOLDS if above == higher else FAILS
    return UNCLEAR


def describe(diff: Mapping[str, Any], what: str, *, scale: float = 100.0) -> str:
    """The difference in display units, e.g. 'A - B = +2.1 points (95% CI +0.8 to +3.4, 5 paired seeds)'
    (scale 100: fractions as points; otherwise 3 decimals, no unit)."""
    digits, unit = (1, " points") if scale == 100 else (3, "")
    if diff["n"] == 0:
        return f"{what}: no seed in common"
    mean = f"{what} = {diff['mean'] * scale:+.{digits}f}{unit}"
    if diff["n"] == 1:
        return f"{mean} (one paired seed: no interval)"
    return (f"{mean} ({LEVEL:.0%} CI {diff['low'] * scale:+.{digits}f} to {diff['high'] * scale:+.{digits}f}, "
            f"{diff['n']} paired seeds)")


def combine(outcomes: Sequence[str]) -> str:
    """HOLDS when every part holds, FAILS when any fails, else UNCLEAR."""
    if outcomes and all(o == HOLDS for o in outcomes):
        return HOLDS
    return FAILS if FAILS in outcomes else UNCLEAR


def verdict(parts: Sequence[tuple[Mapping[str, Any], str]], *, higher: bool = True, margin: float = 0.0,
            scale: float = 100.0) -> str:
    """The verdict text of one claim from its (difference, what) parts: the combined outcome,
    then each part's numbers (and the margin, when there is one)."""
    result = combine([outcome(d, higher=higher, margin=margin) for d, _ in parts])
    text = "; ".join(describe(d, what, scale=scale) for d, what in parts)
    if margin:
        digits, unit = (1, " points") if scale == 100 else (3, "")
        text += f"; needed: the whole interval {'above' if higher else 'below'} {margin * scale:+.{digits}f}{unit}"
    return f"{result}: {text}"


def compare(kind: str, claim: str, a_by_seed: Mapping[int, float], b_by_seed: Mapping[int, float], what: str, *,
            higher: bool = True, margin: float = 0.0, scale: float = 100.0, note: str = "") -> Claim:
    """One claim "a beats b" (a - b above `margin`, or below it with higher=False), paired over seeds."""
    text = verdict([(paired_difference(a_by_seed, b_by_seed), what)], higher=higher, margin=margin, scale=scale)
    return kind, claim, text + (f"; {note}" if note else "")


def difference(a_by_seed: Mapping[int, float], b_by_seed: Mapping[int, float]) -> dict[int, float]:
    """{seed: a[seed] - b[seed]} over the seeds both have."""
    return {s: a_by_seed[s] - b_by_seed[s] for s in a_by_seed if s in b_by_seed}


def by_seed(rows: Sequence[Mapping[str, Any]], metric: str, **match: Any) -> dict[int, float]:
    """{seed: row[metric]} over the rows whose labels equal `match` (one cell of a table)."""
    return {int(r["seed"]): float(r[metric]) for r in rows
            if metric in r and r[metric] is not None and all(r.get(k) == v for k, v in match.items())}


def groups(rows: Sequence[Mapping[str, Any]], group: str | Sequence[str]) -> list[dict[str, Any]]:
    """The distinct values of the `group` label(s), in row order, as {label: value} dicts."""
    keys = (group,) if isinstance(group, str) else tuple(group)
    return [dict(zip(keys, values)) for values in dict.fromkeys(tuple(r.get(k) for k in keys) for r in rows)]


def group_name(values: Mapping[str, Any]) -> str:
    """"mnist5k-coarse" or "mnist5k-coarse (projection)": the first value, the rest in brackets."""
    first, *rest = [str(v) for v in values.values() if v is not None]
    return first + (f" ({', '.join(rest)})" if rest else "")


def winner_claims(rows: Sequence[Mapping[str, Any]], *, group: str | Sequence[str], metric: str, winner: str,
                  against: Sequence[str], what: str, key: str = "loss", higher: bool = True, scale: float = 100.0,
                  kind: str = "paper", margin: float = 0.0, names: Mapping[str, str] = LOSS_NAMES) -> list[Claim]:
    """Per value of `group`: does `winner` beat each of `against` that ran there (higher, or
    lower with higher=False, `metric`; by more than `margin`), paired over seeds?"""
    out: list[Claim] = []
    for where in groups(rows, group):
        cell = {name: by_seed(rows, metric, **where, **{key: name}) for name in (winner, *against)}
        rivals = [a for a in against if cell[a]]
        if not cell[winner] or not rivals:
            continue
        w = names.get(winner, winner)
        parts = [(paired_difference(cell[winner], cell[a]), f"{w} - {names.get(a, a)}") for a in rivals]
        out.append((kind, f"{group_name(where)}: {w} {what}",
                    verdict(parts, higher=higher, margin=margin, scale=scale)))
    return out


def markdown(claims: Sequence[Claim]) -> str:
    """The claims by kind, under one heading, with what the verdicts mean."""
    if not claims:
        return ""
    lines = ["", "## Claims checked on these runs", "",
             f"A comparison holds when the {LEVEL:.0%} interval of its paired difference over seeds (same "
             "seed: same split and initialisation) excludes zero in the claimed direction, fails when it "
             "excludes zero in the other, and is not distinguishable otherwise (always with one seed)."]
    for kind, title in KINDS.items():
        mine = [(c, v) for k, c, v in claims if k == kind]
        if mine:
            lines += ["", f"### {title}", "", *[f"- {c}: **{v}**" for c, v in mine]]
    return "\n".join(lines) + "\n"


def held(claims: Sequence[Sequence[str]], kind: str) -> tuple[int, int]:
    """(claims of `kind` that hold, claims of `kind`)."""
    mine = [c for c in claims if len(c) == 3 and c[0] == kind]
    return sum(1 for c in mine if c[2].startswith(HOLDS)), len(mine)
