"""spreadcon.experiments.table: mean ± std over seeds, markdown tables beside the paper's numbers."""

from __future__ import annotations

import math
import statistics

import pytest

from spreadcon.experiments.table import markdown, mean_std, summarise


def test_mean_std_matches_statistics():
    values = [0.91, 0.935, 0.9, 0.97]
    stat = mean_std(values)
    assert stat.n == 4
    assert stat.mean == pytest.approx(statistics.mean(values))
    assert stat.std == pytest.approx(statistics.stdev(values))  # sample std, ddof = 1
    assert stat.format(100, 1) == f"{statistics.mean(values) * 100:.1f} ± {statistics.stdev(values) * 100:.1f}"


def test_mean_std_single_and_empty():
    assert mean_std([0.5]).format(100, 1) == "50.0"  # one seed: no spread to show
    assert math.isnan(mean_std([]).mean) and mean_std([]).format() == "–"
    assert mean_std([1.0, float("nan"), 3.0]).mean == 2.0  # NaNs dropped


def test_markdown_groups_seeds_and_puts_paper_beside():
    rows = [{"dataset": "d", "loss": l, "seed": s, "acc": v}
            for l, vals in (("supcon", [0.90, 0.92]), ("spread", [0.95, 0.97])) for s, v in enumerate(vals)]
    rows.append({"dataset": "e", "loss": "spread", "seed": 0, "acc": 0.5})
    table = markdown(rows, row_key="dataset", col_key="loss", metric="acc",
                     paper=lambda d, l: {"supcon": 96.5, "spread": 98.1}[l] if d == "d" else None)
    lines = table.splitlines()
    assert lines[0] == "| dataset | supcon | spread | supcon (paper) | spread (paper) |"
    assert lines[2] == f"| d | 91.0 ± {statistics.stdev([90, 92]):.1f} | 96.0 ± {statistics.stdev([95, 97]):.1f} | 96.5 | 98.1 |"
    assert lines[3] == "| e | – | 50.0 | – | – |"
    stats = summarise(rows, ("dataset", "loss"), "acc")
    assert stats[("d", "spread")].n == 2 and stats[("d", "spread")].mean == pytest.approx(0.96)


def test_markdown_marks_cells_below_the_raw_pixel_floor():
    rows = [{"dataset": "d", "loss": l, "seed": 0, "acc": v}
            for l, v in (("supcon", 0.80), ("spread", 0.95), ("raw-pixels", 0.90))]
    rows.append({"dataset": "e", "loss": "supcon", "seed": 0, "acc": 0.5})  # no floor in this row: unmarked
    lines = markdown(rows, row_key="dataset", col_key="loss", metric="acc").splitlines()
    assert lines[2] == "| d | 80.0 (below floor) | 95.0 | 90.0 |"
    assert lines[3] == "| e | 50.0 | – | – |"
    assert any("below the `raw-pixels` column" in line for line in lines)
    assert "below floor" not in markdown([r for r in rows if r["loss"] != "supcon"], row_key="dataset",
                                         col_key="loss", metric="acc")


def test_fig4_tables_split_by_protocol_paper_first_with_the_floors_in_each():
    from spreadcon.experiments.fig4 import protocol_tables

    rows = [{"dataset": "d", "embedding": e, "loss": loss, "seed": 0, "fine_transfer_accuracy": acc}
            for e in ("projection", "paper") for loss, acc in (("supcon", 0.5), ("spread", 0.6), ("raw-pixels", 0.55))]
    rows += [{"dataset": "d", "embedding": "projection", "loss": "spread", "seed": 0, "fine_transfer_z_accuracy": 0.7}]
    text = protocol_tables(rows, "fine_transfer_accuracy", probed=True)
    paper, projection = text.index("### Paper protocol"), text.index("### Projection protocol")
    assert paper < projection and text.count("| raw-pixels |") == 2  # the floor column in each table
    assert "50.0 (below floor)" in text[paper:projection] and "probed at h" in text[projection:]
    at_z = protocol_tables(rows, "fine_transfer_z_accuracy", probed=True)
    assert "Paper protocol" not in at_z and "probed at z" in at_z and "raw-pixels" not in at_z
