"""spreadcon.models: encoders by name.

    encoder = build_encoder("vit", (3, 32, 32))       # the paper's ViT, no projection head
    z = encoder(x)                                    # [B, 256]
    encoder = build_encoder("cnn-test", (1, 8, 8), proj_dim=32)   # with a projection head `proj`
    model = Classifier(encoder, num_classes=10)       # + the cross-entropy head `head`

ENCODERS maps a name to a builder `(input_shape, **options) -> backbone` (a module with a
`feature_dim` attribute); each builder's docstring's first line describes it.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from torch import nn

from spreadcon.models import resnet, small, vit
from spreadcon.models.classifier import Classifier
from spreadcon.models.encoder import Encoder, image_shape
from spreadcon.models.heads import projection_head

ENCODERS: dict[str, Callable[..., nn.Module]] = {
    "vit": vit.vit,
    "vit-test": vit.vit_test,
    "resnet18": resnet.resnet18,
    "resnet18-test": resnet.resnet18_test,
    "resnet50": resnet.resnet50,
    "resnet50-test": resnet.resnet50_test,
    "cnn": small.cnn,
    "cnn-test": small.cnn_test,
    "cnn-digits": small.cnn_digits,
    "mlp": small.mlp,
    "mlp-test": small.mlp_test,
}

# the keyword options each family accepts (its constructor's keyword-only parameters)
_FAMILY = {"vit": vit.ViT, "resnet18": resnet._resnet, "resnet50": resnet._resnet, "cnn": small.SmallCNN, "mlp": small.MLP}


def encoder_options(name: str) -> list[str]:
    """The option names `build_encoder(name, ..., **options)` accepts."""
    family = _FAMILY[_check_name(name).split("-")[0]]  # cnn-digits and cnn-test are cnn
    return [p.name for p in inspect.signature(family).parameters.values() if p.kind is p.KEYWORD_ONLY]


def describe(name: str) -> str:
    """One line describing encoder `name` (for `spreadcon list`)."""
    return (inspect.getdoc(ENCODERS[_check_name(name)]) or "").splitlines()[0]


def build_encoder(name: str, input_shape: tuple[int, ...], *, proj_dim: int | None = None,
                  proj_hidden: int | None = None, proj_kind: str = "mlp", **overrides: Any) -> Encoder:
    """Encoder `name` for inputs of shape `input_shape` ((C, H, W) images or (D,) vectors).

    proj_dim=None (the paper's setting) means no projection head; otherwise a head `proj` of kind
    `proj_kind` ('mlp' or 'linear') maps the backbone's feature_dim to proj_dim. `overrides` go to the family's
    constructor (see `encoder_options(name)`). Raises ValueError on an unknown name, an unknown
    option, or an input_shape the encoder cannot take.
    """
    builder = ENCODERS[_check_name(name)]
    allowed = encoder_options(name)
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise ValueError(f"encoder {name!r} has no option(s) {unknown}; it accepts {allowed}")
    input_shape = tuple(int(s) for s in input_shape)
    backbone = builder(input_shape, **overrides)
    feature_dim = int(backbone.feature_dim)
    proj = None if proj_dim is None else projection_head(feature_dim, int(proj_dim), proj_hidden, proj_kind)
    options = dict(overrides, proj_dim=proj_dim, proj_hidden=proj_hidden, proj_kind=proj_kind)
    return Encoder(backbone, feature_dim, input_shape, proj=proj, embed_dim=proj_dim, name=name, options=options)


def _check_name(name: str) -> str:
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; choose one of {sorted(ENCODERS)}")
    return name


__all__ = ["ENCODERS", "Classifier", "Encoder", "build_encoder", "describe", "encoder_options", "image_shape", "projection_head"]
