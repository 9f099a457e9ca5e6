"""timm: and torchvision: encoders: shapes, local weight files (strict, round trips), input sizes,
names, data_config, and a real digits batch through a timm backbone. Nothing is downloaded."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from spreadcon.models import Classifier, build_encoder, data_config, describe, encoder_options
from spreadcon.models.external import MissingExtra

timm = pytest.importorskip("timm")

TIMM = "timm:test_resnet"  # one of timm's registered test-size models (372k parameters)
SHAPE = (3, 32, 32)


def _timm_encoder(seed: int, **options):
    torch.manual_seed(seed)
    return build_encoder(TIMM, SHAPE, proj_dim=16, **options).eval()


def test_timm_encoder_shapes_heads_and_data_config():
    enc = _timm_encoder(0)
    x = torch.randn(4, *SHAPE)
    assert enc.forward_features(x).shape == (4, enc.feature_dim) and enc(x).shape == (4, 16)
    assert enc.feature_dim == timm.create_model("test_resnet", num_classes=0).num_features
    assert enc.has_projection and Classifier(enc, 5).has_projection
    assert not build_encoder(TIMM, SHAPE).has_projection
    assert enc.data_config == {"input_size": (3, 160, 160), "mean": (0.5,) * 3, "std": (0.5,) * 3,
                               "interpolation": "bilinear", "crop_pct": 0.95}
    assert data_config(TIMM) == enc.data_config and data_config("cnn") is None
    assert encoder_options(TIMM) == ["weights", "pretrained", "model_kwargs", "pretrained_input"]
    assert "timm" in describe("timm:NAME") and describe(TIMM) == describe("timm:NAME")
    assert enc.init_source == {"pretrained": False, "weights": None, "dropped": [], "adapted": []}


@pytest.mark.parametrize("suffix, wrap", [(".pth", None), (".pt", "state_dict"), (".safetensors", None)])
def test_timm_weights_file_round_trip_gives_identical_outputs(tmp_path, suffix, wrap):
    src, x = _timm_encoder(0), torch.randn(3, *SHAPE)
    state = src.backbone.state_dict()
    path = tmp_path / f"backbone{suffix}"
    if suffix == ".safetensors":
        pytest.importorskip("safetensors").torch.save_file(state, str(path))
    else:
        torch.save({wrap: state} if wrap else state, path)
    dst = _timm_encoder(1, weights=str(path))
    assert torch.equal(dst.forward_features(x), src.forward_features(x))
    assert dst.init_source["weights"] == str(path.resolve())
    assert "weights" not in dst.options  # options rebuild the architecture, reading no file
    again = build_encoder(TIMM, SHAPE, **dst.options)
    again.load_state_dict(dst.state_dict())


def test_timm_classifier_keys_of_a_full_model_are_dropped(tmp_path):
    torch.manual_seed(0)
    full = timm.create_model("test_resnet", num_classes=7).eval()  # timm's own format, with its fc
    torch.save({"model": full.state_dict()}, tmp_path / "full.pth")
    enc = _timm_encoder(1, weights=tmp_path / "full.pth")
    assert enc.init_source["dropped"] == ["fc.bias", "fc.weight"]
    x = torch.randn(2, *SHAPE)
    assert torch.allclose(enc.forward_features(x), full.forward_head(full.forward_features(x), pre_logits=True))


def test_a_missing_an_extra_and_a_wrongly_shaped_key_are_named(tmp_path):
    state = _timm_encoder(0).backbone.state_dict()
    state.pop("bn1.weight")
    state["extra.weight"] = torch.zeros(2)
    state["layer1.0.conv1.weight"] = torch.zeros(1, 1, 1, 1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"1 missing key\(s\): bn1.weight; 1 unexpected key\(s\): extra.weight; "
                                         r"1 wrongly shaped key\(s\): layer1.0.conv1.weight \(file \[1, 1, 1, 1\]"):
        _timm_encoder(1, weights=tmp_path / "bad.pth")
    many = {f"k{i}": torch.zeros(1) for i in range(9)}
    torch.save(many, tmp_path / "many.pth")
    with pytest.raises(ValueError, match=r"9 unexpected key\(s\): k0, k1, k2, k3, k4, \.\.\. \(9 in all\)"):
        _timm_encoder(1, weights=tmp_path / "many.pth")


def test_bad_weight_files_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        _timm_encoder(0, weights=tmp_path / "nope.pth")
    torch.save({"epoch": 3}, tmp_path / "empty.pt")
    with pytest.raises(ValueError, match="holds no state_dict"):
        _timm_encoder(0, weights=tmp_path / "empty.pt")


def test_timm_vit_is_built_for_the_data_size():
    enc = build_encoder("timm:test_vit", (1, 32, 32))  # fixed 160 px by default; img_size follows the data
    assert enc(torch.randn(2, 1, 32, 32)).shape == (2, enc.feature_dim)
    assert enc.backbone.pos_embed.shape[1] == 1 + (32 // 16) ** 2
    assert enc.data_config["input_size"] == (1, 160, 160) and len(enc.data_config["mean"]) == 1


def test_torchvision_resnet18_round_trip_and_grey_input_adaptation(tmp_path):
    torch.manual_seed(0)
    full = torchvision.models.resnet18(weights=None).eval()  # torchvision's format, fc included
    torch.save(full.state_dict(), tmp_path / "resnet18.pth")
    rgb = build_encoder("torchvision:resnet18", SHAPE, weights=tmp_path / "resnet18.pth").eval()
    assert rgb.feature_dim == 512 and rgb.init_source["dropped"] == ["fc.bias", "fc.weight"]
    x = torch.randn(2, *SHAPE)
    assert torch.allclose(rgb.forward_features(x), torch.flatten(full.avgpool(_trunk(full, x)), 1))
    grey = build_encoder("torchvision:resnet18", (1, 28, 28), weights=tmp_path / "resnet18.pth").eval()
    assert grey.backbone.conv1.in_channels == 1 and grey.init_source["adapted"] == ["conv1.weight"]
    g = torch.randn(2, 1, 28, 28)  # a grey image and its RGB copy give the same features
    assert torch.allclose(grey.forward_features(g), rgb.backbone(g.expand(-1, 3, -1, -1)), atol=1e-5)
    assert grey.data_config["input_size"] == (1, 224, 224) and data_config("torchvision:resnet18", 1) == grey.data_config


def _trunk(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    return net.layer4(net.layer3(net.layer2(net.layer1(x))))


def test_torchvision_classifier_is_found_across_families():
    for name, dim in (("squeezenet1_1", 512), ("mobilenet_v3_small", 1024), ("shufflenet_v2_x0_5", 1024)):
        enc = build_encoder(f"torchvision:{name}", (3, 64, 64)).train()
        assert enc(torch.randn(2, 3, 64, 64)).shape == (2, dim), name


def test_fixed_size_models_and_unknown_names_give_clear_errors():
    with pytest.raises(ValueError, match=r"cannot take inputs of shape \(3, 32, 32\).*\(3, 224, 224\): resize"):
        build_encoder("torchvision:vit_b_16", SHAPE)
    with pytest.raises(ValueError, match=r"unknown timm model 'resnt18'.*'timm:resnet18'"):
        build_encoder("timm:resnt18", SHAPE)
    with pytest.raises(ValueError, match=r"unknown torchvision model 'resnet19'.*'torchvision:resnet18'"):
        build_encoder("torchvision:resnet19", SHAPE)
    with pytest.raises(ValueError, match=r"no option\(s\) \['weight'\]"):
        build_encoder(TIMM, SHAPE, weight="x.pth")


def test_missing_timm_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` now raises ImportError
    with pytest.raises(MissingExtra, match=r"pip install spreadcon\[timm\]") as err:
        build_encoder(TIMM, SHAPE)
    assert isinstance(err.value, ValueError) and isinstance(err.value, ImportError)
    assert describe("timm:NAME")  # `spreadcon list` works without timm


def test_real_digits_through_a_timm_backbone_and_the_ce_head():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images[:32], dtype=torch.float32)[:, None] / 16.0  # [32, 1, 8, 8] in [0, 1]
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).expand(-1, 3, -1, -1)
    y = torch.tensor(digits.target[:32])
    torch.manual_seed(0)
    # timm zero-initialises each residual block's last BN scale: the block's first conv would get a zero
    # gradient on the first step; model_kwargs reach timm.create_model
    encoder = build_encoder(TIMM, SHAPE, proj_dim=16, model_kwargs={"zero_init_last": False})
    assert encoder.options["model_kwargs"] == {"zero_init_last": False}
    model = Classifier(encoder, num_classes=10).train()
    cfg = model.encoder.data_config
    x = (x - torch.tensor(cfg["mean"])[:, None, None]) / torch.tensor(cfg["std"])[:, None, None]
    z, logits = model(x)
    assert z.shape == (32, 16) and logits.shape == (32, 10) and np.isfinite(logits.detach().numpy()).all()
    F.cross_entropy(logits, y).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"
