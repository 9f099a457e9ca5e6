"""Outputs owned by their run, configs that cannot drift, values checked at every depth (issue 25),
through the real command line (`spreadcon.cli.main`, in-process) and the public API."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest

from spreadcon.cli import main
from spreadcon.config import TrainConfig, apply_overrides
from spreadcon.evaluate.embed import check_fits
from spreadcon.io import read_json, save_json
from spreadcon.train import train

TINY = ["--dataset", "digits-coarse", "--encoder", "cnn-test", "--epochs", "1", "--batch-size", "512",
        "--no-progress", "--device", "cpu", "--set", "tensorboard=false", "--set", "probe_epochs=2"]


def cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("runs")
    for name in ("a", "b"):
        assert main(["train", *TINY, "--out", str(root / name)]) == 0
    return root / "a", root / "b"


def test_eval_out_may_not_write_into_another_run(two_runs, capsys):
    a, b = two_runs
    before = sorted(p.name for p in b.iterdir())
    for out in (b / "eval", b):
        code, err = cli(capsys, "eval", str(a), "--out", str(out), "--no-pictures", "--probe-epochs", "1")
        assert code == 2 and "lies in the run folder" in err and str(b) in err
    assert sorted(p.name for p in b.iterdir()) == before


def test_coreset_may_not_write_into_another_run_nor_count_a_run_twice(two_runs, capsys):
    a, b = two_runs
    code, err = cli(capsys, "apply", "coreset", str(a), "--size", "0.5", "--out", str(b / "coreset"))
    assert code == 2 and "lies in the run folder" in err
    code, err = cli(capsys, "apply", "coreset", str(a), str(a), "--size", "0.5")
    assert code == 2 and "given more than once" in err


def test_resume_refuses_a_config_edited_by_hand(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "2", "--out", str(out)]) == 0
    config = read_json(out / "config.json")
    save_json({**config, "alpha": 0.2}, out / "config.json")
    code, err = cli(capsys, "train", "--out", str(out), "--resume")
    assert code == 2 and f"alpha: {config['alpha']} (checkpoint) != 0.2 (config.json)" in err


def test_relative_data_root_is_stored_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert TrainConfig(data_root="data").data_root == str(tmp_path / "data")


@pytest.mark.parametrize("override, phrase", [
    ("loss_options.bogus=1", "loss_options {'bogus': 1} do not fit loss 'spread'"),
    ('encoder_options.widths=[8, {"a": 1}]', "encoder 'cnn-test' with encoder_options"),
    ("keep_checkpoints=abc", "keep_checkpoints takes a list of epoch numbers"),
    ('encoder_options.widths="abc"', "encoder 'cnn-test' with encoder_options {'widths': 'abc'}"),
])
def test_nested_values_are_checked_and_named(tmp_path, capsys, override, phrase):
    code, err = cli(capsys, "train", *TINY, "--set", override, "--out", str(tmp_path / "run"))
    assert code == 2 and phrase in err and "Traceback" not in err


def test_eval_on_a_missing_device_is_one_line(two_runs, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    code, err = cli(capsys, "eval", str(two_runs[0]), "--device", "cuda", "--no-pictures")
    assert code == 2 and "CUDA is not available" in err and len(err.strip().splitlines()) == 1


def test_batch_of_one_image_warns(tmp_path):
    config = apply_overrides(TrainConfig(dataset="digits-coarse", encoder="cnn-test", epochs=1, batch_size=1,
                                         subsample_fraction=0.02, out_dir=str(tmp_path / "r"), device="cpu",
                                         progress=False, tensorboard=False, probe_epochs=1), [])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(config)
    assert any("contrasts one image's views with nothing else" in str(w.message) for w in caught)


def test_arrays_larger_than_memory_are_refused_before_allocation():
    with pytest.raises(MemoryError, match="100,000 rows x 100,000 columns"):
        check_fits(100_000, 100_000, what="the logits")
    check_fits(1000, 10, what="small arrays")  # fits: no error


def test_noisy_summaries_are_per_split(two_runs):
    from spreadcon.apps.noisy import NoisyLabelCorrector, apply_to_run

    a = two_runs[0]
    apply_to_run(a, corrector=NoisyLabelCorrector(0.2), split="train")
    apply_to_run(a, corrector=NoisyLabelCorrector(0.2), split="test")
    summaries = {s: json.loads((a / "noisy" / f"{s}_summary.json").read_text())["split"] for s in ("train", "test")}
    assert summaries == {"train": "train", "test": "test"}


def test_a_failed_write_is_not_masked_by_the_lock(tmp_path, monkeypatch):
    """The lock's release never raises over the error that ended the run."""
    from spreadcon.run_lock import RunLock

    lock = RunLock(tmp_path).acquire()
    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: (_ for _ in ()).throw(PermissionError(13, "x")))
    with pytest.raises(OSError, match="disk full"):
        try:
            raise OSError("disk full")
        finally:
            lock.release()
    assert lock.fd is None


def test_training_in_a_log_file_writes_one_line_per_epoch_and_a_final_line(tmp_path, capsys):
    code = main(["train", "--dataset", "digits-coarse", "--encoder", "cnn-test", "--epochs", "2", "--batch-size",
                 "512", "--device", "cpu", "--set", "tensorboard=false", "--out", str(tmp_path / "r")])
    out, err = capsys.readouterr()
    assert code == 0 and "\r" not in err
    assert [line.split(":")[0] for line in err.splitlines() if line.startswith("epoch ")] == ["epoch 1/2", "epoch 2/2"]
    assert "run folder:" in out and "best epoch" in out and "2 of 2 epochs" in out
    assert main(["train", "--out", str(tmp_path / "r"), "--resume"]) == 0
    assert "it had already finished: nothing to resume" in capsys.readouterr().out


def test_recipe_tables_are_kept_in_a_clone_without_the_runs(tmp_path, monkeypatch, capsys):
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "scripts" / "recipe_search.py"
    spec = importlib.util.spec_from_file_location("recipe_search", script)
    recipes = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "recipe_search", recipes)  # as an import would (its dataclasses look it up)
    spec.loader.exec_module(recipes)
    doc = tmp_path / "recipes.md"
    doc.write_text("<!-- tables:begin -->\nmeasured rows\n<!-- tables:end -->\n<!-- tables-H:begin -->\nH rows\n"
                   "<!-- tables-H:end -->\n")
    monkeypatch.setattr(recipes, "DOC", doc)
    monkeypatch.setattr(recipes, "RUNS", tmp_path / "no-runs")
    monkeypatch.setattr(recipes, "LEDGER", tmp_path / "no-ledger.json")
    recipes.write_tables([])
    recipes.write_tables(["H"])
    assert doc.read_text().count("rows") == 2 and "not run" not in doc.read_text()
    assert "kept" in capsys.readouterr().err
