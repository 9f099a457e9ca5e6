"""spreadcon.models: encoders by name.

    encoder = build_encoder("vit", (3, 32, 32))       # the paper's ViT, no projection head
    z = encoder(x)                                    # [B, 256]
    encoder = build_encoder("cnn-test", (1, 8, 8), proj_dim=32)   # with a projection head `proj`
    model = Classifier(encoder, num_classes=10)       # + the cross-entropy head `head`
    encoder = build_encoder("timm:resnet18", (3, 224, 224), weights="resnet18.pth")  # any timm model
    encoder = build_encoder("torchvision:resnet18", (1, 28, 28), pretrained=True)    # downloads

ENCODERS maps a name to a builder `(input_shape, **options) -> backbone` (a module with a
`feature_dim` attribute); each builder's docstring's first line describes it. Its entries
"timm:NAME" and "torchvision:NAME" stand for every image model of those libraries (builders
`(NAME, input_shape, **options)`, spreadcon.models.external); NAME is checked against the
library's list_models(). Their options are `weights`, `pretrained`, `model_kwargs` and
`pretrained_input`; the encoder's `data_config` says how to resize and normalise the data, and
`input_config` whether the data side should (`pretrained_input=False`: the data as they are, as for
spreadcon's own encoders). Encoder.options rebuild the same
architecture without reading a file or downloading (weights and pretrained are left out; where
the initial weights came from is Encoder.init_source). Fine-tuning hooks: spreadcon.models.finetune.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

from torch import nn

from spreadcon.models import external, resnet, small, vit
from spreadcon.models.classifier import Classifier
from spreadcon.models.encoder import Encoder, image_shape
from spreadcon.models.finetune import backbone_parameters, head_parameters, param_groups, set_backbone_trainable
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
    "timm:NAME": external.timm_backbone,
    "torchvision:NAME": external.torchvision_backbone,
}
INIT_OPTIONS = ("weights", "pretrained")  # where the initial weights come from, not the architecture
DATA_OPTIONS = ("pretrained_input",)  # how the data reach the encoder (input_config), not its builder's

# the keyword options each family accepts (its constructor's keyword-only parameters)
_FAMILY = {"vit": vit.ViT, "resnet18": resnet._resnet, "resnet50": resnet._resnet, "cnn": small.SmallCNN, "mlp": small.MLP}


def encoder_options(name: str) -> list[str]:
    """The option names `build_encoder(name, ..., **options)` accepts."""
    key = _key(name)
    if external.split_name(key):
        return [*external.OPTIONS, *DATA_OPTIONS]
    family = _FAMILY[key.split("-")[0]]  # cnn-digits and cnn-test are cnn
    return [p.name for p in inspect.signature(family).parameters.values() if p.kind is p.KEYWORD_ONLY]


def describe(name: str) -> str:
    """One line describing encoder `name` (for `spreadcon list`)."""
    return (inspect.getdoc(ENCODERS[_key(name)]) or "").splitlines()[0]


def data_config(name: str, in_chans: int = 3) -> dict[str, Any] | None:
    """The pretrained input size and normalisation of a `timm:` / `torchvision:` encoder, before
    building it ({"input_size": (C, H, W), "mean", "std", "interpolation", "crop_pct"}); None for
    spreadcon's own encoders, which take the data as it is."""
    return external.data_config(name, in_chans) if external.split_name(_check_name(name)) else None


