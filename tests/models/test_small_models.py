"""The small CNN's options (issue 16's strong digits recipe) and that its defaults are unchanged."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spreadcon.models import build_encoder, encoder_options
from spreadcon.models.small import SmallCNN, cnn, cnn_digits, cnn_test


def _old_cnn(in_chans, image_size, widths, out_dim):
    """The SmallCNN as it was before the recipe options (the oracle for bit-identical defaults)."""
    layers, size, c = [], min(image_size), in_chans
    for i, width in enumerate(widths):
        layers += [nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        if i < 2 and size >= 8:
            layers.append(nn.MaxPool2d(2))
            size //= 2
        c = width
    return nn.ModuleDict({"features": nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten()),
                          "fc": nn.Linear(c, out_dim)})


@pytest.mark.parametrize("shape, widths, out_dim", [((1, 28, 28), (16, 32, 64), 128), ((1, 8, 8), (8, 8), 16)])
def test_defaults_build_the_same_weights_as_before(shape, widths, out_dim):
    torch.manual_seed(3)
    new = SmallCNN(shape[0], shape[1:], widths=widths, out_dim=out_dim)
    torch.manual_seed(3)
    old = _old_cnn(shape[0], shape[1:], widths, out_dim)
    assert list(new.state_dict()) == list(old.state_dict())
    for key, value in old.state_dict().items():
        assert torch.equal(new.state_dict()[key], value), key
    x = torch.randn(3, *shape)
    assert torch.equal(new.eval()(x), old["fc"](old.eval()["features"](x)))


def test_cnn_test_is_unchanged():
    net = cnn_test((1, 8, 8))
    assert net.feature_dim == 16 and net.fc.in_features == 8


def test_cnn_digits_is_the_recipe_net():
    net = cnn_digits((1, 28, 28))
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [m.out_channels for m in convs] == [16, 32]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 2
    assert net.fc.in_features == 32 * 7 * 7 and net.feature_dim == 256
    assert cnn_digits((1, 28, 28), widths=(32, 64)).fc.in_features == 64 * 7 * 7  # the 60-line script's
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 256)


def test_hidden_layers_and_no_batch_norm():
    net = cnn((1, 28, 28), widths=(8, 16), flatten=True, hidden=(32, 24), out_dim=10, batch_norm=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert all(m.bias is not None for m in net.modules() if isinstance(m, nn.Conv2d))
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16 * 49, 32), (32, 24), (24, 10)]
    out = net(torch.randn(4, 1, 28, 28))
    assert out.shape == (4, 10) and (out < 0).any()  # the representation is not ReLU-clipped


def test_the_options_reach_build_encoder_with_a_projection_head():
    assert {"flatten", "hidden", "batch_norm"} <= set(encoder_options("cnn"))
    enc = build_encoder("cnn", (1, 28, 28), widths=[16, 32], flatten=True, out_dim=64, proj_dim=16, proj_hidden=32)
    x = torch.randn(2, 1, 28, 28)
    assert enc.forward_features(x).shape == (2, 64) and enc(x).shape == (2, 16)


@pytest.mark.parametrize("options", [{"widths": ()}, {"widths": (8, 0)}, {"hidden": (0,)}, {"out_dim": 0}])
def test_bad_widths_are_refused(options):
    with pytest.raises(ValueError, match="positive widths"):
        cnn((1, 8, 8), **options)
