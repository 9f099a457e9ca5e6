"""The input checks every public fit / transform / predict of `spreadcon.apps` runs first.

One rule for all the estimators (StrataRecovery, GroupDRO, NoisyLabelCorrector, the robustness
pipeline): embeddings are a finite, real 2-d array [N, D] with N >= 1 and D >= 1; labels, groups
and other ids are a 1-d integer array [N] (one per row of the embeddings) of values >= 0. Every
refusal is one ValueError line that names the argument, says what was found and what to pass.
numpy arrays, lists and torch tensors (any device, with or without grad) are accepted.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def as_array(values: Any, name: str) -> np.ndarray:
    """`values` as a numpy array; torch tensors are detached and moved to the CPU first."""
    if type(values).__module__.startswith("torch") and hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    try:
        return np.asarray(values)
    except (ValueError, TypeError) as err:  # ragged nested lists, objects numpy cannot hold
        raise ValueError(f"{name} is not an array numpy can read ({err}); pass a 2-d array [N, D] "
                         f"or a 1-d array [N]") from None


def check_embeddings(X: Any, name: str = "X", *, min_rows: int = 1) -> np.ndarray:
    """X as a finite float64 array [N, D] with N >= min_rows and D >= 1; a ValueError that names
    `name` and says what is wrong otherwise."""
    a = as_array(X, name)
    if a.dtype == bool or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"{name} must hold real numbers (embeddings), got dtype {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [N, D] of embeddings, got shape {a.shape}")
    if a.shape[0] < min_rows:
        raise ValueError(f"{name} has {a.shape[0]} rows; pass at least {min_rows} embedding(s), one per row")
    if a.shape[1] < 1:
        raise ValueError(f"{name} has shape {a.shape}: each row needs at least one feature")
    a = a.astype(np.float64, copy=False)
    if not np.isfinite(a).all():
        bad = int((~np.isfinite(a)).any(axis=1).sum())
        raise ValueError(f"{name} has {bad} rows with NaN or inf; embed again or drop those rows "
                         f"(a diverged model gives NaN embeddings)")
    return a


def check_labels(values: Any, n: int, name: str, *, nonnegative: bool = True) -> np.ndarray:
    """Integer ids [n] as int64 (each >= 0 unless nonnegative=False); a ValueError naming `name`
    when the shape, the dtype or a value is wrong."""
    a = as_array(values, name)
    if a.shape != (n,):
        hint = f"; pass {name}.ravel()" if a.size == n and a.ndim > 1 else "; pass one id per row"
        raise ValueError(f"{name} has shape {a.shape} but the embeddings have {n} rows, so it must be "
                         f"({n},){hint}")
    if a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must hold integer ids, got dtype {a.dtype}; pass {name}.astype(int)")
    a = a.astype(np.int64)
    if nonnegative and a.size and a.min() < 0:
        row = int(np.argmin(a))
        raise ValueError(f"{name} must hold non-negative ids 0, 1, ..., but row {row} holds {int(a[row])}")
    return a


def check_features(X: np.ndarray, fitted: int, name: str = "X") -> None:
    """Refuse X [M, D] whose D differs from the `fitted` number of features."""
    if X.shape[1] != fitted:
        raise ValueError(f"{name} has {X.shape[1]} features but the model was fitted on {fitted}; "
                         f"pass embeddings from the same model")
