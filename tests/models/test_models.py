"""Encoders: shapes, gradients to every parameter, the paper's ViT size, and input checks."""

import pytest
import torch
import torchvision

from spreadcon.models import ENCODERS, build_encoder, describe, encoder_options


TEST_SHAPES = {
    "vit-test": (3, 16, 16),
    "resnet18-test": (3, 16, 16),
    "resnet50-test": (1, 16, 16),
    "cnn-test": (1, 8, 8),
    "mlp-test": (10,),
}


def test_every_encoder_has_a_test_variant_and_a_description():
    # "timm:NAME" / "torchvision:NAME" stand for the libraries' models (tests/models/test_external.py)
    full = [n for n in ENCODERS if not n.endswith("-test") and ":" not in n]
    assert set(full) == {"vit", "resnet18", "resnet50", "cnn", "cnn-digits", "mlp"}
    assert {n for n in ENCODERS if ":" in n} == {"timm:NAME", "torchvision:NAME"}
    for name in full:  # a named recipe of a family (cnn-digits) shares its family's test variant
        assert f"{name.split('-')[0]}-test" in TEST_SHAPES
    for name in ENCODERS:
        assert describe(name)


@pytest.mark.parametrize("name", sorted(TEST_SHAPES))
@pytest.mark.parametrize("proj_dim", [None, 6])
def test_shape_and_gradient_to_every_parameter(name, proj_dim):
    torch.manual_seed(0)
    shape = TEST_SHAPES[name]
    enc = build_encoder(name, shape, proj_dim=proj_dim).train()
    x = torch.randn(4, *shape)
    feats, out = enc.forward_features(x), enc(x)
    assert feats.shape == (4, enc.feature_dim)
    assert out.shape == (4, enc.embed_dim)
    assert enc.embed_dim == (enc.feature_dim if proj_dim is None else proj_dim)
    out.pow(2).sum().backward()
    for pname, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}: no gradient reaches {pname}"


def test_options_rebuild_the_same_architecture():
    enc = build_encoder("vit-test", (1, 8, 8), proj_dim=7, proj_kind="linear", depth=1)
    again = build_encoder("vit-test", (1, 8, 8), **enc.options)
    assert again.options == enc.options
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in enc.state_dict().items()}
    again.load_state_dict(enc.state_dict())


def test_no_projection_head_by_default():
    enc = build_encoder("cnn-test", (1, 8, 8)).eval()
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(enc(x), enc.forward_features(x))


def test_paper_vit_has_about_3_2m_parameters():
    enc = build_encoder("vit", (3, 32, 32))
    n = sum(p.numel() for p in enc.parameters())
    assert 3.15e6 < n < 3.3e6, n
    assert enc.feature_dim == enc.embed_dim == 256
    blocks = enc.backbone.blocks
    assert len(blocks) == 7 and blocks[0].attn.heads == 8 and blocks[0].mlp[0].out_features == 512
    assert blocks[0].drop_path.p == 0.0 and blocks[-1].drop_path.p == pytest.approx(0.05)
    # with the textbook attention output projection: 7 * (256 * 256 + 256) more parameters
    n_proj = sum(p.numel() for p in build_encoder("vit", (3, 32, 32), attn_out_proj=True).parameters())
    assert n_proj - n == 7 * (256 * 256 + 256)


def test_vit_eval_is_deterministic_and_train_is_stochastic():
    torch.manual_seed(0)
    enc = build_encoder("vit-test", (1, 8, 8), dropout=0.3, drop_path=0.3)
    x = torch.randn(4, 1, 8, 8)
    enc.eval()
    assert torch.equal(enc(x), enc(x))
    enc.train()
    assert not torch.equal(enc(x), enc(x))


def test_resnet_matches_torchvision_apart_from_the_stem_and_fc():
    ours = build_encoder("resnet18", (3, 224, 224))  # ImageNet stem at 224 px
    ref = torchvision.models.resnet18(weights=None)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(ours) == count(ref) - count(ref.fc)
    small = build_encoder("resnet18", (3, 32, 32))  # CIFAR stem: 3x3 conv, no max-pool
    assert small.backbone.conv1.kernel_size == (3, 3) and isinstance(small.backbone.maxpool, torch.nn.Identity)
    assert build_encoder("resnet50-test", (3, 32, 32), cifar_stem=False).backbone.conv1.kernel_size == (7, 7)
    assert build_encoder("resnet50", (3, 32, 32)).feature_dim == 2048


@pytest.mark.parametrize("name,shape,match", [
    ("vit", (3, 30, 30), "patch_size 4 does not divide"),
    ("vit-test", (64,), r"\(C, H, W\)"),
    ("cnn", (28, 28, 1), "channels-last"),
    ("resnet18", (3, 4, 4), "H, W >= 8"),
    ("nope", (3, 8, 8), "unknown encoder 'nope'.*vit"),
])
def test_bad_shapes_and_names_are_refused_at_build_time(name, shape, match):
    with pytest.raises(ValueError, match=match):
        build_encoder(name, shape)


def test_unknown_option_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"no option\(s\) \['depht'\].*'depth'"):
        build_encoder("vit-test", (3, 8, 8), depht=3)
    assert "cifar_stem" in encoder_options("resnet18-test")


def test_forward_refuses_inputs_of_another_shape():
    enc = build_encoder("cnn-test", (1, 8, 8))
    with pytest.raises(ValueError, match=r"built for inputs of shape \[B, 1, 8, 8\]"):
        enc(torch.randn(2, 3, 8, 8))


def test_mlp_flattens_images_and_options_reach_the_family():
    enc = build_encoder("mlp", (1, 4, 4), hidden=[32], out_dim=5)
    assert enc(torch.randn(2, 1, 4, 4)).shape == (2, 5)
    assert build_encoder("cnn", (1, 28, 28), out_dim=64).feature_dim == 64
