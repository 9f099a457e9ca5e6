"""Reading the CSV tables that come with image datasets (Waterbirds, ISIC, folder maps)."""

from __future__ import annotations

import csv
from pathlib import Path

from spreadcon.data.paths import corrupt


def read_csv(path: Path, required: tuple[str, ...] = ()) -> list[dict[str, str]]:
    """Rows as dicts; an error naming the file if it is unreadable or lacks `required` columns."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            columns = reader.fieldnames or []
    except (UnicodeDecodeError, csv.Error) as err:
        raise corrupt(path, f"not a readable CSV ({err})") from None
    missing = [c for c in required if c not in columns]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {missing}; it has {columns}")
    if not rows:
        raise ValueError(f"{path} has no rows")
    return rows


def pick_column(columns: list[str], wanted: str | None, candidates: tuple[str, ...], what: str, path: Path) -> str:
    """`wanted` if given (and present), else the first of `candidates` present."""
    if wanted is not None:
        if wanted not in columns:
            raise ValueError(f"{path} has no column {wanted!r} for the {what}; it has {columns}")
        return wanted
    for c in candidates:
        if c in columns:
            return c
    raise ValueError(f"{path}: no {what} column found (tried {list(candidates)}; it has {columns}); "
                     f"name it with the option {what.replace(' ', '_')}_column=...")


SPLIT_NAMES = {"train": 0, "0": 0, "val": 1, "valid": 1, "validation": 1, "1": 1, "test": 2, "2": 2}


def parse_split(value: str, path: Path) -> int:
    try:
        return SPLIT_NAMES[value.strip().lower()]
    except KeyError:
        raise corrupt(path, f"split value {value!r} is none of train/val/test or 0/1/2") from None
