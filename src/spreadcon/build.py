"""A config's pieces: device, dataset (as trained), model (+ its init), loss, memory bank.

    ds = build_dataset(config)                       # data.load + the config's seeded transforms
    model = build_model(config, ds.input_shape, ds.num_classes)
    init = init_encoder(model, config)               # config.init_from's encoder weights, or None
    loss = build_loss(config)                        # None under protocol "ce"

Names (dataset, encoder, loss) are checked here, once, by `check_name`. Nothing here reads or
writes a run folder: `spreadcon.train` builds a run with these, `spreadcon.runs.load_run`
rebuilds one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from spreadcon import data, losses, models, recipes
from spreadcon.checkpoint import checkpoint_epoch, read_checkpoint
from spreadcon.config import TrainConfig
from spreadcon.data import StrataDataset
from spreadcon.io import file_sha256, read_json
from spreadcon.models import Classifier

# The projection head of embedding="projection" when encoder_options give none (SimCLR's MLP).
DEFAULT_PROJECTION = {"proj_dim": 128}


def check_name(kind: str, name: str) -> None:
    """ValueError naming `name` when the dataset / encoder / loss registry does not know it."""
    known = {"dataset": data.DATASETS, "encoder": models.ENCODERS, "loss": losses.LOSSES}[kind]
    if kind == "encoder" and ":" in name:  # timm:NAME / torchvision:NAME: models checks NAME
        return
    if name not in known:
        extra = " (or protocol=ce for cross-entropy alone)" if kind == "loss" else ""
        plural = {"loss": "losses"}.get(kind, kind + "s")
        raise ValueError(f"unknown {kind} {name!r}; known {plural}: {sorted(known)}{extra}")


def check_names(config: TrainConfig) -> None:
    check_name("dataset", config.dataset)
    check_name("encoder", config.encoder)
    if config.protocol != "ce":
        check_name("loss", config.loss)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"device={name!r} is not a device name ({err}); use cpu, cuda, cuda:0 or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but CUDA is not available here; use device=cpu or auto")
    return device


# --- the dataset ---------------------------------------------------------------------------
def build_dataset(config: TrainConfig) -> StrataDataset:
    """spreadcon.data.load + the config's seeded transforms (subsample, noise, labelled fraction),
    then config.train_subset (positions in the train split of the dataset as transformed so far)."""
    check_name("dataset", config.dataset)
    try:
        ds = data.load(config.dataset, root=config.data_root, seed=config.data_seed, **config.dataset_options)
    except (TypeError, ValueError) as err:
        if not config.dataset_options:
            raise
        raise ValueError(f"dataset {config.dataset!r} with dataset_options {config.dataset_options}: {err}") from None
    if config.subsample_fraction < 1.0:
        ds = data.subsample(ds, config.subsample_fraction, seed=config.seed)
    if config.noise_rate > 0.0:
        ds = data.add_label_noise(ds, config.noise_rate, seed=config.seed)
    if config.labelled_fraction < 1.0:
        ds = data.labelled_fraction(ds, config.labelled_fraction, seed=config.seed)
    if config.train_subset is not None:
        ds = apply_train_subset(ds, config.train_subset)
    if config.groups is not None and config.groups not in ("group", "stratum"):
        ds = record_group_file(ds, config.groups)
    fit = model_input(config, ds.input_shape)
    return ds if fit is None else data.fit_to_model(ds, fit, config.encoder)


def model_input(config: TrainConfig, input_shape: tuple[int, ...]) -> dict[str, Any] | None:
    """The pretrained input size and normalisation the data are fitted to for config.encoder
    (spreadcon.models.input_config): a timm:/torchvision: encoder's data_config for images of
    `input_shape` (the data's), None for spreadcon's own encoders or encoder_options
    pretrained_input=false. build_dataset records it for the views; build_model builds for its size."""
    check_name("encoder", config.encoder)
    try:
        return models.input_config(config.encoder, tuple(input_shape), config.encoder_options)
    except (TypeError, ValueError) as err:
        raise ValueError(f"encoder {config.encoder!r} with encoder_options {config.encoder_options}: {err}") from None


def with_recipe(config: TrainConfig, chosen: set[str] | frozenset[str] = frozenset(), name: str = "auto"
                ) -> tuple[TrainConfig, recipes.Recipe, str]:
    """(config, recipe, a line saying which and why): spreadcon.recipes' recipe `name` (for "auto":
    the one for the shape of config's images; the paper's protocol when config.embedding is among
    the `chosen` keys and says "paper") layered under the keys the user `chosen`. How `spreadcon
    train` builds its config, and the default-recipes experiment its runs."""
    if name != "auto":
        recipes.get(name)  # an unknown name before any data is read
    ds = build_dataset(config)
    n_train = int(len(ds.rows("train")))
    recipe, why = recipes.choose(name, ds.input_shape, config.embedding if "embedding" in chosen else None)
    data, note = recipes.layer(recipe, config.to_dict(), set(chosen), n_train)
    return TrainConfig.from_dict(data), recipe, recipes.describe(recipe, why, data, n_train) + note


def record_group_file(ds: StrataDataset, path: str | Path) -> StrataDataset:
    """`ds` with a transform record of the pseudo-group file (absolute path, sha256), so that the
    data fingerprint of a run trained on those groups changes when the file does."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"groups={str(path)!r}: no such file; pass groups=group, groups=stratum or a "
                                f"pseudo-group .npz (spreadcon.groups.write_group_file)")
    return ds.with_transform({"transform": "groups", "path": str(path.resolve()), "sha256": file_sha256(path)})


