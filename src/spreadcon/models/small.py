"""Small encoders that train in minutes on a CPU: `cnn` for 8-28 px digits, `mlp` for vectors.

Both end in a Linear layer (no ReLU), so the embedding can point anywhere on the sphere once the
loss normalises it (a ReLU output would confine it to the positive orthant).
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from spreadcon.models.encoder import image_shape


class SmallCNN(nn.Module):
    """x [B, C, H, W] -> [B, out_dim]: stages of conv3x3-BN-ReLU (2x2 max-pool after each of the
    first two stages while the map is at least 8 px), global average pool, Linear."""

    def __init__(self, in_chans: int, image_size: tuple[int, int], *, widths: tuple[int, ...] = (32, 64, 128),
                 out_dim: int = 128) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        size, c = min(image_size), in_chans
        for i, width in enumerate(widths):
            layers += [nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            if i < 2 and size >= 8:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            c = width
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(c, out_dim)
        self.feature_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))


class MLP(nn.Module):
    """x [B, *shape] (flattened) -> [B, out_dim]: (Linear-ReLU) per hidden width, then Linear."""

    def __init__(self, in_dim: int, *, hidden: tuple[int, ...] = (256, 256), out_dim: int = 128) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        d = in_dim
        for width in hidden:
            layers += [nn.Linear(d, width), nn.ReLU(inplace=True)]
            d = width
        layers.append(nn.Linear(d, out_dim))
        self.net = nn.Sequential(*layers)
        self.feature_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def cnn(input_shape: tuple[int, ...], **options) -> SmallCNN:
    """Small conv net for 8-28 px digits (3 conv stages 32/64/128, 128-d): fast on the CPU."""
    c, h, w = image_shape("cnn", input_shape)
    return SmallCNN(c, (h, w), **options)


def cnn_test(input_shape: tuple[int, ...], **options) -> SmallCNN:
    """Test-size cnn: 2 stages of width 8, 16-d."""
    return cnn(input_shape, **{"widths": (8, 8), "out_dim": 16, **options})


def mlp(input_shape: tuple[int, ...], **options) -> MLP:
    """MLP for vector data (inputs are flattened): 256-256 hidden, 128-d."""
    if len(input_shape) == 0 or any(int(s) < 1 for s in input_shape):
        raise ValueError(f"encoder 'mlp' needs a non-empty input_shape such as (D,), got {tuple(input_shape)}")
    return MLP(math.prod(int(s) for s in input_shape), **options)


def mlp_test(input_shape: tuple[int, ...], **options) -> MLP:
    """Test-size mlp: one hidden layer of 16, 8-d."""
    return mlp(input_shape, **{"hidden": (16,), "out_dim": 8, **options})
