"""Checks at load time: option values, label / stratum / group ids, and finite inputs.

Every loader goes through `registry.load`, which calls `check_options` before any work and
`check_dataset` on what the loader built (errors for what would train wrongly, warnings for what
is legal but suspicious: classes without training points, strata under two classes); loaders
that read user arrays (npz) turn them into ids with `integer_ids` + `compact_ids`. Each error
names the file, key or value and says what to pass (issue 15: nothing cast without a word,
nothing large allocated for a bad id).
"""

from __future__ import annotations

import math
import numbers
import typing
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

from spreadcon.data.base import SPLITS, StrataDataset


# --- numbers -------------------------------------------------------------------------------------
def plain(value: Any) -> Any:
    """numpy scalars and 0-d tensors -> Python numbers; anything else unchanged."""
    if isinstance(value, Tensor) and value.dim() == 0:
        return value.item()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    return value


def as_number(name: str, value: Any, *, integer: bool = False) -> float | int:
    """A finite real number (an int with integer=True); refuses bool, NaN, inf and non-numbers."""
    value = plain(value)
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be {kind}, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if integer:
        if value != int(value):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        return int(value)
    return float(value) if not isinstance(value, numbers.Integral) else int(value)


def as_fraction(name: str, value: Any, *, low_open: bool = True, high_open: bool = True,
                low: float = 0.0, high: float = 1.0) -> float:
    """A number in the interval between low and high ("(" / "[" as the flags say)."""
    v = float(as_number(name, value))
    ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")
    return v


# --- options (before any work) -------------------------------------------------------------------
def check_option(name: str, value: Any, hint: Any) -> Any:
    """`value` converted to the annotated type `hint` (bool, int, float, str, X | None, list[...])."""
    value = plain(value)
    args = typing.get_args(hint)
    if type(None) in args:
        if value is None:
            return None
        rest = [a for a in args if a is not type(None)]
        hint = rest[0] if len(rest) == 1 else hint
    origin = typing.get_origin(hint)
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"dataset option {name} must be true or false, got {value!r}")
        return value
    if hint is int:
        return as_number(f"dataset option {name}", value, integer=True)
    if hint is float:
        return as_number(f"dataset option {name}", value)
    if hint is str and not isinstance(value, str):
        raise ValueError(f"dataset option {name} must be a string, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"dataset option {name} must be a list (a JSON value a run config can record), got {value!r}")
        inner = typing.get_args(hint)[0] if typing.get_args(hint) else None
        return [check_option(f"{name}[{i}]", v, inner) if inner in (int, float) else plain(v)
                for i, v in enumerate(value)]
    return value


def check_options(build: Any, options: dict[str, Any]) -> dict[str, Any]:
    """options checked against the type annotations of the loader `build` (a function or partial)."""
    func = getattr(build, "func", build)
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # an annotation that does not resolve: check nothing rather than fail here
        hints = {}
    return {k: check_option(k, v, hints[k]) if k in hints else plain(v) for k, v in options.items()}


# --- ids ----------------------------------------------------------------------------------------
def integer_ids(values: Any, key: str, source: str) -> np.ndarray:
    """int64 [N] from an array of ids: integer-valued floats are cast; fractions, NaN, inf,
    negative values and non-numbers are refused naming `key` and `source`."""
    a = np.asarray(values)
    if a.ndim != 1:
        raise ValueError(f"{source}: {key} must be a 1-d array of integer ids, got shape {a.shape}")
    if a.dtype == bool or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"{source}: {key} must hold integer ids 0, 1, ..., got dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.floating):
        bad = ~np.isfinite(a) | (a != np.round(a))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{source}: {key} must be integer ids, but row {i} holds {a[i].item()!r} "
                             f"({int(bad.sum())} such rows); store class ids 0..K-1 as integers")
        if np.abs(a).max(initial=0) >= 2**62:
            raise ValueError(f"{source}: {key} holds ids too large to be class ids (max {a.max().item()!r})")
    out = a.astype(np.int64)
    if (out < 0).any():
        i = int(np.flatnonzero(out < 0)[0])
        raise ValueError(f"{source}: {key} must be >= 0, but row {i} holds {out[i]}; use ids 0..K-1")
    return out


