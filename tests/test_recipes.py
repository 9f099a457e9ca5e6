"""The default recipes (issue 24): `spreadcon train` picks one by the images' size and channels,
says which, and the experiments train with the same dicts."""

from __future__ import annotations

import numpy as np
import pytest

from spreadcon import recipes
from spreadcon.cli import build_parser
from spreadcon.commands.train import config_from_args
from spreadcon.config import TrainConfig
from spreadcon.errors import UserError
from spreadcon.experiments import fig4
from spreadcon.experiments.recipes import PAPER_TRAIN, SMALL_TRAIN


@pytest.mark.parametrize("shape, embedding, name", [
    ((1, 28, 28), "projection", "gray-32"), ((1, 8, 8), "projection", "gray-32"),
    ((1, 28, 28), "paper", "gray-32-paper"), ((3, 32, 32), "projection", "colour-32"),
    ((3, 32, 32), "paper", "colour-32-paper"), ((3, 64, 64), "projection", "large"),
    ((1, 224, 224), "paper", "large-paper"), ((16,), "projection", "vectors"),
])
def test_pick_by_size_and_channels(shape, embedding, name):
    assert recipes.pick(shape, embedding).name == name


def test_overrides_carry_alpha_and_the_small_set_batch():
    big, small = recipes.GRAY_32.overrides(n_train=4000), recipes.GRAY_32.overrides(n_train=1294)
    assert big["batch_size"] == 256 and small["batch_size"] == recipes.SMALL_SET_BATCH and big["alpha"] == 0.16
    assert recipes.GRAY_32_PAPER.overrides()["alpha"] == 0.5
    small["encoder_options"]["proj_dim"] = 1  # a copy: the recipe itself is unchanged
    assert recipes.GRAY_32.train["encoder_options"]["proj_dim"] == 128
    for recipe in recipes.RECIPES.values():  # every recipe builds a valid config
        TrainConfig(**recipe.overrides())
    with pytest.raises(ValueError, match="unknown recipe 'nope'"):
        recipes.get("nope")


def test_the_experiments_train_with_the_recipes():
    assert SMALL_TRAIN == recipes.GRAY_32.train and PAPER_TRAIN == recipes.GRAY_32_PAPER.train
    assert {k: v for k, v in fig4.MEDIUM_TRAIN.items() if k != "subsample_fraction"} == recipes.COLOUR_32.train


def _config(*argv: str) -> tuple[TrainConfig, str | None]:
    return config_from_args(build_parser().parse_args(["train", *argv]))


def test_train_picks_the_recipe_and_says_which(tmp_path):
    config, line = _config("--dataset", "digits-coarse", "--epochs", "2", "--out", str(tmp_path / "r"))
    assert line.startswith("recipe gray-32 (picked for 1x8x8 images, 1,294 training examples)")
    assert (config.encoder, config.embedding, config.alpha, config.batch_size, config.lr, config.epochs) == (
        "cnn-digits", "projection", 0.16, 64, 1e-3, 2)  # the options apply over the recipe
    config, line = _config("--dataset", "digits-coarse", "--embedding", "paper", "--set", "alpha=0.3")
    assert "recipe gray-32-paper" in line and config.encoder_options["hidden"] == [256] and config.alpha == 0.3
    config, line = _config("--dataset", "digits-coarse", "--recipe", "colour-32")
    assert "recipe colour-32 (as named" in line and config.encoder_options["widths"] == [16, 32, 64]
    config, line = _config("--dataset", "digits-coarse", "--recipe", "none")
    assert config == TrainConfig(dataset="digits-coarse") and "recipe none" in line
    config, line = _config("--dataset", "digits-coarse", "--encoder", "mlp")
    assert config.encoder == "mlp" and "proj_hidden" not in config.encoder_options and "left out" in line


def test_train_picks_by_the_users_own_images(tmp_path):
    rng = np.random.default_rng(0)
    fine = np.arange(300) % 6
    np.savez(tmp_path / "colour.npz", images=rng.integers(0, 256, (300, 32, 32, 3), dtype=np.uint8),
             labels=fine, coarse=fine // 3)
    np.savez(tmp_path / "big.npz", images=rng.integers(0, 256, (300, 48, 48), dtype=np.uint8),
             labels=fine, coarse=fine // 3)
    _, line = _config("--dataset", "npz", "--set", f"data_root={tmp_path / 'colour.npz'}")
    assert line.startswith("recipe colour-32 (picked for 3x32x32 images")
    config, line = _config("--dataset", "npz", "--set", f"data_root={tmp_path / 'big.npz'}")
    assert "recipe large (picked for 1x48x48" in line and "not validated" in line and config.encoder == "resnet18"


def test_recipe_is_refused_beside_resume_or_config(tmp_path):
    with pytest.raises(UserError, match="--recipe chooses the starting config"):
        _config("--recipe", "gray-32", "--resume", "--out", str(tmp_path))
    config, line = _config("--resume", "--out", str(tmp_path / "none"))
    assert line is None and config.encoder == TrainConfig().encoder
    with pytest.raises(ValueError, match="unknown recipe 'nope'"):  # a user error, before any data is read
        _config("--dataset", "npz", "--recipe", "nope")
