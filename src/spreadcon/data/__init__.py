"""Datasets with hidden strata, their transformations and batched views.

    ds = spreadcon.data.load("mnist5k-coarse", seed=0)     # all splits; see DATASETS
    train = ds.get_split("train")
    views = default_views(ds)                              # views(x [B, ...], 2, generator) -> [B, 2, ...]
    ds = subsample(ds, 0.5, seed=0); ds = add_label_noise(ds, 0.2, seed=0); ds = labelled_fraction(ds, 0.2, seed=0)
    ds = fit_to_model(ds, spreadcon.models.data_config("timm:resnet18", 1), "timm:resnet18")  # views: 224 px, its mean/std
"""

from spreadcon.data.base import SPLITS, StrataDataset
from spreadcon.data.registry import DATASETS, DatasetInfo, check_root, load
from spreadcon.data.transforms import add_label_noise, labelled_fraction, subsample
from spreadcon.data.views import Views, default_views, fit_to_model

__all__ = ["DATASETS", "check_root", "SPLITS", "DatasetInfo", "StrataDataset", "Views", "add_label_noise", "default_views",
           "fit_to_model", "labelled_fraction", "load", "subsample"]
