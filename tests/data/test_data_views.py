"""Batched views: shapes, determinism, oracles against torchvision's functional ops."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from spreadcon.data import Views, default_views, load
from spreadcon.data import augment, colour


def images(b=6, c=3, h=16, w=16, seed=0):
    return torch.randint(0, 256, (b, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_shapes_dtype_and_determinism():
    x = images()
    views = Views(kind="simclr", mean=(0.5,) * 3, std=(0.25,) * 3)
    a, b, c = views(x, 3, gen(0)), views(x, 3, gen(0)), views(x, 3, gen(1))
    assert a.shape == (6, 3, 3, 16, 16) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[:, 0], a[:, 1])  # the views of one image differ
    assert views.prepare(x).shape == (6, 3, 16, 16)
    with pytest.raises(ValueError, match="n_views"):
        views(x, 0, gen(0))


def test_prepare_is_torchvision_normalize():
    x = images()
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    ours = Views(kind="simclr", mean=mean, std=std).prepare(x)
    ref = TF.normalize(x.float() / 255, list(mean), list(std))
    assert torch.allclose(ours, ref, atol=1e-6)


def test_simclr_with_randomness_off_is_identity_and_flip_mirrors():
    x = images()
    still = Views(kind="simclr", crop_scale=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, gray_p=0.0)
    assert torch.allclose(still(x, 2, gen(0))[:, 1], still.prepare(x), atol=1e-5)
    x_f = x.float() / 255
    ones = torch.ones(6)
    flipped = augment.crop_resize(x_f, 0 * ones, 0 * ones, ones, ones, ones.bool(), size=(16, 16))
    assert torch.allclose(flipped, x_f.flip(-1), atol=1e-6)


def test_crop_resize_matches_torchvision_resized_crop():
    x = images(b=2, h=32, w=32).float() / 255
    # box: left 4, top 8, 16 x 16 pixels, resized to 8 x 8 (exact 2x downscale: no antialias question)
    left, top, size = 4, 8, 16
    cx = torch.full((2,), (left + size / 2) / 16 - 1)
    cy = torch.full((2,), (top + size / 2) / 16 - 1)
    frac = torch.full((2,), size / 32)
    ours = augment.crop_resize(x, cx, cy, frac, frac, torch.zeros(2, dtype=torch.bool), size=(8, 8))
    ref = TF.resized_crop(x, top, left, size, size, [8, 8], antialias=False)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_random_resized_crop_boxes_follow_the_recipe():
    # channel 0 holds the column coordinate, channel 1 the row: bilinear sampling of a linear ramp
    # is exact, so each output's span recovers its crop box (width, height, flip)
    m, size = 2000, 32
    ramp = (torch.arange(size) + 0.5) / size
    x = torch.stack([ramp.expand(size, size), ramp[:, None].expand(size, size)]).expand(m, 2, size, size)
    out = augment.resized_crop(x.contiguous(), gen(0), scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3), flip_p=0.5)
    stretch = size / (size - 1)
    width = (out[:, 0, 0, -1] - out[:, 0, 0, 0]) * stretch  # negative when mirrored
    height = (out[:, 1, -1, 0] - out[:, 1, 0, 0]) * stretch
    area, aspect = width.abs() * height, width.abs() / height
    assert area.min() > 0.2 - 0.03 and area.max() < 1 + 1e-4
    assert aspect.min() > 0.75 - 0.03 and aspect.max() < 4 / 3 + 0.03
    assert 0.45 < (width < 0).float().mean() < 0.55
    assert abs(area.mean() - 0.6) < 0.02  # s ~ U(0.2, 1)
    assert torch.allclose(augment.resized_crop(x, gen(0), scale=(1.0, 1.0)), x, atol=1e-5)


TV_OPS = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)


def test_colour_adjustments_match_torchvision_in_every_order():
    x = images(b=6).float() / 255
    factors = torch.tensor([[0.7, 1.2, 0.6, 0.05], [1.3, 0.8, 1.4, -0.1], [1.0, 0.6, 1.0, 0.0],
                            [0.6, 1.4, 0.9, 0.08], [1.1, 1.1, 0.7, -0.03], [0.9, 0.7, 1.3, 0.1]])
    order = torch.stack([torch.randperm(4, generator=gen(i)) for i in range(6)])
    for ours, orders in ((colour.adjust_colour(x, factors), torch.arange(4).expand(6, 4)),
                         (colour.adjust_colour(x, factors, order), order)):
        for i in range(6):
            ref = x[i]
            for j in orders[i].tolist():
                ref = TV_OPS[j](ref, factors[i, j].item())
            assert torch.allclose(ours[i], ref, atol=1e-4), (i, orders[i])


def test_one_channel_jitter_is_brightness_and_contrast_only():
    x = images(b=3, c=1).float() / 255
    factors = torch.tensor([[0.8, 1.2, 5.0, 0.4]] * 3)
    ref = torch.stack([TF.adjust_contrast(TF.adjust_brightness(x[i], 0.8), 1.2) for i in range(3)])
    assert torch.allclose(colour.adjust_colour(x, factors), ref, atol=1e-5)


def test_hsv_round_trip_and_grayscale():
    x = images(b=3).float() / 255
    assert torch.allclose(colour.hsv_to_rgb(colour.rgb_to_hsv(x)), x, atol=1e-5)
    assert torch.allclose(colour.grayscale(x), TF.rgb_to_grayscale(x), atol=1e-6)
    gray = colour.random_grayscale(x, gen(0), p=1.0)
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])
    assert torch.equal(colour.random_grayscale(x, gen(0), p=0.0), x)


def test_colour_jitter_probability():
    x = images(b=2000, h=4, w=4).float() / 255
    out = colour.colour_jitter(x, gen(0), p=0.8)
    changed = (out != x).flatten(1).any(1).float().mean()
    assert 0.77 < changed < 0.83


def test_digit_views_are_integer_shifts_without_flip():
    ds = load("digits")
    views = default_views(ds)
    assert views.kind == "digits" and views.pad == 1
    x = ds.x[:20]
    out = views(x, 2, gen(0))
    std, mean = views.std[0], views.mean[0]
    raw = out * std + mean  # back to [0, 1]
    base = x.float() / 255
    padded = torch.nn.functional.pad(base, (1, 1, 1, 1))
    for i in range(20):
        for v in range(2):
            shifts = [padded[i, :, 1 + dy:9 + dy, 1 + dx:9 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
            assert any(torch.allclose(raw[i, v], s, atol=1e-5) for s in shifts)


def test_default_views_by_dataset_kind():
    assert default_views(load("mnist5k-coarse")).pad == 2
    spurious = default_views(load("spurious-mnist"))
    assert spurious.kind == "simclr" and len(spurious.mean) == 3
    strata = load("strata", n=200)
    vec = default_views(strata)
    x = strata.x[:10]
    out = vec(x, 4, gen(0))
    assert vec.kind == "vector" and out.shape == (10, 4, 16)
    expected = 0.1 * strata.x[strata.split == 0].std(0).mean()
    assert abs(vec.noise_std - expected) < 1e-6 and 0.05 < expected < 0.15
    assert torch.equal(vec.prepare(x), x) and abs((out - x[:, None]).std() / expected - 1) < 0.2
    assert torch.equal(out, vec(x, 4, gen(0)))


def test_generator_none_uses_torch_default_generator():
    x = images()
    views = Views(kind="simclr")
    torch.manual_seed(0)
    a = views(x, 2)
    torch.manual_seed(0)
    assert torch.equal(a, views(x, 2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_generator_drives_cuda_data_identically():
    x = images()
    views = Views(kind="simclr", mean=(0.5,) * 3, std=(0.25,) * 3)
    cpu = views(x, 2, gen(0))
    gpu = views(x.cuda(), 2, gen(0))
    assert gpu.device.type == "cuda" and torch.allclose(gpu.cpu(), cpu, atol=1e-4)
    cuda_gen = torch.Generator(device="cuda").manual_seed(0)
    assert views(x.cuda(), 2, cuda_gen).shape == cpu.shape


def test_authors_mnist_recipe_matches_torchvision_step_by_step():
    ds = load("mnist5k-coarse")
    views = default_views(ds, recipe="authors")
    assert (views.kind, views.crop_scale, views.flip_p, views.jitter, views.jitter_p, views.gray_p) == \
        ("simclr", (0.2, 1.0), 0.5, (0.4, 0.4, 0.4, 0.1), 0.8, 0.0)
    assert default_views(ds).kind == "digits"  # ours stays the default
    x = ds.x[:12]
    out = views(x, 1, gen(3))[:, 0]
    assert out.shape == (12, 1, 28, 28)  # 28 px, one channel: no grayscale step
    # the same draws, in the order the batched ops take them, replayed with torchvision's ops
    g, m = gen(3), 12
    u = lambda *shape: torch.rand(shape, generator=g)  # noqa: E731
    s = 0.2 + 0.8 * u(m)
    r = torch.exp(torch.log(torch.tensor(3 / 4)) + (torch.log(torch.tensor(4 / 3)) - torch.log(torch.tensor(3 / 4))) * u(m))
    r = torch.minimum(torch.maximum(r, s), 1 / s)
    box_w = torch.sqrt(s * r).clamp(max=1.0)
    box_h = (s / box_w).clamp(max=1.0)
    cx, cy = (1 - box_w) * (2 * u(m) - 1), (1 - box_h) * (2 * u(m) - 1)
    flip = u(m) < 0.5
    apply = u(m) < 0.8
    factors = torch.stack([0.6 + 0.8 * u(m), 0.6 + 0.8 * u(m), 0.6 + 0.8 * u(m), -0.1 + 0.2 * u(m)], 1)
    order = u(m, 4).argsort(1)
    unit = x.float() / 255
    crops = augment.crop_resize(unit, cx, cy, box_w, box_h, torch.zeros(m, dtype=torch.bool), size=(28, 28))
    for i in range(m):
        ref = TF.horizontal_flip(crops[i]) if flip[i] else crops[i]
        if apply[i]:
            for j in order[i].tolist():  # saturation and hue leave one channel as it is, as here
                ref = TV_OPS[j](ref, factors[i, j].item())
        ref = TF.normalize(ref, list(views.mean), list(views.std))
        assert torch.allclose(out[i], ref, atol=1e-4), i
    small = load("digits")  # the recipe names: unknown refused, vectors refused
    with pytest.raises(ValueError, match="unknown views recipe"):
        default_views(small, recipe="paper")
    with pytest.raises(ValueError, match="holds vectors"):
        default_views(load("strata", n=200), recipe="authors")