def input_config(name: str, input_shape: tuple[int, ...], options: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """What the data should become before encoder `name` (built with `options`) sees them: its
    `data_config` for the data's C = input_shape[0] channels when it is a timm:/torchvision: encoder
    on (C, H, W) images; None (the data as they are) for spreadcon's own encoders, for vectors, and
    with the option pretrained_input=False.

    C is kept: a grey image stays one channel and the model is built with in_chans=1 (timm sums
    its pretrained RGB stem over the channels; torchvision's stem is adapted by the same rule), with
    the RGB mean/std averaged; this equals feeding the grey channel repeated three times, up to the
    per-channel differences of mean/std, at a third of the stem's cost."""
    options = dict(options or {})
    if not external.split_name(_check_name(name)) or len(input_shape) != 3:
        return None
    return data_config(name, int(input_shape[0])) if _pretrained_input(name, options) else None


def _pretrained_input(name: str, options: dict[str, Any]) -> bool:
    """The encoder option pretrained_input (default True: resize and normalise the data to the
    model's pretrained configuration); ValueError unless a bool."""
    value = options.get("pretrained_input", True)
    if not isinstance(value, bool):
        raise ValueError(f"encoder {name!r}: pretrained_input={value!r} must be true or false (false keeps the "
                         f"data's own size and normalisation)")
    return value


def build_encoder(name: str, input_shape: tuple[int, ...], *, proj_dim: int | None = None,
                  proj_hidden: int | None = None, proj_kind: str = "mlp", **overrides: Any) -> Encoder:
    """Encoder `name` for inputs of shape `input_shape` ((C, H, W) images or (D,) vectors).

    proj_dim=None (the paper's setting) means no projection head; otherwise a head `proj` of kind
    `proj_kind` ('mlp' or 'linear') maps the backbone's feature_dim to proj_dim. `overrides` go to the family's
    constructor (see `encoder_options(name)`); for `timm:NAME` / `torchvision:NAME` they are
    `weights=FILE`, `pretrained=False`, `model_kwargs={...}` (spreadcon.models.external) and
    `pretrained_input` (kept in Encoder.options for the data side, see `input_config`; input_shape
    is what the encoder receives, the pretrained size when the data are fitted to it). Raises
    ValueError on an unknown name, an unknown option, or an input_shape the encoder cannot take.
    """
    builder = _builder(_check_name(name))
    allowed = encoder_options(name)
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise ValueError(f"encoder {name!r} has no option(s) {unknown}; it accepts {allowed}")
    input_shape = tuple(int(s) for s in input_shape)
    if "pretrained_input" in overrides:
        _pretrained_input(name, overrides)  # a data-side option: checked here, not the builder's
    backbone = builder(input_shape, **{k: v for k, v in overrides.items() if k not in DATA_OPTIONS})
    feature_dim = int(backbone.feature_dim)
    proj = None if proj_dim is None else projection_head(feature_dim, int(proj_dim), proj_hidden, proj_kind)
    arch = {k: v for k, v in overrides.items() if k not in INIT_OPTIONS}
    options = dict(arch, proj_dim=proj_dim, proj_hidden=proj_hidden, proj_kind=proj_kind)
    return Encoder(backbone, feature_dim, input_shape, proj=proj, embed_dim=proj_dim, name=name, options=options,
                   data_config=getattr(backbone, "data_config", None),
                   init_source=getattr(backbone, "init_source", None))


def _builder(name: str) -> Callable[..., nn.Module]:
    """ENCODERS' builder for `name`; for "timm:NAME" / "torchvision:NAME", bound to NAME."""
    prefix, model = external.split_name(name) or ("", "")
    return functools.partial(ENCODERS[f"{prefix}:NAME"], model) if prefix else ENCODERS[name]


def _key(name: str) -> str:
    """The ENCODERS key of `name`: itself, or "timm:NAME" / "torchvision:NAME" for a checked library model."""
    if name in ENCODERS:
        return name
    prefix, _ = external.split_name(_check_name(name)) or ("", "")
    return f"{prefix}:NAME"


def _check_name(name: str) -> str:
    """`name` if it is a known encoder: a key of ENCODERS or a model of timm / torchvision."""
    if external.split_name(name):
        return external.check_name(name)
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; choose one of {sorted(ENCODERS)} (NAME: any model of "
                         f"that library)")
    return name


__all__ = ["ENCODERS", "Classifier", "Encoder", "backbone_parameters", "build_encoder", "data_config", "describe",
           "encoder_options", "head_parameters", "image_shape", "input_config", "param_groups", "projection_head",
           "set_backbone_trainable"]
