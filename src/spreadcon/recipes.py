"""Named training recipes, and the one `spreadcon train` picks for the images it is given.

A recipe is a set of TrainConfig overrides (the net, the protocol, the optimiser, the epochs) and
the alpha of L_spread chosen with it. The experiments train with these same dicts
(`spreadcon.experiments.recipes` builds on them), so a user's default run is a run the project has
measured. Where each was chosen, on which validation split and by which rule: docs/recipes.md.

    recipe = pick((1, 28, 28), n_train=6000)       # "gray-32": the validated small-image recipe
    config = TrainConfig(**recipe.overrides(n_train=6000), dataset="npz", ...)

`spreadcon train` applies the picked recipe under its own options: --epochs 5 still trains the
recipe's net for 5 epochs; `--recipe NAME` names one, `--recipe none` keeps TrainConfig's bare
defaults (the paper's ViT optimiser settings).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

# Images up to this side length are "small" (digits, MNIST, CIFAR); larger ones get "large".
SMALL_SIDE = 32
# Training splits smaller than this get SMALL_SET_BATCH images a step: 20 steps an epoch on the
# 1,300 training images of 8x8 digits (digits-coarse trains with it in every experiment).
SMALL_SET = 2000
SMALL_SET_BATCH = 64
# The protocol `pick` chooses when the user names none (see docs/recipes.md, "Default recipes").
DEFAULT_EMBEDDING = "projection"


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str                 # the input it fits and where it was chosen
    train: dict[str, Any]        # TrainConfig overrides
    alpha: float | None = None   # L_spread's alpha chosen with it (None: TrainConfig's)
    validated: bool = True       # chosen on a validation split (docs/recipes.md); False: a starting point

    def overrides(self, n_train: int | None = None) -> dict[str, Any]:
        """The TrainConfig overrides, with the small-set batch size when n_train < SMALL_SET."""
        out = copy.deepcopy(self.train)
        if self.alpha is not None:
            out["alpha"] = self.alpha
        if n_train is not None and n_train < SMALL_SET:
            out["batch_size"] = min(out.get("batch_size", SMALL_SET_BATCH), SMALL_SET_BATCH)
        return out


# Grayscale images up to 32 px (digits, MNIST): the `cnn-digits` net (two conv-BN stages 16/32
# flattened into a 256-d h) with a projection head (h -> MLP -> 128-d z for the loss; probes read
# h), Adam 1e-3, batch 256, 30 epochs, the joint CE head. Chosen on mnist5k-coarse's validation
# split (docs/recipes.md stages A-C); alpha 0.16 by the same split (stage B / `reproduce sweep`).
GRAY_32 = Recipe(
    "gray-32", "grayscale images up to 32 px (digits, MNIST); projection head, probes read h",
    {"encoder": "cnn-digits", "embedding": "projection", "encoder_options": {"proj_dim": 128, "proj_hidden": 256},
     "epochs": 30, "batch_size": 256, "lr": 1e-3, "weight_decay": 0.0, "channels_last": True},
    alpha=0.16)
# The paper's protocol on the same images: no projection head, so the loss, the CE head and the
# probes read one 128-d embedding after a 256-unit ReLU layer; 60 epochs. Chosen by stage P
# (docs/recipes.md "The paper protocol"); alpha 0.5 by Appendix E.2 (`reproduce sweep-paper`).
GRAY_32_PAPER = Recipe(
    "gray-32-paper", "grayscale images up to 32 px, the paper's protocol (one embedding for loss, CE head, probes)",
    {"encoder": "cnn", "embedding": "paper",
     "encoder_options": {"widths": [16, 32], "flatten": True, "hidden": [256], "out_dim": 128},
     "epochs": 60, "batch_size": 256, "lr": 1e-3, "weight_decay": 0.0, "channels_last": True},
    alpha=0.5)
# Colour images up to 32 px (CIFAR): the flattened 16/32/64 cnn (256-d h) with a projection head,
# Adam 1e-3, batch 256, 30 epochs. Its net was chosen on CIFAR-10-Coarse's validation split at 5
# epochs (docs/recipes.md stage M); alpha 0.25 (the paper's CIFAR-10-Coarse choice).
COLOUR_32 = Recipe(
    "colour-32", "colour images up to 32 px (CIFAR); projection head, probes read h",
    {"encoder": "cnn", "embedding": "projection",
     "encoder_options": {"widths": [16, 32, 64], "flatten": True, "out_dim": 256, "proj_dim": 128, "proj_hidden": 256},
     "epochs": 30, "batch_size": 256, "lr": 1e-3, "weight_decay": 0.0},
    alpha=0.25)
# The paper's protocol on the same images: the loss, the CE head and the probes read one 128-d
# embedding after a 256-unit ReLU layer; Adam 3e-3, 60 epochs, tau 0.5. Chosen by stage PM
# (docs/recipes.md: CIFAR-10-Coarse validation coarse accuracy of L_SS, L_SC and L_spread, one
# seed); channels_last added after it (the same maths, 1.2x the images/s on one thread).
COLOUR_32_PAPER = Recipe(
    "colour-32-paper", "colour images up to 32 px, the paper's protocol (one embedding for loss, CE head, probes)",
    {"encoder": "cnn", "embedding": "paper",
     "encoder_options": {"widths": [16, 32, 64], "flatten": True, "hidden": [256], "out_dim": 128},
     "epochs": 60, "batch_size": 256, "lr": 3e-3, "weight_decay": 0.0, "channels_last": True},
    alpha=0.5)
# Anything larger (photographs, lesions): torchvision's ResNet18 shape from scratch with a
# projection head, Adam 1e-3, batch 128, 30 epochs. Not chosen on any split yet (no dataset the
# project ships is larger than 32 px): a starting point; a pretrained timm:/torchvision: backbone
# (--encoder, --weights) is the better choice when one fits.
LARGE = Recipe(
    "large", "images larger than 32 px; ResNet18 from scratch with a projection head (not validated)",
    {"encoder": "resnet18", "embedding": "projection", "encoder_options": {"proj_dim": 128, "proj_hidden": 512},
     "epochs": 30, "batch_size": 128, "lr": 1e-3, "weight_decay": 0.0},
    alpha=0.25, validated=False)

LARGE_PAPER = Recipe(
    "large-paper", "images larger than 32 px, the paper's protocol: ResNet18 from scratch, its 512-d output "
    "the one embedding (not validated)",
    {**{k: v for k, v in LARGE.train.items() if k != "encoder_options"}, "embedding": "paper"},
    alpha=0.25, validated=False)

# Vectors (no image): the `mlp` encoder under TrainConfig's other defaults (not validated).
VECTORS = Recipe("vectors", "vector data (no image): the mlp encoder (not validated)", {"encoder": "mlp"},
                 validated=False)

RECIPES: dict[str, Recipe] = {r.name: r for r in (GRAY_32, GRAY_32_PAPER, COLOUR_32, COLOUR_32_PAPER,
                                                  LARGE, LARGE_PAPER, VECTORS)}


def pick(input_shape: tuple[int, ...], embedding: str = "projection") -> Recipe:
    """The recipe for images of `input_shape` (C, H, W) under `embedding` ("projection" or
    "paper"): gray-32 (one channel, sides <= 32), colour-32 (more channels, sides <= 32), large
    (otherwise), with "-paper" for the paper's protocol; vectors for vector data."""
    if len(input_shape) != 3:
        return VECTORS
    channels, *sides = input_shape
    base = "large" if max(sides) > SMALL_SIDE else "gray-32" if channels == 1 else "colour-32"
    return RECIPES[base + ("-paper" if embedding == "paper" else "")]


