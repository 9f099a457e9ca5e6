"""benchmarks/device_check.py --dry-run works end to end on the CPU (CI covers the GPU script).

One run in a fresh process (the dry run switches Triton's interpreter on before triton is
imported), then checks that every step finished and that the files hold what they promise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("tests", "losses", "tiles", "ddp", "throughput", "full_scale", "projection")


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("device_check")
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    env.pop("TRITON_INTERPRET", None)
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "device_check.py"), "--out", str(out),
                           "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return out


def test_dry_run_finishes_every_step_without_error(dry_run):
    report = json.loads((dry_run / "device_check.json").read_text())
    assert report["dry_run"] is True
    failed = {name: step.get("error") for name, step in report["steps"].items() if "error" in step}
    assert not failed, failed
    assert set(report["steps"]) == set(STEPS)
    assert report["steps"]["tests"]["returncode"] == 0
    assert report["steps"]["ddp"]["returncodes"] == [0, 0] and report["steps"]["ddp"]["run_folder"]


def test_dry_run_measures_every_loss_method_including_the_fused_kernel(dry_run):
    rows = json.loads((dry_run / "device_check.json").read_text())["steps"]["losses"]["rows"]
    assert {r["method"] for r in rows} == {"fused", "dense", "lean", "pml"}
    assert all("seconds" in r and "error" not in r for r in rows), [r for r in rows if "error" in r]
    fused = [r for r in rows if r["method"] == "fused"]
    assert all(r["x_lean"] > 0 for r in fused) and all("x_pml" in r for r in fused if r["loss"] == "supcon")


def test_dry_run_times_every_tile_size_in_both_dtypes(dry_run):
    rows = json.loads((dry_run / "device_check.json").read_text())["steps"]["tiles"]["rows"]
    assert {r["dtype"] for r in rows} == {"float32", "bfloat16"} and len(rows) == 4
    assert all(r["seconds"] > 0 for r in rows), rows


def test_dry_run_reports_throughput_the_short_run_and_a_projection_per_figure4_row(dry_run):
    from spreadcon.experiments import fig4

    steps = json.loads((dry_run / "device_check.json").read_text())["steps"]
    assert [r["compiled"] for r in steps["throughput"]["rows"]] == [False, True, False]
    assert all(r["images_per_s"] > 0 for r in steps["throughput"]["rows"])
    for loss in ("supcon", "spread"):
        run = steps["full_scale"]["runs"][loss]
        assert 0 <= run["coarse_accuracy"] <= 1 and 0 <= run["transfer_accuracy"] <= 1
        assert -1 <= run["intra_class_cosine"] <= 1
    projected = steps["projection"]["rows"]
    assert len(projected) == len(fig4.end_full["datasets"]) + len(fig4.transfer_full["datasets"])
    vit = [r for r in projected if r["encoder"] == "vit"]
    assert all(r["hours"] > 0 and r["epochs"] == 600 for r in vit)


def test_markdown_holds_every_table(dry_run):
    text = (dry_run / "device_check.md").read_text()
    for heading in ("## Loss forward+backward", "## Fused kernel tile sizes", "## Training throughput", "## Short run", "## Projected wall time"):
        assert heading in text
    assert "FAILED" not in text


def test_a_failing_step_is_recorded_and_the_check_goes_on(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import device_check
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    report = {"steps": {}}

    def broken():
        raise RuntimeError("no such GPU")

    assert "no such GPU" in device_check._run_step(report, "tests", broken)["error"]
    report.update(device="CPU", dry_run=True, torch="x", triton=None, seconds=0.0)
    assert "## tests: FAILED" in device_check.markdown(report)
