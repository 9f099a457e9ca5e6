"""The README: its library example runs as printed (a newcomer's first copy-paste), and every number
in its demo and results sections is generated from results/ (scripts/readme_numbers.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_library_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README shows no Python example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102 - our own README
    assert 0.0 <= float(namespace["loss"]) and namespace["bank"].dim == 128


# --- every number in the README comes from a result (issue 26) --------------------------------------
def test_generated_sections_match_the_results():
    """README.md's demo and results sections are what scripts/readme_numbers.py makes of results/."""
    from spreadcon.experiments import readme

    text = README.read_text()
    assert text.count("<!-- demo:begin -->") == 1 and text.count("<!-- results:begin -->") == 1
    assert readme.regenerate(README) == text, "README.md is stale: run python scripts/readme_numbers.py"


def test_demo_section_says_how_to_make_it_until_results_demo_exists(tmp_path):
    from spreadcon.experiments import readme

    assert "not yet regenerated: run `spreadcon reproduce demo`" in readme.sections(tmp_path)["demo"]
    rows = [{"dataset": "mnist5k-coarse", "embedding": e, "loss": loss, "seed": 0, "coarse_accuracy": 0.98,
             "fine_transfer_accuracy": acc, "intra_class_cosine": 0.5, "n_test": 1000, "train_seconds": 60.0,
             **({"fine_transfer_z_accuracy": acc, "intra_class_z_cosine": 0.3} if e == "projection" else {})}
            for e in ("paper", "projection") for loss, acc in (("supcon", 0.90), ("simclr", 0.93), ("spread", 0.96))]
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "results.json").write_text(json.dumps({"experiment": "demo", "rows": rows, "claims": []}))
    section = readme.sections(tmp_path)["demo"]
    assert "[results/demo/results.json](results/demo/results.json)" in section
    assert "Training steps took 360 s" in section
    assert section.index("The paper's protocol") < section.index("Second finding")
    assert "| L_spread | 98.0 | 99.4 | 96.0 | 99.0 | 0.500 |" in section and "+6.0 points against L_SC's" in section


def test_findings_read_rows_not_old_claims_and_compute_the_coreset_sentence():
    """A results.json with two-field claims: the numbers come from its rows; "beats every baseline"
    is computed (issue 26: class-balanced EL2N 97.96 against the difficulty coreset's 97.86 at 50%)."""
    from spreadcon.experiments.findings import FINDINGS

    coresets = [[{"method": m, "size": 0.5, "coarse_accuracy": a + 0.001 * s} for m, a in
                 (("strata", 0.9786), ("random", 0.975), ("el2n-cb", 0.9796))] for s in range(3)]
    data = {"seeds": 3, "claims": [["0.5: strata beats every baseline", "yes (within one seed std)"]],
            "rows": [{"seed": s, "coresets": c + [{"method": "full", "size": 1.0, "coarse_accuracy": 0.98}]}
                     for s, c in enumerate(coresets)]}
    text = FINDINGS["fig5-coreset"](data)
    assert "highest mean at no size" in text and "beats every baseline, paired over seeds, at no size" in text
    assert "50%: L_spread difficulty 97.96, best EL2N, class-balanced 98.06" in text
    data["rows"] = [{"seed": s, "coresets": [{**c, "coarse_accuracy": 0.99 + 0.001 * s} if c["method"] == "strata"
                                              else c for c in row["coresets"]]} for s, row in enumerate(data["rows"])]
    assert "beats every baseline, paired over seeds, at 50%" in FINDINGS["fig5-coreset"](data)


def test_wrapping_never_turns_a_difference_into_a_bullet():
    from spreadcon.experiments.readme import BLOCK_START, replace_sections, wrap

    line = "- " + " ".join(["L_spread - L_SC = +1.0 points;"] * 30)
    wrapped = wrap(line).split("\n")
    assert len(wrapped) > 3 and all(len(x) <= 100 for x in wrapped)
    assert not any(BLOCK_START.match(x) for x in wrapped[1:])
    assert replace_sections("a\n<!-- x:begin -->\nold\n<!-- x:end -->\nb", {"x": "new\n"}) == \
        "a\n<!-- x:begin -->\nnew\n<!-- x:end -->\nb"
    with pytest.raises(ValueError, match="exactly one"):
        replace_sections("no markers", {"x": "new"})
