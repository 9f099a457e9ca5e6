"""Backbones from timm and torchvision: `timm:NAME` and `torchvision:NAME` encoder names.

    encoder = build_encoder("timm:resnet18", (3, 224, 224), proj_dim=128)       # pip install spreadcon[timm]
    encoder = build_encoder("torchvision:resnet18", (1, 28, 28), weights="resnet18.pth")
    encoder.data_config    # {"input_size": (3, 224, 224), "mean": (...), "std": (...), ...}

Each builder returns the library's own model with its classifier removed, so `x [B, C, H, W] ->
[B, feature_dim]` pooled features and its state_dict keys are the library's (a file saved from
`encoder.backbone.state_dict()` loads into the same model elsewhere). spreadcon's projection and
cross-entropy heads attach to it in `build_encoder` as on spreadcon's own encoders.

- timm: `timm.create_model(NAME, num_classes=0, in_chans=C)`; timm removes its own classifier.
  Models of a fixed input size (ViTs) are built for the data's H x W (`img_size`).
- torchvision: `torchvision.models.get_model(NAME, weights=None)`; the classifier is the model's
  last nn.Linear in registration order (resnet/regnet `fc`, vit `heads.head`, swin `head`,
  convnext/efficientnet/mobilenet/vgg `classifier[-1]`, densenet `classifier`), or, for models with
  none (squeezenet), its last 1x1 conv; it becomes Identity, so layers before it stay (convnext's
  LayerNorm, mobilenet_v3's hidden layer, and the dropout those models keep: set it through
  `model_kwargs`, e.g. {"dropout": 0.0}). Inception/GoogLeNet lose their auxiliary heads. For C != 3
  the first conv is rebuilt for C channels with its RGB weights adapted (timm's rule).

Options (`encoder_options`, also a config's encoder_options): `weights=FILE` loads a local
state_dict strictly (spreadcon.models.weights); `pretrained=True` downloads the library's default
weights, and only then; `model_kwargs` go to the library's constructor (e.g. drop_path_rate).
`data_config` is the input size and normalisation of the model's pretrained configuration. spreadcon
applies it (spreadcon.build: the dataset's views resize to `input_size` and normalise with mean/std,
in training and evaluation; the encoder is built for that size) unless the encoder option
`pretrained_input=False` keeps the data's own size and statistics (spreadcon.models.input_config).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from spreadcon.models.encoder import image_shape
from spreadcon.models.weights import adapt_input_conv, load_backbone_weights, read_state_dict

PREFIXES = ("timm", "torchvision")
OPTIONS = ("weights", "pretrained", "model_kwargs")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_CHANNELS = 1024
_NO_AUX = {"inception_v3": ("AuxLogits",), "googlenet": ("aux1", "aux2")}  # auxiliary heads dropped


class MissingExtra(ImportError, ValueError):
    """An optional dependency is not installed (a ValueError too, so the CLI prints one line)."""


def split_name(name: str) -> tuple[str, str] | None:
    """"timm:resnet18" -> ("timm", "resnet18"); None for a name without a library prefix."""
    prefix, sep, model = name.partition(":")
    return (prefix, model) if sep and prefix in PREFIXES else None


def check_name(name: str) -> str:
    """Return `name` ("timm:NAME" / "torchvision:NAME") if the library knows NAME, else ValueError
    naming the closest model names."""
    prefix, model = split_name(name) or ("", "")
    known = known_models(prefix, name)
    arch = model.split(".")[0] if prefix == "timm" else model  # timm accepts NAME.TAG (a weight tag)
    if arch in known and (arch == model or model in _timm(name).list_models(pretrained=True)):
        return name
    if model != arch:  # a weight tag: suggest tagged names
        known = list(_timm(name).list_models(pretrained=True))
    close = difflib.get_close_matches(model, known, n=5, cutoff=0.5)
    hint = f"close matches: {[f'{prefix}:{m}' for m in close]}" if close else f"see {prefix}'s list_models()"
    raise ValueError(f"unknown {prefix} model {model!r} in encoder {name!r}; {hint}")


def known_models(prefix: str, name: str = "") -> list[str]:
    """The image model names of library `prefix` ('timm': timm.list_models(); 'torchvision': its
    classification models)."""
    if prefix == "timm":
        return list(_timm(name or "timm:NAME").list_models())
    from torchvision import models

    return list(models.list_models(module=models))


def timm_backbone(model_name: str, input_shape: tuple[int, ...], *, weights: str | Path | None = None,
                  pretrained: bool = False, model_kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Any timm image model (pip install spreadcon[timm]), built with num_classes=0: its pooled features."""
    name = f"timm:{model_name}"
    timm = _timm(name)
    c, h, w = image_shape(name, input_shape, max_channels=MAX_CHANNELS)
    kwargs = dict(model_kwargs or {})
    cfg = _timm_cfg(timm, model_name)
    if cfg.get("fixed_input_size") and tuple(cfg.get("input_size", (c, h, w))[1:]) != (h, w):
        kwargs.setdefault("img_size", (h, w))  # a ViT's position embedding sized for the data
    try:
        model = timm.create_model(model_name, pretrained=bool(pretrained), num_classes=0, in_chans=c, **kwargs)
    except TypeError as err:
        raise ValueError(f"encoder {name!r} cannot be built with {kwargs} for input {(c, h, w)} ({err}); it "
                         f"expects images of {cfg.get('input_size')}: resize the data to that size") from err
    head = cfg.get("classifier") or ()
    prefixes = (head,) if isinstance(head, str) else tuple(head)
    data_config = _fit_channels(dict(timm.data.resolve_data_config(model=model)), c)
    return _finish(model, name, (c, h, w), data_config, prefixes, weights=weights, pretrained=pretrained)