def compact_ids(ids: np.ndarray, key: str, source: str) -> tuple[np.ndarray, list[int] | None]:
    """(ids remapped to 0..K-1, the original id of each new one) when the ids used are sparse
    (e.g. {0, 5, 10}, or 2^40), else (ids, None). np.unique sorts: nothing of size max(id)."""
    used, inverse = np.unique(ids, return_inverse=True)
    if len(used) == 0 or int(used[-1]) == len(used) - 1:
        return ids, None
    warnings.warn(f"{source}: {key} uses {len(used)} distinct ids up to {int(used[-1])}; they are "
                  f"renumbered 0..{len(used) - 1} in sorted order (the mapping is kept in the "
                  f"dataset's meta['id_maps'] and transforms)", stacklevel=3)
    return inverse.astype(np.int64).reshape(ids.shape), [int(u) for u in used]


# --- the dataset as built --------------------------------------------------------------------------
def check_dataset(ds: StrataDataset, source: str) -> StrataDataset:
    """Refuse what would train wrongly: ids outside their names, fewer than two training
    classes, NaN / inf inputs. Sparse group ids are renumbered (recorded). Warn (legal but
    suspicious) about classes with no training point and strata not nested in one class.
    Returns ds."""
    for key, names in (("label", ds.class_names), ("stratum", ds.stratum_names), ("clean_label", ds.class_names)):
        ids = getattr(ds, key)
        if ids is None:
            continue
        check_id_tensor(ids, key, source)
        if len(ids) and int(ids.max()) >= len(names):
            raise ValueError(f"{source}: {key} id {int(ids.max())} but only {len(names)} names "
                             f"({key.split('_')[0]} ids must lie in 0..{len(names) - 1})")
    if ds.group is not None:
        check_id_tensor(ds.group, "group", source)
        if len(ds.group) and int(ds.group.max()) >= len(ds):  # more group ids than rows: sparse
            ids, used = compact_ids(ds.group.numpy(), "group", source)
            ds.group = torch.from_numpy(ids)
            record_map(ds, "group", used)
    train = ds.label[ds.split == SPLITS["train"]]
    present = torch.unique(train).tolist()
    if len(present) < 2:
        raise ValueError(f"{source}: the train split holds {len(train)} points of {len(present)} class(es) "
                         f"{[ds.class_names[c] for c in present]}; a classifier needs at least two classes")
    check_finite(ds.x, "x", source)
    warn_untrained_classes(ds, source)
    check_strata_nested(ds, source)
    return ds


# --- legal but suspicious: warnings ----------------------------------------------------------------
def first_names(names: list[str], ids: list[int], few: int = 5) -> str:
    """'a', 'b', 'c' (+ 7 more) for the first `few` of `ids`."""
    shown = ", ".join(repr(names[i]) if i < len(names) else str(i) for i in ids[:few])
    return shown + (f" (+ {len(ids) - few} more)" if len(ids) > few else "")


def warn_untrained_classes(ds: StrataDataset, source: str) -> None:
    """Warn, naming how many and the first few, about classes with no training point: the
    classifier never sees them, so each of their val/test points is scored wrong."""
    counts = torch.bincount(ds.label[ds.split == SPLITS["train"]], minlength=ds.num_classes)
    empty = torch.nonzero(counts == 0).squeeze(1).tolist()
    if empty:
        what = "image" if ds.is_image else "point"
        warnings.warn(f"{source}: {len(empty)} of {ds.num_classes} classes have no training {what} "
                      f"({first_names(ds.class_names, empty)}); a model trained on this split never sees "
                      f"them and gets every val/test {what} of them wrong: add training {what}s of those "
                      f"classes or remove them from the data", stacklevel=4)  # the caller of data.load


