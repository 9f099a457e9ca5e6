"""The one in-memory dataset shape every part of spreadcon uses.

A dataset is a handful of aligned tensors (airbench style): selecting data is indexing.

    x        [N, C, H, W] uint8 images, or [N, D] float32 vectors
    label    [N] int64   the training label (coarse for coarse variants; possibly noisy)
    stratum  [N] int64   the hidden finer label (fine class or subgroup): evaluation only
    split    [N] int64   0 = train, 1 = val, 2 = test (see SPLITS)
    group    [N] int64   optional (Waterbirds: 2 * label + place); None where undefined
    clean_label [N] int64 optional: the label before noise was injected; None when no noise
    origin   [N] int64   optional: each row's index in the dataset as loaded (all splits), kept
                         through subset/subsample, so selections map back to the full dataset

Every transformation (noise, subsampling, labelled fraction) returns a new `StrataDataset`
and appends a record to `transforms`, so a run's config can say exactly what was done.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

SPLITS = {"train": 0, "val": 1, "test": 2}


@dataclass
class StrataDataset:
    name: str
    x: Tensor
    label: Tensor
    stratum: Tensor
    split: Tensor
    class_names: list[str]
    stratum_names: list[str]
    group: Tensor | None = None
    clean_label: Tensor | None = None
    labelled: Tensor | None = None  # [N] bool: which labels the cross-entropy head may see
    transforms: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    origin: Tensor | None = None  # [N] int64: row index in the dataset as loaded (set by load)

    def __post_init__(self) -> None:
        n = self.x.shape[0]
        for key in ("label", "stratum", "split", "group", "clean_label", "labelled", "origin"):
            value = getattr(self, key)
            if value is not None and value.shape != (n,):
                raise ValueError(f"{self.name}: {key} has shape {tuple(value.shape)}, expected ({n},)")

    def __len__(self) -> int:
        return self.x.shape[0]

    # --- views of the data -------------------------------------------------------------
    @property
    def is_image(self) -> bool:
        return self.x.dim() == 4

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_strata(self) -> int:
        return len(self.stratum_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(C, H, W) for images, (D,) for vectors."""
        return tuple(self.x.shape[1:])

    def subset(self, index: Tensor) -> "StrataDataset":
        """Rows `index` (an int64 index or a bool mask [N]) of every per-point tensor."""
        def take(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[index]

        return replace(
            self,
            x=self.x[index], label=self.label[index], stratum=self.stratum[index],
            split=self.split[index], group=take(self.group),
            clean_label=take(self.clean_label), labelled=take(self.labelled), origin=take(self.origin),
            transforms=list(self.transforms), meta=dict(self.meta),
        )

    def rows(self, name: str) -> Tensor:
        """The row numbers [n] (int64) of one split: 'train', 'val' or 'test'."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; choose one of {sorted(SPLITS)}")
        return torch.nonzero(self.split == SPLITS[name]).squeeze(1)

    def get_split(self, name: str) -> "StrataDataset":
        """The rows of one split: 'train', 'val' or 'test'."""
        return self.subset(self.rows(name))

    def with_transform(self, record: dict[str, Any], **changes: Any) -> "StrataDataset":
        """A copy with some fields changed and `record` appended to `transforms`."""
        return replace(self, transforms=[*self.transforms, record], **changes)

    def summary(self) -> dict[str, Any]:
        counts = {s: int((self.split == i).sum()) for s, i in SPLITS.items()}
        return {
            "name": self.name, "input_shape": list(self.input_shape), "num_classes": self.num_classes,
            "num_strata": self.num_strata, "splits": counts, "transforms": self.transforms,
        }


def as_long(values: Any) -> Tensor:
    return torch.as_tensor(values, dtype=torch.int64)