def get(name: str) -> Recipe:
    """The recipe called `name`; ValueError listing the known ones."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)} (or none / auto)")
    return RECIPES[name]


def choose(name: str, input_shape: tuple[int, ...], embedding: str | None = None) -> tuple[Recipe, str]:
    """(recipe, how it was chosen): `name`, or for "auto" the one `pick` gives `input_shape` under
    `embedding` (DEFAULT_EMBEDDING when None)."""
    if name != "auto":
        return get(name), "as named"
    kind = "images" if len(input_shape) == 3 else "vectors"
    return pick(input_shape, embedding or DEFAULT_EMBEDDING), f"picked for {'x'.join(map(str, input_shape))} {kind}"


def layer(recipe: Recipe, config: dict[str, Any], chosen: set[str], n_train: int) -> tuple[dict[str, Any], str]:
    """(config dict, note): the recipe over `config` (a TrainConfig's dict), under the keys the user
    `chosen` (dict keys merge: the user's entries over the recipe's). A user's encoder other than the
    recipe's drops the recipe's encoder_options (they describe its net); the note says so."""
    overrides = recipe.overrides(n_train=n_train)
    note = ""
    if "encoder" in chosen and config["encoder"] != overrides.get("encoder", config["encoder"]):
        overrides.pop("encoder_options", None)
        note = f"; its encoder options left out for encoder {config['encoder']}"
    out = {**config, **overrides}
    for key in chosen:
        mine = config[key]
        out[key] = {**overrides[key], **mine} if isinstance(mine, dict) and isinstance(overrides.get(key), dict) else mine
    return out, note


def describe(recipe: Recipe, why: str, config: dict[str, Any], n_train: int) -> str:
    """One line: the recipe, why it was used, and the settings it gave."""
    head = "projection head" if config["embedding"] == "projection" else "one embedding (the paper's protocol)"
    flag = "" if recipe.validated else " [not validated: a starting point]"
    epochs = config["epochs"]
    return (f"recipe {recipe.name} ({why}, {n_train:,} training examples){flag}: {config['encoder']}, {head}, "
            f"{epochs} epoch{'' if epochs == 1 else 's'}, batch {config['batch_size']}, lr {config['lr']:g}, "
            f"alpha {config['alpha']:g}")
