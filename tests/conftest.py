"""Shared test set-up: headless plotting, and where the optional real data lives."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
# Tests use small tensors: one thread avoids oversubscription (2 cores, several processes).
torch.set_num_threads(1)


def shared_data_dir() -> Path | None:
    """`../shared/data` beside the checkout (CI lays it there), or $SPREADCON_SHARED_DATA."""
    candidates = [os.environ.get("SPREADCON_SHARED_DATA"), Path(__file__).resolve().parents[2] / "shared" / "data"]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    return None


@pytest.fixture
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("../shared/data is not present (it is optional; CI has it)")
    return path
