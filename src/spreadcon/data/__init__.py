"""Datasets with hidden strata: see `spreadcon.data.base.StrataDataset`."""

from spreadcon.data.base import SPLITS, StrataDataset

__all__ = ["SPLITS", "StrataDataset"]
