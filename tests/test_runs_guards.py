"""Outputs owned by their run, configs that cannot drift, values checked at every depth (issue 25),
through the real command line (`spreadcon.cli.main`, in-process) and the public API."""

from __future__ import annotations

import json
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
    assert code == 2 and "alpha: 0.5 (checkpoint) != 0.2 (config.json)" in err


def test_relative_data_root_is_stored_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert TrainConfig(data_root="data").data_root == str(tmp_path / "data")


@pytest.mark.parametrize("override, phrase", [
    ("loss_options.bogus=1", "loss_options {'bogus': 1} do not fit loss 'spread'"),
    ('encoder_options.widths=[8, {"a": 1}]', "encoder 'cnn-test' with encoder_options"),
    ("keep_checkpoints=abc", "keep_checkpoints takes a list of epoch numbers"),
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
