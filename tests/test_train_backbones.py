"""A user's own backbone through the trainer and the CLI: a timm model with a local weights file,
one epoch on real digits, freezing the backbone for the first epochs, a backbone lr multiplier.
Nothing is downloaded."""

from __future__ import annotations

import pytest
import torch

from spreadcon.build import build_model
from spreadcon.cli import main
from spreadcon.config import TrainConfig
from spreadcon.runs import load_run
from spreadcon.train import train

timm = pytest.importorskip("timm")

TIMM = "timm:test_resnet"


def config(tmp_path, name: str, **changes) -> TrainConfig:
    # the data's own 28 px (pretrained_input=false) for speed: the resize to the model's 160 px is
    # tested in tests/test_model_input.py (and the CLI test below runs with it)
    base = dict(dataset="mnist5k-coarse", subsample_fraction=0.06, encoder=TIMM, loss="spread", epochs=1,
                batch_size=64, lr=1e-3, weight_decay=0.0, warmup_epochs=0.0, probe_epochs=2, device="cpu",
                out_dir=str(tmp_path / name), progress=False, tensorboard=False,
                encoder_options={"pretrained_input": False})
    return TrainConfig(**{**base, **changes})


def backbone(run_dir) -> dict[str, torch.Tensor]:
    model = load_run(run_dir, checkpoint="last").model
    return {k: v.clone() for k, v in model.encoder.backbone.state_dict().items() if v.is_floating_point()}


def test_cli_trains_a_timm_backbone_from_a_local_weights_file(tmp_path):
    torch.manual_seed(1)
    source = timm.create_model("test_resnet", num_classes=0, in_chans=1)
    weights = tmp_path / "backbone.pth"
    torch.save(source.state_dict(), weights)
    out = tmp_path / "run"
    assert main(["train", "--dataset", "mnist5k-coarse", "--encoder", TIMM, "--weights", str(weights),
                 "--epochs", "1", "--batch-size", "64", "--set", "subsample_fraction=0.06", "--set", "probe_epochs=2",
                 "--device", "cpu", "--no-progress", "--out", str(out)]) == 0
    run = load_run(out)
    assert run.config.encoder_options["weights"] == str(weights.resolve())
    assert run.metrics[0]["epoch"] == 1 and torch.isfinite(torch.tensor(run.metrics[0]["loss"]))
    # the run started from the file: rebuilt from the config with the file, the model is the saved one
    started = build_model(run.config, (1, 28, 28), 2).encoder.backbone.state_dict()
    assert all(torch.equal(started[k], v) for k, v in source.state_dict().items())
    assert not torch.equal(source.state_dict()["conv1.0.weight"], run.model.encoder.backbone.state_dict()["conv1.0.weight"])


def test_weights_file_is_loaded_strictly_and_names_the_keys(tmp_path):
    weights = tmp_path / "other.pth"
    torch.save({"not_a_layer.weight": torch.zeros(3)}, weights)
    cfg = config(tmp_path, "bad", encoder_options={"weights": str(weights)})
    with pytest.raises(ValueError, match="not_a_layer"):
        build_model(cfg, (1, 28, 28), 2)


def test_frozen_backbone_stays_put_then_trains(tmp_path):
    init = build_model(config(tmp_path, "x"), (1, 28, 28), 2).encoder.backbone.state_dict()
    frozen = backbone(train(config(tmp_path, "frozen", freeze_backbone_epochs=1)))
    assert all(torch.equal(frozen[k], init[k]) for k in frozen if "running" not in k)
    tuned = backbone(train(config(tmp_path, "tuned", epochs=2, freeze_backbone_epochs=1)))
    assert any(not torch.equal(tuned[k], init[k]) for k in tuned)


def test_backbone_lr_multiplier_zero_keeps_the_backbone(tmp_path):
    init = build_model(config(tmp_path, "x"), (1, 28, 28), 2).encoder.backbone.state_dict()
    still = backbone(train(config(tmp_path, "mult0", backbone_lr_mult=0.0)))
    moved = backbone(train(config(tmp_path, "mult1")))
    weights = [k for k in still if "running" not in k and "num_batches" not in k]
    assert all(torch.equal(still[k], init[k]) for k in weights)
    assert any(not torch.equal(moved[k], init[k]) for k in weights)