def torchvision_backbone(model_name: str, input_shape: tuple[int, ...], *, weights: str | Path | None = None,
                         pretrained: bool = False, model_kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Any torchvision classification model, its classifier (the last Linear) replaced by Identity."""
    from torchvision import models

    name = f"torchvision:{model_name}"
    c, h, w = image_shape(name, input_shape, max_channels=MAX_CHANNELS)
    kwargs = dict(model_kwargs or {})
    if model_name in _NO_AUX and not pretrained:
        kwargs.setdefault("init_weights", True)  # torchvision's init, without its FutureWarning
    model = models.get_model(model_name, weights="DEFAULT" if pretrained else None, **kwargs)
    prefixes = _remove_classifier(model, name) + _remove_aux_heads(model, model_name)
    if c != 3:
        _adapt_first_conv(model, c, name)
    data_config = _fit_channels(torchvision_data_config(model_name), c)
    return _finish(model, name, (c, h, w), data_config, prefixes, weights=weights, pretrained=pretrained)


def data_config(name: str, in_chans: int = 3) -> dict[str, Any]:
    """The pretrained input size and normalisation of `timm:NAME` / `torchvision:NAME`, without
    building the model (for the data side, before the encoder exists)."""
    prefix, model = split_name(check_name(name)) or ("", "")
    if prefix == "timm":
        timm = _timm(name)
        config = timm.data.resolve_data_config(pretrained_cfg=_timm_cfg(timm, model))
        return _fit_channels(dict(config), in_chans)
    return _fit_channels(torchvision_data_config(model), in_chans)


def torchvision_data_config(model_name: str) -> dict[str, Any]:
    """From the default weights' transforms (crop size, mean, std); ImageNet's at 224 px without them."""
    from torchvision import models

    try:
        t = models.get_model_weights(model_name).DEFAULT.transforms()
        size, resize = int(t.crop_size[0]), int(t.resize_size[0])
        mean, std, interpolation = tuple(t.mean), tuple(t.std), str(t.interpolation.value)
    except (AttributeError, ValueError, TypeError, KeyError, IndexError):
        size, resize, mean, std, interpolation = 224, 256, IMAGENET_MEAN, IMAGENET_STD, "bilinear"
    return {"input_size": (3, size, size), "mean": mean, "std": std, "interpolation": interpolation,
            "crop_pct": size / resize}


# --- shared steps ------------------------------------------------------------------------------
def _finish(model: nn.Module, name: str, shape: tuple[int, int, int], data_config: dict[str, Any],
            prefixes: tuple[str, ...], *, weights: str | Path | None, pretrained: bool) -> nn.Module:
    """Load a weights file, measure feature_dim, attach data_config and init_source."""
    source: dict[str, Any] = {"pretrained": bool(pretrained), "weights": None, "dropped": [], "adapted": []}
    if weights is not None:
        report = load_backbone_weights(model, read_state_dict(weights), classifier_prefixes=prefixes,
                                       in_chans=shape[0], source=f"encoder {name!r} weights={str(weights)!r}")
        source.update(report, weights=str(Path(weights).expanduser().resolve()))
    model.feature_dim = _feature_dim(model, name, shape, data_config)
    model.data_config = data_config
    model.init_source = source
    return model


def _feature_dim(model: nn.Module, name: str, shape: tuple[int, int, int], data_config: dict[str, Any]) -> int:
    """One forward of a zero image [1, C, H, W] in eval mode -> F of the output [1, F]."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, *shape))
    except Exception as err:  # any failure here means the model cannot take this input size
        raise ValueError(f"encoder {name!r} cannot take inputs of shape {shape} ({' '.join(str(err).split())}); "
                         f"its pretrained size is {tuple(data_config['input_size'])}: resize the data to it, or set "
                         f"the model's size through encoder_options model_kwargs (timm: img_size; torchvision "
                         f"ViTs: image_size)") from err
    finally:
        model.train(was_training)
    if not isinstance(out, Tensor) or out.dim() != 2:
        raise ValueError(f"encoder {name!r} does not return pooled features [B, F] with its classifier removed "
                         f"(got {type(out).__name__} {getattr(out, 'shape', '')}); it is not supported")
    return int(out.shape[1])


def _fit_channels(config: dict[str, Any], in_chans: int) -> dict[str, Any]:
    """mean/std of length in_chans (the RGB average repeated when in_chans != 3); input_size (C, H, W)."""
    out = {k: config[k] for k in ("input_size", "mean", "std", "interpolation", "crop_pct") if k in config}
    for key in ("mean", "std"):
        values = tuple(float(v) for v in out[key])
        out[key] = values if len(values) == in_chans else (sum(values) / len(values),) * in_chans
    out["input_size"] = (in_chans, *(int(s) for s in out["input_size"][1:]))
    return out


# --- timm ----------------------------------------------------------------------------------------
def _timm(name: str) -> Any:
    try:
        import timm
        import timm.data
    except ImportError as err:
        raise MissingExtra(f"encoder {name!r} needs timm, which is not installed: pip install spreadcon[timm]") from err
    return timm


def _timm_cfg(timm: Any, model_name: str) -> dict[str, Any]:
    """The pretrained configuration timm keeps for NAME (or NAME.TAG) as a dict; {} if none."""
    cfg = timm.get_pretrained_cfg(model_name)
    return cfg.to_dict() if cfg is not None else {}


# --- torchvision ---------------------------------------------------------------------------------
def _remove_classifier(model: nn.Module, name: str) -> tuple[str]:
    """Replace the last nn.Linear (else the last 1x1 conv) by Identity; return its module path."""
    linear = [(p, m) for p, m in model.named_modules() if isinstance(m, nn.Linear)]
    conv = [(p, m) for p, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    if not (linear or conv):
        raise ValueError(f"encoder {name!r}: found no classifier (a Linear or 1x1 conv) to remove")
    path, _ = (linear or conv)[-1]
    _replace(model, path, nn.Identity())
    return (path,)


def _remove_aux_heads(model: nn.Module, model_name: str) -> tuple[str, ...]:
    """Inception/GoogLeNet: drop the auxiliary classifiers (the forward then returns one tensor)."""
    heads = _NO_AUX.get(model_name, ())
    if heads:
        model.aux_logits = False
        for head in heads:
            setattr(model, head, None)
    return heads


def _adapt_first_conv(model: nn.Module, in_chans: int, name: str) -> None:
    """Rebuild the first Conv2d (an RGB stem) for in_chans, its weights adapted (timm's rule)."""
    path, conv = next(((p, m) for p, m in model.named_modules() if isinstance(m, nn.Conv2d)), ("", None))
    if conv is None or conv.in_channels != 3 or conv.groups != 1:
        raise ValueError(f"encoder {name!r}: cannot adapt its first conv to {in_chans} channels; give 3-channel "
                         f"images (repeat the grey channel)")
    new = nn.Conv2d(in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    bias=conv.bias is not None, padding_mode=conv.padding_mode)
    with torch.no_grad():
        new.weight.copy_(adapt_input_conv(conv.weight, in_chans))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    _replace(model, path, new)


def _replace(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)
