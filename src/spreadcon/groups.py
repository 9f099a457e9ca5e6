"""The groups a training run is robust over (Group DRO, group-balanced sampling, worst-group
model selection): where they come from and the bookkeeping the trainer needs, built once.

    groups = build_groups(ds, "group")        # the dataset's `group` field (true groups)
    groups = build_groups(ds, "stratum")      # its strata
    groups = build_groups(ds, "pseudo.npz")   # pseudo-groups, e.g. written by strata recovery
    groups.train [N_train], groups.val [N_val]  # compact ids 0..G-1 (positions in each split)
    groups.ids [G]                              # the source's ids, in that order

A pseudo-group file is an .npz of four 1-d int arrays (`write_group_file` writes one):

    train_index [N_train], val_index [N_val]   rows of the dataset as trained, as in
                                               `runs.split_arrays(...)["index"]`
    train [N_train], val [N_val]               their group ids, ints >= 0

Every train and val row of the dataset must have a group: the file comes from a run on the same
dataset config (dataset, data_seed, subsample and subset settings).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from spreadcon.data.base import StrataDataset
from spreadcon.group_dro import size_adjustment
from spreadcon.io import save_npz

FIELDS = ("group", "stratum")  # dataset fields that can serve as groups; anything else is a file
FILE_KEYS = ("train_index", "train", "val_index", "val")


@dataclass
class Groups:
    """Group ids of the train and val splits, compact 0..G-1 (ids [G] are the source's ids).

    counts [G]: train-split sizes n_g; adjustment [G]: C / sqrt(n_g) (float64, 0 where n_g = 0)."""

    source: str
    ids: Tensor
    train: Tensor
    val: Tensor
    counts: Tensor
    adjustment: Tensor

    @property
    def n_groups(self) -> int:
        return len(self.ids)

    def sampling_weights(self) -> Tensor:
        """[N_train] float64 probability weights 1 / n_g: every group drawn equally often
        (Sagawa et al.'s --reweight_groups)."""
        return 1.0 / self.counts.double()[self.train.cpu()]

    def names(self) -> list[str]:
        """The source's ids as strings: the keys of the per-group metrics."""
        return [str(int(i)) for i in self.ids]

    def summary(self) -> dict[str, Any]:
        """For run.json: the source, ids and per-split sizes."""
        val_counts = torch.bincount(self.val, minlength=self.n_groups)
        return {"source": self.source, "ids": self.ids.tolist(), "train_counts": self.counts.tolist(),
                "val_counts": val_counts.tolist()}


def _field_groups(ds: StrataDataset, source: str, dataset: str) -> tuple[Tensor, Tensor]:
    values = getattr(ds, source)
    if values is None:
        raise ValueError(f"groups={source!r} but dataset {dataset!r} has no {source} field; pass groups=stratum "
                         f"or a .npz of pseudo-groups (spreadcon.groups.write_group_file)")
    return values[ds.rows("train")].long(), values[ds.rows("val")].long()


def _read_group_file(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"groups={str(path)!r}: no such file; pass groups=group, groups=stratum or an "
                                f".npz with {list(FILE_KEYS)} (spreadcon.groups.write_group_file)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (ValueError, OSError) as err:
        raise ValueError(f"groups={str(path)!r} is not a readable .npz file ({err})") from None
    missing = [k for k in FILE_KEYS if k not in arrays]
    if missing:
        raise ValueError(f"groups file {path} lacks arrays {missing}; it needs {list(FILE_KEYS)}")
    for key in FILE_KEYS:
        a = arrays[key]
        if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer) or (a.size and a.min() < 0):
            raise ValueError(f"groups file {path}: {key} must be a 1-d array of ints >= 0, got dtype {a.dtype} "
                             f"shape {a.shape}" + (f" min {a.min()}" if a.size and a.ndim == 1 else ""))
    return arrays


def _file_split(arrays: dict[str, np.ndarray], ds: StrataDataset, split: str, path: Path) -> Tensor:
    """The file's group ids of `split`, in the order of the dataset's rows of that split."""
    index, values = arrays[f"{split}_index"], arrays[split]
    if index.shape != values.shape:
        raise ValueError(f"groups file {path}: {split}_index has {len(index)} rows but {split} has {len(values)}")
    rows = ds.rows(split).numpy()
    where = np.full(len(ds), -1, dtype=np.int64)
    if index.size and index.max() >= len(ds):
        raise ValueError(f"groups file {path}: {split}_index reaches row {index.max()} but the dataset as built has "
                         f"{len(ds)} rows; the file must come from a run on the same dataset config")
    where[index] = values
    in_split = np.isin(index, rows)
    if not in_split.all() or len(np.unique(index)) != len(index):
        raise ValueError(f"groups file {path}: {int((~in_split).sum())} rows of {split}_index are not {split} rows "
                         f"of the dataset as built (or rows repeat); the file must come from a run on the same "
                         f"dataset config")
    missing = int((where[rows] < 0).sum())
    if missing:
        raise ValueError(f"groups file {path}: {missing} of the {len(rows)} {split} rows of the dataset as built have "
                         f"no group; the file must come from a run on the same dataset config")
    return torch.from_numpy(where[rows])


def build_groups(ds: StrataDataset, source: str, *, adjustment: float = 0.0, dataset: str = "") -> Groups:
    """Groups of the train and val splits of `ds` (as built for training) from `source`: "group",
    "stratum" or a pseudo-group .npz path; `adjustment` is C of C / sqrt(n_g)."""
    if source in FIELDS:
        train, val = _field_groups(ds, source, dataset or ds.name)
    else:
        path = Path(source).expanduser()
        arrays = _read_group_file(path)
        train, val = _file_split(arrays, ds, "train", path), _file_split(arrays, ds, "val", path)
    ids, compact = torch.unique(torch.cat([train, val]), return_inverse=True)
    train, val = compact[:len(train)], compact[len(train):]
    counts = torch.bincount(train, minlength=len(ids))
    adjust = torch.zeros(len(ids), dtype=torch.float64)
    present = counts > 0
    adjust[present] = size_adjustment(counts[present], adjustment)
    return Groups(source, ids, train, val, counts, adjust)


def check_groups(groups: Groups, *, robust: bool, worst_group: bool) -> None:
    """Refuse, naming them, groups that the objective or the model selection cannot use:
    val groups without train members (robust: Group DRO or group sampling) and train groups
    without val members (worst_group selection, when there is a val split)."""
    val_counts = torch.bincount(groups.val, minlength=groups.n_groups)
    if robust and (groups.counts == 0).any():
        bad = groups.ids[groups.counts == 0].tolist()
        raise ValueError(f"groups {bad} (from {groups.source!r}) have val members but no train members; Group DRO "
                         f"and group sampling weight groups by their train members: merge or drop them")
    if worst_group and len(groups.val) and ((val_counts == 0) & (groups.counts > 0)).any():
        bad = groups.ids[(val_counts == 0) & (groups.counts > 0)].tolist()
        raise ValueError(f"groups {bad} (from {groups.source!r}) have train members but no val members, so "
                         f"select_by=worst_group cannot score them; pass select_by=accuracy or groups with "
                         f"val members")


def write_group_file(path: str | Path, *, train_index: Any, train: Any, val_index: Any, val: Any) -> Path:
    """Write a pseudo-group .npz (the format in this module's docstring); returns its path."""
    arrays = {k: np.asarray(v) for k, v in
              (("train_index", train_index), ("train", train), ("val_index", val_index), ("val", val))}
    for key, a in arrays.items():
        if a.ndim != 1 or not (a.size == 0 or np.issubdtype(a.dtype, np.integer)) or (a.size and a.min() < 0):
            raise ValueError(f"{key} must be a 1-d array of ints >= 0, got dtype {a.dtype} shape {a.shape}")
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"a group file's name ends in .npz (the trainer's groups= reads it), got {str(path)!r}")
    save_npz(path, **{k: a.astype(np.int64) for k, a in arrays.items()})
    return path
