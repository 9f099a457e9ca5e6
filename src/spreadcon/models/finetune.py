"""Fine-tuning hooks: the backbone's parameters apart from the heads', freezing, an lr multiplier.

    set_backbone_trainable(model, False)        # the first k epochs: train the heads only
    optimizer = torch.optim.AdamW(param_groups(model, lr=1e-3, backbone_lr_mult=0.1))
    set_backbone_trainable(model, True)         # then fine-tune everything (same optimizer)

`model` is an Encoder or a Classifier. The backbone is `encoder.backbone`; the heads are the rest:
the projection head `encoder.proj` and the Classifier's cross-entropy head `head`.

A frozen backbone has requires_grad False *and* stays in eval mode, through `model.train()` too
(Encoder.backbone_frozen): its BatchNorm running statistics and dropout are fixed, so the heads
warm up on a fixed function of the input, as linear probing before fine-tuning does (LP-FT,
Kumar et al. 2022). In train mode the statistics would keep moving under the heads while the
weights stood still, and the features would not be those the pretrained weights compute.
Optimizers skip parameters without a gradient, so one optimizer built over both groups serves
both phases. (Under DistributedDataParallel, freeze before wrapping the model, or build it with
find_unused_parameters=True: DDP fixes the set of trained parameters when it is built.)
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from spreadcon.models.encoder import Encoder


def backbone_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of encoder.backbone, frozen or not."""
    return list(_encoder(model).backbone.parameters())


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every parameter of `model` outside the backbone: projection head and cross-entropy head."""
    backbone = {id(p) for p in backbone_parameters(model)}
    return [p for p in model.parameters() if id(p) not in backbone]


def set_backbone_trainable(model: nn.Module, trainable: bool) -> None:
    """Freeze (False) or unfreeze (True) the backbone: requires_grad, and eval mode while frozen."""
    encoder = _encoder(model)
    for p in encoder.backbone.parameters():
        p.requires_grad_(bool(trainable))
    encoder.backbone_frozen = not trainable
    encoder.train(encoder.training)  # re-applies the mode: a frozen backbone goes to eval


def param_groups(model: nn.Module, lr: float, backbone_lr_mult: float = 1.0) -> list[dict[str, Any]]:
    """torch optimizer param groups: the backbone at lr * backbone_lr_mult, the heads at lr.

    Each group carries "name" ("backbone" / "heads") and "lr_mult", so a schedule that sets the
    learning rate itself should set group["lr"] = base_lr * group["lr_mult"]. Empty groups are left out.
    """
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr}")
    if not (math.isfinite(backbone_lr_mult) and backbone_lr_mult >= 0):
        raise ValueError(f"backbone_lr_mult must be a number >= 0, got {backbone_lr_mult}")
    groups = [{"name": "backbone", "params": backbone_parameters(model), "lr": lr * backbone_lr_mult,
               "lr_mult": float(backbone_lr_mult)},
              {"name": "heads", "params": head_parameters(model), "lr": lr, "lr_mult": 1.0}]
    return [g for g in groups if g["params"]]


def _encoder(model: nn.Module) -> Encoder:
    model = getattr(model, "module", model)  # a DistributedDataParallel wrapper
    encoder = getattr(model, "encoder", model)
    if not isinstance(encoder, Encoder):
        raise TypeError(f"expected a spreadcon Encoder or Classifier, got {type(model).__name__}")
    return encoder