def _positions(path: Path, n_train: int) -> np.ndarray:
    try:
        pos = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise ValueError(f"train_subset={str(path)!r} is not a readable .npy file ({err})") from None
    if pos.ndim != 1 or pos.size == 0 or not np.issubdtype(pos.dtype, np.integer):
        raise ValueError(f"train_subset {path}: expected a non-empty 1-d integer array of positions, "
                         f"got dtype {pos.dtype} shape {pos.shape}")
    if pos.min() < 0 or pos.max() >= n_train or len(np.unique(pos)) != len(pos):
        raise ValueError(f"train_subset {path}: positions must be distinct and in [0, {n_train}) "
                         f"(the train split's size); got range [{pos.min()}, {pos.max()}], {len(pos)} values")
    return pos


def apply_train_subset(ds: StrataDataset, path: str | Path) -> StrataDataset:
    """Keep the train rows at the positions stored in the .npy at `path` (val/test untouched);
    the transform record holds the file's absolute path and sha256."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"train_subset={str(path)!r}: no such file; pass an .npy of positions "
                                f"in the train split (e.g. from spreadcon.apps.coreset)")
    rows = ds.rows("train")
    pos = _positions(path, len(rows))
    keep = torch.ones(len(ds), dtype=torch.bool)
    keep[rows] = False
    keep[rows[torch.as_tensor(pos, dtype=torch.int64)]] = True
    record = {"transform": "train_subset", "path": str(path.resolve()), "sha256": file_sha256(path),
              "kept": int(len(pos)), "of": int(len(rows))}
    return ds.subset(keep).with_transform(record)


# --- the model -----------------------------------------------------------------------------
def encoder_options(config: TrainConfig, *, restore: bool = False) -> dict[str, Any]:
    """config.encoder_options, with the default projection head under embedding="projection";
    `restore` (weights about to come from a checkpoint) drops a backbone's weights file and
    pretrained download."""
    options = dict(config.encoder_options)
    if config.embedding == "projection":
        options = {**DEFAULT_PROJECTION, **options}
    if restore:
        options = {k: v for k, v in options.items() if k not in ("weights", "pretrained")}
    return options


def build_model(config: TrainConfig, input_shape: tuple[int, ...], num_classes: int, *,
                restore: bool = False) -> Classifier:
    """The encoder named in the config (its init seeded by config.seed) with a CE head; `restore`:
    for a checkpoint's weights (no weights file read, nothing downloaded). input_shape: the data's
    (ds.input_shape); a timm:/torchvision: encoder is built for its pretrained input size instead
    (`model_input`; build_dataset's views resize to it), keeping the data's channels."""
    check_name("encoder", config.encoder)
    fit = model_input(config, input_shape)
    input_shape = tuple(fit["input_size"]) if fit is not None else tuple(input_shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        try:
            encoder = models.build_encoder(config.encoder, tuple(input_shape), **encoder_options(config, restore=restore))
        except (TypeError, ValueError) as err:  # an option value of the wrong kind: widths=[8, {...}], widths="abc"
            raise ValueError(f"encoder {config.encoder!r} with encoder_options {config.encoder_options}: {err}") from None
        return Classifier(encoder, num_classes, head_input=config.head_input)


def init_encoder(model: Classifier, config: TrainConfig) -> dict[str, Any] | None:
    """Copy the encoder weights of config.init_from (a run folder: its best.pt; or a .pt file) into
    `model` (its CE head keeps its fresh init). Returns {"path", "sha256", "epoch"} for run.json, or
    None without init_from. A different encoder architecture is refused, naming both."""
    if config.init_from is None:
        return None
    source = Path(config.init_from).expanduser()
    path = source / "best.pt" if source.is_dir() else source
    if not path.is_file():
        what = "best.pt in that run folder" if source.is_dir() else "such file"
        raise FileNotFoundError(f"init_from={config.init_from!r}: no {what}; pass a finished run folder or a "
                                f"checkpoint .pt")
    ckpt = read_checkpoint(path)
    saved_json = path.parent / "config.json"
    saved = ckpt.get("config") or (read_json(saved_json) if saved_json.exists() else None)
    _check_same_encoder(config, saved)
    weights = {k[len("encoder."):]: v for k, v in ckpt.get("model", {}).items() if k.startswith("encoder.")}
    own = model.encoder.state_dict()
    wrong = sorted(k for k in set(own) | set(weights)
                   if k not in own or k not in weights or own[k].shape != weights[k].shape)
    if wrong:
        raise ValueError(f"init_from={config.init_from!r}: its encoder weights do not fit encoder {config.encoder!r} "
                         f"on this dataset (keys or shapes differ: {wrong[:5]}); the source run must use the same "
                         f"encoder, encoder_options and input shape")
    model.encoder.load_state_dict(weights)
    return {"path": str(path.resolve()), "sha256": file_sha256(path), "epoch": checkpoint_epoch(ckpt)}


def _check_same_encoder(config: TrainConfig, saved: dict[str, Any] | None) -> None:
    if saved is None:
        return
    theirs = (saved.get("encoder"), saved.get("encoder_options", {}))
    if theirs != (config.encoder, config.encoder_options):
        raise ValueError(f"init_from={config.init_from!r} holds encoder {theirs[0]!r} with encoder_options "
                         f"{theirs[1]}, this run builds encoder {config.encoder!r} with encoder_options "
                         f"{config.encoder_options}; pass the same encoder and options")


# --- the objective -------------------------------------------------------------------------
def build_loss(config: TrainConfig) -> torch.nn.Module | None:
    """The contrastive loss module named by config.loss (None under protocol "ce")."""
    if config.protocol == "ce":
        return None
    check_name("loss", config.loss)
    kwargs: dict[str, Any] = {"temperature": config.temperature, **config.loss_options}
    if config.loss in ("spread", "spread-authors"):
        kwargs["alpha"] = config.alpha
    try:
        return losses.LOSSES[config.loss](**kwargs)
    except TypeError as err:  # an option the loss's constructor does not take
        raise ValueError(f"loss_options {config.loss_options} do not fit loss {config.loss!r} ({err})") from None


def build_memory_bank(config: TrainConfig, device: torch.device) -> losses.MemoryBank | None:
    """spreadcon.losses.MemoryBank(size=config.memory_bank), or None when memory_bank is 0.
    Under torchrun every process builds one and pushes the gathered global batch into it
    (`distributed.gather_global_batch`), so all hold the bank of a single-process run."""
    if config.memory_bank <= 0:
        return None
    if config.protocol == "ce":
        raise ValueError("memory_bank needs a contrastive loss; use protocol joint or contrastive_then_probe")
    return losses.MemoryBank(size=config.memory_bank).to(device)
