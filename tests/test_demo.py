"""`spreadcon demo`: the `demo` experiment through its own short command, and the alpha it uses."""

from __future__ import annotations

import json
from pathlib import Path

from spreadcon.cli import main
from spreadcon.experiments import demo, registry

RESULTS = Path(__file__).resolve().parents[1] / "results"


def test_demo_smoke(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--smoke", "--out", str(out), "--no-progress"]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["experiment"] == "demo" and result["smoke"] is True
    rows, floors = result["rows"][:3], result["rows"][3:]
    assert [r["loss"] for r in rows] == ["supcon", "simclr", "spread"]
    assert [r["loss"] for r in floors] == ["raw-pixels", "random-init"]  # the floors are rows too (issue 16)
    for r in floors:
        assert 0 <= r["coarse_accuracy"] <= 1 and 0 <= r["fine_transfer_accuracy"] <= 1 and "run_dir" not in r
    for r in rows:
        assert {"loss", "coarse_accuracy", "fine_transfer_accuracy", "intra_class_cosine", "seed",
                "fine_transfer_val_accuracy"} <= set(r)
        assert (out / r["picture"]).exists() and Path(r["run_dir"]).parent == out / "runs"
    report = (out / "table.md").read_text()
    assert "| L_spread (alpha 0.16)" in report and "99.4" in report and "Smoke mode" in report
    assert "| floor: linear probe on the raw pixels |" in report
    assert "| L_SC (SupCon) |" in capsys.readouterr().out  # the report is printed
    # the same command again reuses the three runs and gives the same numbers
    assert main(["demo", "--smoke", "--out", str(out), "--no-progress"]) == 0
    again = json.loads((out / "results.json").read_text())["rows"][:3]
    keys = ("coarse_accuracy", "fine_transfer_accuracy", "intra_class_cosine", "fine_transfer_val_accuracy")
    assert [[r[k] for k in keys] for r in again] == [[r[k] for k in keys] for r in rows]


def test_demo_is_the_registered_experiment():
    assert registry.get("demo") is demo.DEMO and registry.get("demo-alpha") is demo.ALPHA


def test_demo_uses_the_recipe_chosen_on_validation():
    """The demo's alpha and net are the ones docs/recipes.md records as chosen on validation."""
    doc = (RESULTS.parent / demo.RECIPE).read_text()
    chosen = doc[doc.index("## mnist5k-coarse with the cnn: the chosen recipe"):]
    chosen = chosen[:chosen.index("```", chosen.index("```") + 3)]
    assert f"alpha={demo.SELECTED_ALPHA}," in chosen and demo.config["alpha"] == demo.SELECTED_ALPHA
    assert f"epochs={demo.TRAIN['epochs']}," in chosen and "lr=1e-3," in chosen and demo.TRAIN["lr"] == 1e-3
    assert '"proj_dim": 128' in chosen and demo.TRAIN["encoder_options"]["proj_dim"] == 128


def test_demo_bad_device_is_a_one_line_error(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--epochs", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("spreadcon demo: error:") and "epochs must be >= 1" in err
