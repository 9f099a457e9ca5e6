"""Small encoders that train in minutes on a CPU: `cnn` for 8-28 px digits, `mlp` for vectors.

`cnn-digits` is the strong recipe's net for 28 px digits (docs/recipes.md).

Both end in a Linear layer (no ReLU), so the embedding can point anywhere on the sphere once the
loss normalises it (a ReLU output would confine it to the positive orthant).
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from spreadcon.models.encoder import image_shape


class SmallCNN(nn.Module):
    """x [B, C, H, W] -> [B, out_dim]: stages of conv3x3-BN-ReLU (2x2 max-pool after each of the
    first two stages while the map is at least 8 px), global average pool (or, with flatten=True,
    the whole final map flattened), optional hidden Linear-ReLU layers, then Linear.

    The defaults are the original `cnn` (three stages, average pool, no hidden layer); the strong
    digits recipe of docs/recipes.md is widths=(16, 32), flatten=True, out_dim=256: two conv stages
    and one 256-unit fully connected layer whose output is the representation h (`cnn-digits`;
    the issue's 60-line script used 32/64, about 2.5x the compute for no validation gain measured). Flattening keeps
    where a stroke is, which a global average pool throws away (and digits differ by where).
    batch_norm=False gives conv layers with a bias and no normalisation.
    """

    def __init__(self, in_chans: int, image_size: tuple[int, int], *, widths: tuple[int, ...] = (32, 64, 128),
                 out_dim: int = 128, flatten: bool = False, hidden: tuple[int, ...] = (),
                 batch_norm: bool = True) -> None:
        super().__init__()
        if not widths or any(int(w) < 1 for w in widths) or any(int(w) < 1 for w in hidden) or int(out_dim) < 1:
            raise ValueError(f"cnn needs positive widths, hidden and out_dim, got widths={tuple(widths)}, "
                             f"hidden={tuple(hidden)}, out_dim={out_dim}")
        layers: list[nn.Module] = []
        (h, w), c = image_size, in_chans
        for i, width in enumerate(widths):
            layers.append(nn.Conv2d(c, width, 3, padding=1, bias=not batch_norm))
            layers += [nn.BatchNorm2d(width), nn.ReLU(inplace=True)] if batch_norm else [nn.ReLU(inplace=True)]
            if i < 2 and min(h, w) >= 8:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            c = width
        pool: list[nn.Module] = [nn.Flatten()] if flatten else [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        d = c * h * w if flatten else c
        for width in hidden:  # hidden layers end in ReLU; the representation is the last Linear's output
            pool += [nn.Linear(d, width), nn.ReLU(inplace=True)]
            d = width
        self.features = nn.Sequential(*layers, *pool)
        self.fc = nn.Linear(d, out_dim)
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


def cnn_digits(input_shape: tuple[int, ...], **options) -> SmallCNN:
    """Strong digits cnn (2 conv stages 16/32 with BN, flattened map, 256-d fully connected h)."""
    return cnn(input_shape, **{"widths": (16, 32), "flatten": True, "out_dim": 256, **options})


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
