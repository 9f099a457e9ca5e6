"""The data a timm/torchvision model sees follow its pretrained configuration (input size, mean,
std, interpolation) in the training views and in evaluation; spreadcon's own encoders see the data
exactly as before. The tensor reaching the backbone is caught by a forward pre-hook; oracles are
torchvision's Resize + Normalize with the config timm itself resolves. CPU only, nothing downloaded."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from spreadcon import build, data
from spreadcon.build import build_dataset, build_model
from spreadcon.config import TrainConfig
from spreadcon.data import Views, default_views
from spreadcon.evaluate.embed import split_arrays
from spreadcon.evaluate import probes
from spreadcon.evaluate.floors import floors
from spreadcon.models import build_encoder
from spreadcon.evaluation import evaluate
from spreadcon.runs import load_run
from spreadcon.train import train

timm = pytest.importorskip("timm")

SMALL = {"val_fraction": 0.05, "test_fraction": 0.05}  # 8x8 digits: ~90 val and ~90 test images


def config(encoder: str, out_dir: object = "unused", **changes) -> TrainConfig:
    base = dict(dataset="digits-coarse", dataset_options=SMALL, subsample_fraction=0.05, encoder=encoder,
                loss="spread", epochs=1, batch_size=64, eval_batch_size=4096, lr=1e-3, warmup_epochs=0.0,
                device="cpu", out_dir=str(out_dir), progress=False, tensorboard=False)
    return TrainConfig(**{**base, **changes})


def pretrained(model: str) -> dict:
    """timm's own resolution of the model's pretrained data config (the oracle's settings)."""
    return timm.data.resolve_data_config(pretrained_cfg=timm.get_pretrained_cfg(model).to_dict())


def oracle(x: torch.Tensor, cfg: dict, channels: int) -> torch.Tensor:
    """uint8 [N, C, H, W] -> torchvision Resize (antialiased, the config's interpolation) + Normalize
    with the config's mean/std (averaged over RGB for grey images)."""
    mode = TF.InterpolationMode(cfg["interpolation"])
    unit = TF.resize(x.float() / 255, list(cfg["input_size"][1:]), interpolation=mode, antialias=True)
    unit = unit.clamp(0, 1) if mode == TF.InterpolationMode.BICUBIC else unit
    mean, std = (torch.tensor(cfg[k]) for k in ("mean", "std"))
    if channels != 3:
        mean, std = mean.mean().repeat(channels), std.mean().repeat(channels)
    return TF.normalize(unit, mean.tolist(), std.tolist())


def catch_backbone_inputs(monkeypatch) -> list[tuple[bool, torch.Tensor]]:
    """(training mode, input) of every backbone forward of the model `train` builds."""
    calls: list[tuple[bool, torch.Tensor]] = []

    def build_and_hook(*args, **kwargs):
        model = build_model(*args, **kwargs)
        hook_backbone(model, calls)
        return model

    monkeypatch.setattr("spreadcon.train.build_model", build_and_hook)
    return calls


def hook_backbone(model, calls: list) -> None:
    model.encoder.backbone.register_forward_pre_hook(lambda m, args: calls.append((m.training, args[0].detach().clone())))


def test_views_resize_and_normalise_rgb_images_like_torchvision_with_timms_config():
    cfg = config("timm:test_efficientnet", dataset="spurious-mnist", dataset_options={})
    ds = build_dataset(cfg)
    expected = pretrained("test_efficientnet")  # 160 px, ImageNet mean/std, bicubic
    assert ds.transforms[-1] == {"transform": "model_input", "encoder": "timm:test_efficientnet", "size": [160, 160],
                                 "mean": list(expected["mean"]), "std": list(expected["std"]), "interpolation": "bicubic"}
    assert build_model(cfg, ds.input_shape, ds.num_classes).encoder.input_shape == (3, 160, 160)
    x = ds.x[:12]  # [12, 3, 28, 28] uint8, kept at the data's size in memory
    assert ds.input_shape == (3, 28, 28)
    for recipe in ("ours", "authors"):
        views = default_views(ds, recipe)
        assert torch.allclose(views.prepare(x), oracle(x, expected, 3), atol=1e-6)
        out = views(x, 2, torch.Generator().manual_seed(0))
        assert out.shape == (12, 2, 3, 160, 160)
        augmented = views.augmented(x, 2, torch.Generator().manual_seed(0))  # [12, 2, 3, 28, 28] in [0, 1]
        assert augmented.shape == (12, 2, 3, 28, 28)
        unit = TF.resize(augmented.flatten(0, 1), [160, 160], interpolation=TF.InterpolationMode.BICUBIC,
                         antialias=True).clamp(0, 1)
        assert torch.allclose(out.flatten(0, 1), TF.normalize(unit, list(expected["mean"]), list(expected["std"])),
                              atol=1e-6)
    own = default_views(ds, model_input=False)  # the data's own size and statistics, e.g. for raw-pixel floors
    assert own.size is None and own.prepare(x).shape == (12, 3, 28, 28)


def test_training_and_evaluation_feed_a_timm_model_its_pretrained_input(tmp_path, monkeypatch):
    calls = catch_backbone_inputs(monkeypatch)
    run_dir = train(config("timm:test_resnet", tmp_path / "run"))  # grey 8x8 digits; test_resnet: 160 px, mean = std = 0.5
    expected = pretrained("test_resnet")
    ds = load_run(run_dir).dataset
    val, test = (ds.x[ds.rows(s)] for s in ("val", "test"))
    assert [x.shape[1:] for _, x in calls] == [(1, 160, 160)] * len(calls)  # grey stays one channel (in_chans=1)
    trained = [x for training, x in calls if training]
    assert trained and len(trained[0]) == 2 * 64  # B x V views per step
    for x in trained:  # the views, normalised with the model's statistics: black is (0 - 0.5) / 0.5 = -1
        assert x.min() == -1.0 and x.max() <= 1.0 + 1e-6
    evaluated = [x for training, x in calls if not training and len(x) == len(val)]
    assert len(evaluated) == 2  # validation (one epoch) and the cached embeddings of the val split
    for x in evaluated:
        assert torch.allclose(x, oracle(val, expected, 1), atol=1e-6)

    run = load_run(run_dir)  # evaluation: the rebuilt run, its embeddings of a split, its diagnostics
    assert run.model.encoder.input_shape == (1, 160, 160)
    later: list[tuple[bool, torch.Tensor]] = []
    hook_backbone(run.model, later)
    split_arrays(run.model, run.dataset, "test", 4096, torch.device("cpu"))
    assert len(later) == 1 and not later[0][0] and torch.allclose(later[0][1], oracle(test, expected, 1), atol=1e-6)
    later.clear()
    monkeypatch.setattr("spreadcon.evaluation.load_run", lambda *a, **k: _hooked(load_run(*a, **k), later))
    evaluate(run_dir, probe_epochs=1, pictures=False)  # embeddings cached at training; its diagnostics embed anew
    assert sum(len(x) for _, x in later) == 2 * len(test)  # two augmented views of every test image
    for training, x in later:
        assert not training and x.shape[1:] == (1, 160, 160) and x.min() >= -1.0 - 1e-6 and x.max() <= 1.0 + 1e-6


def _hooked(run, calls):
    hook_backbone(run.model, calls)
    return run


def test_floors_probe_a_timm_model_at_its_input_size_and_raw_pixels_at_the_datas(monkeypatch):
    cfg = config("timm:test_resnet")
    ds = build_dataset(cfg)
    calls: list[tuple[bool, torch.Tensor]] = []
    monkeypatch.setattr("spreadcon.evaluate.floors.build_encoder",
                        lambda *a, **k: _hooked_encoder(build_encoder(*a, **k), calls))
    widths: list[int] = []
    fit_linear = probes.fit_linear
    monkeypatch.setattr(probes, "fit_linear", lambda x, *a, **k: widths.append(x.shape[1]) or fit_linear(x, *a, **k))
    raw, init = floors(ds, encoder=cfg.encoder, encoder_options=cfg.encoder_options, seed=0, probe={"epochs": 1})
    assert widths[:2] == [8 * 8] * 2  # raw pixels: coarse and fine probes on the 8x8 images as loaded
    assert raw["probed"] == "normalised inputs" and init["probed"].startswith("timm:test_resnet at init")
    assert calls and all(x.shape[1:] == (1, 160, 160) for _, x in calls)
    test = ds.x[ds.rows("test")]
    assert any(torch.allclose(x, oracle(test, pretrained("test_resnet"), 1), atol=1e-6) for _, x in calls
               if len(x) == len(test))


def _hooked_encoder(encoder, calls):
    encoder.backbone.register_forward_pre_hook(lambda m, args: calls.append((m.training, args[0].detach().clone())))
    return encoder


def test_pretrained_input_false_keeps_the_data_as_it_is():
    cfg = config("timm:test_resnet", encoder_options={"pretrained_input": False})
    ds = build_dataset(cfg)
    assert "model_input" not in ds.meta and all(t["transform"] != "model_input" for t in ds.transforms)
    model = build_model(cfg, ds.input_shape, ds.num_classes)
    assert model.encoder.input_shape == (1, 8, 8) and model.encoder.options["pretrained_input"] is False
    assert default_views(ds).size is None
    with pytest.raises(ValueError, match="pretrained_input='no' must be true or false"):
        build_dataset(config("timm:test_resnet", encoder_options={"pretrained_input": "no"}))
    with pytest.raises(ValueError, match=r"has no option\(s\) \['pretrained_input'\]"):
        build_model(config("cnn-test", encoder_options={"pretrained_input": True}), (1, 8, 8), 2)


def test_torchvision_grey_data_get_the_averaged_imagenet_statistics():
    fit = build.model_input(config("torchvision:resnet18"), (1, 8, 8))
    assert fit["input_size"] == (1, 224, 224)
    assert fit["mean"] == pytest.approx([sum((0.485, 0.456, 0.406)) / 3])
    assert fit["std"] == pytest.approx([sum((0.229, 0.224, 0.225)) / 3])
    assert build.model_input(config("cnn-test"), (1, 8, 8)) is None


def test_spreadcon_encoders_see_the_data_exactly_as_before(tmp_path, monkeypatch):
    cfg = config("cnn-test", tmp_path / "run")
    ds = build_dataset(cfg)
    loaded = data.load("digits-coarse", **SMALL)
    assert "model_input" not in ds.meta and [t["transform"] for t in ds.transforms] == ["subsample"]
    assert ds.meta == loaded.meta
    mean, std = tuple(ds.meta["mean"]), tuple(ds.meta["std"])
    x = ds.x[:20]
    for recipe, before in (("ours", Views(kind="digits", mean=mean, std=std, pad=1)),
                           ("authors", Views(kind="simclr", mean=mean, std=std, gray_p=0.0))):
        views = default_views(ds, recipe)
        assert views == before and views.size is None
        assert torch.equal(views(x, 2, torch.Generator().manual_seed(3)),
                           before.normalise(before.augment(x.float().div(255).repeat_interleave(2, 0),
                                                           torch.Generator().manual_seed(3))).view(20, 2, 1, 8, 8))
    formula = (ds.x.float() / 255 - mean[0]) / std[0]  # the normalisation alone, at the data's size
    assert torch.equal(default_views(ds).prepare(ds.x), formula)

    calls = catch_backbone_inputs(monkeypatch)
    train(cfg)
    assert [x.shape[1:] for _, x in calls] == [(1, 8, 8)] * len(calls)
    val = ds.rows("val")
    evaluated = [x for training, x in calls if not training and len(x) == len(val)]
    assert evaluated and all(torch.equal(x, formula[val]) for x in evaluated)