def nesting_conflicts(label: Tensor, stratum: Tensor) -> dict[int, list[int]]:
    """{stratum id: its class ids} for every stratum whose points carry more than one class
    (label, stratum: [N] int64). One sort of the distinct (stratum, class) pairs: O(N log N)."""
    if len(label) == 0:
        return {}
    k = int(label.max()) + 1
    pairs = torch.unique(stratum * k + label)  # [P] distinct (stratum, class) pairs, sorted by stratum
    strata, counts = torch.unique_consecutive(pairs // k, return_counts=True)
    classes = (pairs % k).split(counts.tolist())
    return {int(z): c.tolist() for z, c, n in zip(strata, classes, counts) if n > 1}


def check_strata_nested(ds: StrataDataset, source: str, *, refuse: bool = False) -> None:
    """The paper's model (Sec. 2.1) puts every stratum in exactly one class; a stratum under two
    classes is legal data, but the strata tables list it under one class with its full size and the
    coarse-to-fine scores read it wrongly, so it is a warning. refuse=True (npz with explicit
    `coarse` or `strata` arrays, where it can only be a mistake in the arrays) makes it an error.
    Checked against `clean_label` when the dataset has label noise (noise alone never un-nests)."""
    label = ds.clean_label if ds.clean_label is not None else ds.label
    bad = nesting_conflicts(label, ds.stratum)
    if not bad:
        return
    shown = "; ".join(f"stratum {ds.stratum_names[z] if z < ds.num_strata else z!r} under classes "
                      f"{[ds.class_names[c] if c < ds.num_classes else c for c in cs]}"
                      for z, cs in list(bad.items())[:3])
    message = (f"{source}: {len(bad)} of {ds.num_strata} strata are not nested in one class ({shown}"
               f"{'; ...' if len(bad) > 3 else ''}); every stratum must belong to exactly one class")
    if refuse:
        raise ValueError(f"{message}: give each (class, stratum) pair its own stratum id, e.g. "
                         f"strata = labels * S + subgroup")
    warnings.warn(f"{message}, or strata tables and coarse-to-fine scores read them wrongly: give each "
                  f"(class, stratum) pair its own stratum id", stacklevel=4)


def check_id_tensor(ids: Tensor, key: str, source: str) -> None:
    if ids.dtype != torch.int64:
        raise ValueError(f"{source}: {key} must be int64 ids, got {ids.dtype} (a loader bug: report it)")
    if len(ids) and int(ids.min()) < 0:
        raise ValueError(f"{source}: {key} must be >= 0, got {int(ids.min())}")


def check_finite(x: Tensor | np.ndarray, key: str, source: str, chunk: int = 4096) -> None:
    """Refuse NaN / inf in float inputs (integer images are finite by type); in chunks, so a
    large float array is never copied whole."""
    t = torch.as_tensor(x) if isinstance(x, np.ndarray) else x
    if not t.is_floating_point():
        return
    for start in range(0, len(t), chunk):
        bad = ~torch.isfinite(t[start:start + chunk].reshape(min(chunk, len(t) - start), -1))
        if bad.any():
            row = start + int(torch.nonzero(bad.any(1))[0])
            total = sum(int((~torch.isfinite(t[s:s + chunk])).sum()) for s in range(start, len(t), chunk))
            raise ValueError(f"{source}: {key} holds {total} NaN or infinite values (first in row {row}); "
                             f"clean or drop those rows before loading")


def record_map(ds: StrataDataset, key: str, used: list[int] | None) -> None:
    """Keep the original id of each renumbered one in meta['id_maps'] and a transform record."""
    if used is None:
        return
    ds.meta.setdefault("id_maps", {})[key] = used
    ds.transforms.append({"transform": "renumber_ids", "field": key, "original_ids": used})
