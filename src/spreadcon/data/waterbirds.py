"""`waterbirds`: the Waterbirds folder (Sagawa et al. 2020) with its metadata.csv.

metadata.csv columns: img_filename (relative to the folder), y (0 landbird, 1 waterbird),
split (0 train, 1 val, 2 test), place (0 land, 1 water background). group = 2 * y + place is
also the stratum. Images are resized (shorter side) and centre-cropped to image_size.

    x [N, 3, S, S] uint8 (S = image_size, default 224)
"""

from __future__ import annotations

from pathlib import Path

import torch

from spreadcon.data.base import StrataDataset
from spreadcon.data.images import read_images
from spreadcon.data.paths import corrupt, find_dir
from spreadcon.data.tables import parse_split, read_csv

LAYOUT = """  ROOT/metadata.csv        columns img_filename, y, split, place (as in waterbird_complete95_forest2water2/)
  ROOT/<img_filename>      e.g. ROOT/001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg
(ROOT may also be the folder that contains waterbird_complete95_forest2water2/)"""
CLASS_NAMES = ["landbird", "waterbird"]
PLACE_NAMES = ["land", "water"]


def waterbirds(root: Path, seed: int = 0, *, image_size: int = 224) -> StrataDataset:
    folder = find_dir(root, "metadata.csv", ("", "waterbird_complete95_forest2water2", "waterbirds"), LAYOUT)
    table = folder / "metadata.csv"
    rows = read_csv(table, required=("img_filename", "y", "split", "place"))
    try:
        label = torch.tensor([int(r["y"]) for r in rows])
        place = torch.tensor([int(r["place"]) for r in rows])
    except ValueError as err:
        raise corrupt(table, f"y and place must be 0 or 1 ({err})") from None
    if not (set(label.tolist()) <= {0, 1} and set(place.tolist()) <= {0, 1}):
        raise corrupt(table, "y and place must be 0 or 1")
    split = torch.tensor([parse_split(r["split"], table) for r in rows])
    x = read_images([folder / r["img_filename"] for r in rows], image_size)
    group = 2 * label + place
    return StrataDataset(
        name="waterbirds", x=x, label=label, stratum=group.clone(), split=split, group=group,
        class_names=CLASS_NAMES, stratum_names=[f"{c} / {p}" for c in CLASS_NAMES for p in PLACE_NAMES],
        meta={"image_size": image_size, "place_names": PLACE_NAMES},
    )
