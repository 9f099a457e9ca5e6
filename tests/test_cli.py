"""The `spreadcon` subcommands this package's trainer owns: train, eval, list, demo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from spreadcon.cli import main

TINY = ["--dataset", "digits-coarse", "--encoder", "cnn-test", "--epochs", "1", "--batch-size", "256",
        "--no-progress", "--set", "tensorboard=false"]



def test_help_names_every_option(capsys):
    for argv in ([], ["train"], ["eval"], ["list"], ["demo"]):
        with pytest.raises(SystemExit) as exit_:
            main([*argv, "--help"])
        assert exit_.value.code == 0
    out = capsys.readouterr().out
    for word in ("train", "eval", "list", "demo", "--dataset", "--encoder", "--loss", "--alpha", "--temperature",
                 "--epochs", "--batch-size", "--seed", "--out", "--set", "--resume", "--checkpoint",
                 "--probe-epochs", "--smoke", "keep_checkpoints"):
        assert word in out, word


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("datasets:", "mnist5k-coarse", "encoders:", "cnn-test", "losses:", "spread", "supcon", "simclr"):
        assert name in out, name
    assert main(["list", "losses"]) == 0
    out = capsys.readouterr().out
    assert "datasets:" not in out and "L_spread = alpha * L_attract" in out


def test_train_resume_refusal_and_eval(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "--alpha", "0.25", "--set", "keep_checkpoints=[1]", "--out", str(run_dir)]) == 0
    config = json.loads((run_dir / "config.json").read_text())
    assert config["alpha"] == 0.25 and config["keep_checkpoints"] == [1] and config["dataset"] == "digits-coarse"
    # resuming a finished run reads its config and does nothing new; a different option is refused
    assert main(["train", "--out", str(run_dir), "--resume", "--no-progress"]) == 0
    assert main(["train", "--out", str(run_dir), "--resume", "--alpha", "0.5", "--set", "epochs=3"]) == 2
    err = capsys.readouterr().err
    assert "differing keys" in err and "alpha: 0.25 (saved) != 0.5" in err and "epochs" in err
    # a second fresh run into the same folder is refused
    assert main(["train", *TINY, "--out", str(run_dir)]) == 2
    assert "already holds a run" in capsys.readouterr().err

    assert main(["eval", str(run_dir), "--probe-epochs", "2", "--no-pictures"]) == 0
    result = json.loads((run_dir / "eval" / "eval.json").read_text())
    for key in ("coarse_accuracy", "auroc", "coarse_val_accuracy", "fine_transfer_accuracy",
                "fine_transfer_val_accuracy", "intra_class_cosine", "alignment", "uniformity", "strata"):
        assert key in result, key
    assert 0 <= result["fine_transfer_accuracy"] <= 1 and -1 <= result["intra_class_cosine"] <= 1
    assert "| coarse_accuracy |" in (run_dir / "eval" / "eval.md").read_text()
    # the kNN probe and retrieval metrics on the fine labels: the numbers of the cached embeddings
    from spreadcon.evaluate.retrieval import knn_probe
    from spreadcon.evaluation import layer_keys
    from spreadcon.runs import load_run

    run = load_run(run_dir)
    tr, te = ({k: torch.from_numpy(v) for k, v in run.embeddings(s).items()} for s in ("train", "test"))
    h = layer_keys(tr)[""]  # the recipe picked for digits has a projection head: the probes read h
    assert h == "features" and result["fine_knn_accuracy"] == knn_probe(
        tr[h], tr["stratum"], te[h], te["stratum"], num_classes=run.dataset.num_strata)["accuracy"]
    assert 0 <= result["fine_precision_at_1"] <= 1 and 0 <= result["fine_map_at_r"] <= 1
    assert "| fine_knn_accuracy |" in (run_dir / "eval" / "eval.md").read_text()
    stamped = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert stamped["stamp"]["file"] == "best.pt" and stamped["stamp"]["epoch"] == 1 and stamped["status"] == "1 of 1 epochs"
    assert main(["eval", str(run_dir), "--check"]) == 0

    # a changed checkpoint makes eval/ stale: --check refuses, a new eval replaces it
    best = run_dir / "best.pt"

    state = torch.load(best, weights_only=False)
    state["val_acc"] = -1.0
    torch.save(state, best)
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--check"]) == 2
    err = capsys.readouterr().err
    assert "stale:" in err and "has changed since" in err and "Traceback" not in err
    assert main(["eval", str(run_dir), "--probe-epochs", "1", "--no-pictures"]) == 0
    assert "replaced a stale evaluation" in capsys.readouterr().err
    assert main(["eval", str(run_dir), "--check"]) == 0


def test_eval_of_an_unfinished_run_says_so(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(run_dir)]) == 0
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**config, "epochs": 3}))  # as if killed after epoch 1 of 3
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--probe-epochs", "1", "--no-pictures"]) == 0
    captured = capsys.readouterr()
    assert "1 of 3 epochs: unfinished" in captured.out and "--resume" in captured.err
    result = json.loads((run_dir / "eval" / "eval.json").read_text())
    assert result["finished"] is False and result["epochs_trained"] == 1


def test_corrupt_run_files_are_named_with_their_line(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(run_dir)]) == 0
    metrics = run_dir / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + "{not json\n")
    capsys.readouterr()
    assert main(["eval", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert f"{metrics} line 2 is not valid JSON" in err and "Traceback" not in err
    (run_dir / "config.json").write_text('{"epochs": 1,\n "alpha": }')
    assert main(["eval", str(run_dir)]) == 2
    assert f"{run_dir / 'config.json'} is not valid JSON (line 2" in capsys.readouterr().err
    (run_dir / "config.json").write_text('{"epochs": 1, "colour": "red"}')
    assert main(["eval", str(run_dir)]) == 2
    assert "unknown config keys ['colour']" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "nope"], "unknown dataset 'nope'; known datasets:"),
    (["--loss", "nope"], "unknown loss 'nope'; known losses:"),
    (["--set", "nope=1"], "unknown config key 'nope'"),
])
def test_train_bad_input(tmp_path, capsys, argv, message):
    assert main(["train", *TINY, *argv, "--out", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err


def test_eval_of_a_non_run(tmp_path, capsys):
    assert main(["eval", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nope")]) == 2
    assert "is not a run folder (no such folder)" in capsys.readouterr().err


def test_train_overwrite_is_wired_through_or_refused(tmp_path, capsys):
    import inspect

    from spreadcon.train import train

    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(run_dir)]) == 0
    capsys.readouterr()
    code = main(["train", *TINY, "--seed", "1", "--out", str(run_dir), "--overwrite"])
    if "overwrite" in inspect.signature(train).parameters:
        assert code == 0 and json.loads((run_dir / "config.json").read_text())["seed"] == 1
    else:
        assert code == 2 and "cannot overwrite a run yet" in capsys.readouterr().err


def test_apply_has_one_mode_per_parser_and_no_upward_import(capsys):
    source = (Path(__file__).resolve().parents[1] / "src" / "spreadcon" / "commands" / "apply.py").read_text()
    assert "spreadcon.cli" not in source
    for app in ("robustness", "noisy", "coreset"):
        with pytest.raises(SystemExit) as exit_:
            main(["apply", app])  # RUN_DIR is required: no experiment mode without it
        assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "the following arguments are required: RUN_DIR" in err or "required: run_dir" in err
