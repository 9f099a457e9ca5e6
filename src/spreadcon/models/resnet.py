"""ResNet18 / ResNet50 from torchvision (weights=None), fc removed: x [B, C, H, W] -> [B, 512 | 2048].

`cifar_stem` swaps the ImageNet stem (7x7 stride-2 conv + max-pool) for a 3x3 stride-1 conv and
no pool, the usual choice for 32 px images; the default (None) picks it for images under 64 px.
`width` (default 64, torchvision's) scales every stage; the test variants use a narrow network.
The embedding is the global average pool of a ReLU output, so it lies in the positive orthant.
"""

from __future__ import annotations

from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from spreadcon.models.encoder import image_shape


def _resnet(name: str, block: type[BasicBlock | Bottleneck], layers: list[int], input_shape: tuple[int, ...], *,
            cifar_stem: bool | None = None, width: int = 64) -> ResNet:
    c, h, w = image_shape(name, input_shape, min_size=8)
    if cifar_stem is None:
        cifar_stem = min(h, w) < 64
    net = ResNet(block, layers)
    if width != 64:  # rebuild the stages narrower with torchvision's own layer factory
        net.inplanes = width
        net.bn1 = nn.BatchNorm2d(width)
        net.layer1 = net._make_layer(block, width, layers[0])
        net.layer2 = net._make_layer(block, 2 * width, layers[1], stride=2)
        net.layer3 = net._make_layer(block, 4 * width, layers[2], stride=2)
        net.layer4 = net._make_layer(block, 8 * width, layers[3], stride=2)
    if cifar_stem:
        net.conv1 = nn.Conv2d(c, width, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    else:
        net.conv1 = nn.Conv2d(c, width, kernel_size=7, stride=2, padding=3, bias=False)
    net.fc = nn.Identity()
    for m in net.modules():  # torchvision's initialisation, for the replaced modules too
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    net.feature_dim = 8 * width * block.expansion
    return net


def resnet18(input_shape: tuple[int, ...], **options) -> ResNet:
    """torchvision ResNet18 (no weights), fc removed, 3x3 CIFAR stem for small images: 512-d."""
    return _resnet("resnet18", BasicBlock, [2, 2, 2, 2], input_shape, **options)


def resnet50(input_shape: tuple[int, ...], **options) -> ResNet:
    """torchvision ResNet50 (no weights), fc removed, 3x3 CIFAR stem for small images: 2048-d."""
    return _resnet("resnet50", Bottleneck, [3, 4, 6, 3], input_shape, **options)


def resnet18_test(input_shape: tuple[int, ...], **options) -> ResNet:
    """Test-size ResNet18: one block per stage, width 8 (64-d)."""
    return _resnet("resnet18-test", BasicBlock, [1, 1, 1, 1], input_shape, **{"width": 8, **options})


def resnet50_test(input_shape: tuple[int, ...], **options) -> ResNet:
    """Test-size ResNet50: one bottleneck per stage, width 8 (256-d)."""
    return _resnet("resnet50-test", Bottleneck, [1, 1, 1, 1], input_shape, **{"width": 8, **options})
