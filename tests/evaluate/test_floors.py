"""The raw-pixel and random-init floors (issue 16) on the 8x8 digits."""

from __future__ import annotations

import pytest
import torch

from spreadcon import data
from spreadcon.data.views import default_views
from spreadcon.evaluate import metrics, probes
from spreadcon.evaluate.floors import floors

PROBE = {"epochs": 5}


@pytest.fixture(scope="module")
def digits():
    return data.load("digits-coarse")


def test_rows_and_keys(digits):
    rows = floors(digits, encoder="cnn-test", seed=0, probe=PROBE)
    assert [r["loss"] for r in rows] == ["raw-pixels", "random-init"]
    for r in rows:
        assert 0.0 <= r["coarse_accuracy"] <= 1.0 and 0.0 <= r["fine_transfer_accuracy"] <= 1.0
        assert r["split"] == "test" and r["seed"] == 0


def test_raw_pixels_is_the_probe_on_normalised_pixels(digits):
    row = floors(digits, encoder="cnn-test", seed=1, probe=PROBE, split="val")[0]
    prepare = default_views(digits).prepare
    tr, va = digits.split == 0, digits.split == 1
    layer = probes.fit_linear(prepare(digits.x[tr]).flatten(1), digits.stratum[tr], 10, seed=1, **PROBE)
    expected = metrics.accuracy(layer(prepare(digits.x[va]).flatten(1)), digits.stratum[va])
    assert row["fine_transfer_accuracy"] == expected
    assert row["fine_transfer_accuracy"] > 0.8  # linear on 8x8 digits is strong: a real floor


def test_random_init_depends_on_seed_only_and_leaves_the_rng_alone(digits):
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    a = floors(digits, encoder="cnn-test", encoder_options={"widths": [8, 16]}, seed=5, probe=PROBE)[1]
    assert torch.equal(torch.random.get_rng_state(), before)
    b = floors(digits, encoder="cnn-test", encoder_options={"widths": [8, 16]}, seed=5, probe=PROBE)[1]
    c = floors(digits, encoder="cnn-test", encoder_options={"widths": [8, 16]}, seed=6, probe=PROBE)[1]
    assert a == b and (a["coarse_accuracy"], a["fine_transfer_accuracy"]) != (c["coarse_accuracy"], c["fine_transfer_accuracy"])


def test_no_finer_strata_gives_none():
    rows = floors(data.load("digits"), encoder="cnn-test", seed=0, probe=PROBE)
    assert all(r["fine_transfer_accuracy"] is None for r in rows)


def test_bad_split_and_bad_encoder_options(digits):
    with pytest.raises(ValueError, match="split='train'"):
        floors(digits, encoder="cnn-test", split="train")
    with pytest.raises(ValueError, match="no option"):
        floors(digits, encoder="cnn-test", encoder_options={"depth": 3})


def test_coarse_floor_sees_only_the_labelled_rows(digits):
    """With a labelled fraction the coarse probe fits on the labelled train rows (as the CE head
    does), the fine probe on every train row (as coarse-to-fine transfer does)."""
    few = data.labelled_fraction(digits, 0.05, seed=3)
    row = floors(few, encoder="cnn-test", seed=2, probe=PROBE, names=("raw-pixels",))[0]
    prepare = default_views(digits).prepare
    tr, te = digits.split == 0, digits.split == 2
    x_tr, x_te = prepare(digits.x[tr]).flatten(1), prepare(digits.x[te]).flatten(1)
    keep = few.labelled[tr]
    assert 0 < keep.sum() < keep.numel()
    coarse = probes.fit_linear(x_tr[keep], digits.label[tr][keep], digits.num_classes, seed=2, **PROBE)
    fine = probes.fit_linear(x_tr, digits.stratum[tr], digits.num_strata, seed=2, **PROBE)
    assert row["coarse_accuracy"] == metrics.accuracy(coarse(x_te), digits.label[te])
    assert row["fine_transfer_accuracy"] == metrics.accuracy(fine(x_te), digits.stratum[te])
    assert row["coarse_accuracy"] != floors(digits, encoder="cnn-test", seed=2, probe=PROBE,
                                            names=("raw-pixels",))[0]["coarse_accuracy"]
