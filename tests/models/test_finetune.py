"""Fine-tuning hooks: backbone/head split, param groups with an lr multiplier, freezing (grads and
BatchNorm statistics), and one training step of a Classifier once unfrozen."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from spreadcon.models import (Classifier, backbone_parameters, build_encoder, head_parameters, param_groups,
                              set_backbone_trainable)

SHAPE = (1, 8, 8)


def _model(proj_dim: int | None = 6) -> Classifier:
    torch.manual_seed(0)
    return Classifier(build_encoder("cnn-test", SHAPE, proj_dim=proj_dim), num_classes=3).train()


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    return torch.randn(8, *SHAPE), torch.arange(8) % 3


def test_backbone_and_heads_split_every_parameter_once():
    model = _model()
    backbone, heads = backbone_parameters(model), head_parameters(model)
    assert {id(p) for p in backbone} == {id(p) for p in model.encoder.backbone.parameters()}
    expected = list(model.encoder.proj.parameters()) + list(model.head.parameters())
    assert {id(p) for p in heads} == {id(p) for p in expected}
    assert len(backbone) + len(heads) == len(list(model.parameters()))
    assert backbone_parameters(model.encoder) == backbone  # an Encoder works too
    with pytest.raises(TypeError, match="Encoder or Classifier"):
        backbone_parameters(torch.nn.Linear(2, 2))


def test_param_groups_put_the_backbone_in_the_multiplier_group():
    model = _model()
    groups = param_groups(model, lr=0.1, backbone_lr_mult=0.01)
    assert [g["name"] for g in groups] == ["backbone", "heads"]
    assert groups[0]["lr"] == pytest.approx(0.001) and groups[0]["lr_mult"] == 0.01
    assert groups[1]["lr"] == 0.1 and groups[1]["lr_mult"] == 1.0
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in backbone_parameters(model)}
    opt = torch.optim.SGD(groups, lr=0.1)
    assert [g["lr"] for g in opt.param_groups] == [pytest.approx(0.001), 0.1]
    bare = build_encoder("cnn-test", SHAPE)  # no heads at all: the empty group is left out
    assert [g["name"] for g in param_groups(bare, lr=0.1)] == ["backbone"]
    with pytest.raises(ValueError, match="backbone_lr_mult"):
        param_groups(model, lr=0.1, backbone_lr_mult=-1)


def test_frozen_backbone_gets_no_grads_and_keeps_its_batchnorm_statistics():
    model, (x, y) = _model(), _batch()
    set_backbone_trainable(model, False)
    model.train()  # what a trainer does each epoch: the frozen backbone stays in eval mode
    assert model.training and model.encoder.proj.training and not model.encoder.backbone.training
    before = {k: v.clone() for k, v in model.encoder.backbone.state_dict().items()}
    opt = torch.optim.SGD(param_groups(model, lr=0.1, backbone_lr_mult=1.0), lr=0.1)
    z, logits = model(x)
    (F.cross_entropy(logits, y) + z.pow(2).mean()).backward()
    assert all(p.grad is None for p in backbone_parameters(model))
    assert all(p.grad is not None for p in head_parameters(model))
    opt.step()
    after = model.encoder.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a frozen backbone changed"


def test_unfrozen_classifier_trains_one_step_with_a_grad_on_every_parameter():
    model, (x, y) = _model(), _batch()
    set_backbone_trainable(model, False)
    set_backbone_trainable(model, True)
    assert model.encoder.backbone.training and all(p.requires_grad for p in model.parameters())
    opt = torch.optim.SGD(param_groups(model, lr=0.1, backbone_lr_mult=0.5), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    z, logits = model(x)
    (F.cross_entropy(logits, y) + z.pow(2).mean()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"
    opt.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_has_projection_on_encoder_and_classifier():
    assert _model(6).has_projection and _model(6).encoder.has_projection
    assert not _model(None).has_projection and not _model(None).encoder.has_projection
