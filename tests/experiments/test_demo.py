"""`spreadcon demo`: the `demo` experiment through its own short command, both protocols, and its alpha."""

from __future__ import annotations

import json
from pathlib import Path

from spreadcon.cli import main
from spreadcon.experiments import common, demo, registry
from spreadcon.experiments.recipes import PAPER_ALPHA, PAPER_TRAIN, SMALL_TRAIN
from spreadcon.experiments.runner import plan_runs, resolve_config

RESULTS = Path(__file__).resolve().parents[2] / "results"
# per protocol, the paper's first: the three losses, then the two floors on that protocol's net
PLANNED = [(e, loss) for e in ("paper", "projection") for loss in ("supcon", "simclr", "spread", "raw-pixels",
                                                                   "random-init")]


def test_demo_smoke(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--smoke", "--out", str(out), "--no-progress"]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["experiment"] == "demo" and result["smoke"] is True
    rows = result["rows"]
    assert [(r["embedding"], r["loss"]) for r in rows] == PLANNED
    trained = [r for r in rows if r["loss"] in demo.LOSSES]
    for r in rows:
        if r not in trained:  # the floors are rows too (issue 16), on each protocol's net
            assert 0 <= r["coarse_accuracy"] <= 1 and 0 <= r["fine_transfer_accuracy"] <= 1 and "run_dir" not in r
    for r in trained:
        assert {"loss", "coarse_accuracy", "fine_transfer_accuracy", "intra_class_cosine", "seed", "n_test",
                "fine_transfer_val_accuracy"} <= set(r)
        assert (out / r["picture"]).exists() and Path(r["run_dir"]).parent == out / "runs"
        assert ("fine_transfer_z_accuracy" in r) == (r["embedding"] == "projection")  # z only with a head
    report = (out / "table.md").read_text()
    assert report.index("### The paper's protocol") < report.index("### Second finding: with a projection head")
    assert f"| L_spread (alpha {demo.config['alphas']['paper']})" in report and "| L_spread (alpha 0.16)" in report
    assert "99.4" in report
    assert "Smoke mode" in report and "| floor: linear probe on the raw pixels |" in report
    assert "Xue et al., ICLR 2024" in report and "binomial standard error" in report
    assert "not distinguishable" in report and "(one paired seed: no interval)" in report  # one seed: no verdict
    assert all(c[2].startswith("not distinguishable") for c in result["claims"])
    assert "| L_SC (SupCon) |" in capsys.readouterr().out  # the report is printed
    # the same command again reuses the six runs and gives the same numbers
    assert main(["demo", "--smoke", "--out", str(out), "--no-progress"]) == 0
    again = json.loads((out / "results.json").read_text())["rows"]
    keys = ("coarse_accuracy", "fine_transfer_accuracy", "intra_class_cosine", "fine_transfer_val_accuracy")
    assert [[r[k] for k in keys] for r in again if r in trained or "n_test" in r] == [[r[k] for k in keys]
                                                                                      for r in trained]


def test_demo_plans_both_protocols_paper_first_with_floors_on_each_net():
    cfg = resolve_config(demo.DEMO, "small", False)
    specs = plan_runs(demo.DEMO, cfg, [0])
    assert [(s.labels["embedding"], s.labels["loss"]) for s in specs] == PLANNED
    trains = {(s.labels["embedding"], s.labels["loss"]): s.params["train"] for s in specs}
    configs = {(s.labels["embedding"], s.labels["loss"]): common.spec_config(s) for s in specs}
    assert trains[("paper", "spread")]["encoder_options"] == PAPER_TRAIN["encoder_options"]
    assert configs[("paper", "spread")].alpha == PAPER_ALPHA["mnist5k-coarse"]  # E.2 under the paper protocol
    assert configs[("projection", "spread")].alpha == 0.16
    assert trains[("paper", "random-init")]["encoder_options"] == PAPER_TRAIN["encoder_options"]  # its own net
    assert trains[("projection", "random-init")]["encoder_options"] == SMALL_TRAIN["encoder_options"]
    assert sum("floor" not in s.params for s in specs) == 6  # six training runs: about 10 minutes on 2 cores


def test_demo_summary_reads_rows_of_either_format():
    """The README's demo section is demo.summary: it works on rows with and without `embedding`."""
    row = {"dataset": "mnist5k-coarse", "seed": 0, "coarse_accuracy": 0.98, "fine_transfer_accuracy": 0.9,
           "intra_class_cosine": 0.5, "n_test": 1000}
    rows = [{**row, "embedding": e, "loss": loss, "fine_transfer_accuracy": acc, "fine_transfer_z_accuracy": acc}
            for e in ("paper", "projection") for loss, acc in (("supcon", 0.9), ("simclr", 0.92), ("spread", 0.95))]
    text = demo.summary(rows)
    assert "+5.0 points against L_SC's and +3.0 against L_SS's" in text
    assert "about 0.9 points (its binomial standard error" in text  # p = 0.9 (nearest 0.5), n = 1000
    old = [{k: v for k, v in r.items() if k != "embedding"} for r in rows[3:]]
    assert "Second finding" in demo.summary(old) and "paper's protocol" not in demo.summary(old)


def test_demo_is_the_registered_experiment():
    assert registry.get("demo") is demo.DEMO and registry.get("demo-alpha") is demo.ALPHA


def test_demo_uses_the_recipe_chosen_on_validation():
    """The projection protocol's alpha and net are the ones docs/recipes.md records as chosen on
    validation; the paper protocol's alpha is E.2's choice under its recipe (results/sweep-paper)."""
    doc = (RESULTS.parent / demo.RECIPE).read_text()
    chosen = doc[doc.index("## mnist5k-coarse with the cnn: the chosen recipe"):]
    chosen = chosen[:chosen.index("```", chosen.index("```") + 3)]
    assert f"alpha={demo.SELECTED_ALPHA}," in chosen and demo.config["alphas"]["projection"] == demo.SELECTED_ALPHA
    assert f"epochs={demo.TRAIN['epochs']}," in chosen and "lr=1e-3," in chosen and demo.TRAIN["lr"] == 1e-3
    assert '"proj_dim": 128' in chosen and demo.TRAIN["encoder_options"]["proj_dim"] == 128
    assert demo.config["alphas"]["paper"] == PAPER_ALPHA["mnist5k-coarse"] and demo.PAPER["embedding"] == "paper"
    swept = json.loads((RESULTS / "sweep-paper" / "results.json").read_text())
    assert "selected (0.5, 0.5)" in json.dumps(swept["claims"]) and PAPER_ALPHA["mnist5k-coarse"] == 0.5
    assert "The paper protocol" in doc  # stage P, which chose recipes.PAPER_TRAIN


def test_demo_bad_device_is_a_one_line_error(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--epochs", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("spreadcon demo: error:") and "epochs must be >= 1" in err
