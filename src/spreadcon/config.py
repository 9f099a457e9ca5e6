"""The training configuration: one dataclass, dotted overrides, JSON round trip, diffs.

    cfg = TrainConfig(dataset="digits", encoder="cnn-test", loss="spread", epochs=2)
    cfg = apply_overrides(cfg, ["alpha=0.25", "encoder_options.width=16", "keep_checkpoints=[1,3]"])
    TrainConfig.from_json(cfg.to_json()) == cfg
    config_diff(a, b) -> {"alpha": (0.5, 0.25), "encoder_options.width": (None, 16)}

Defaults follow the paper's ViT recipe (SPEC.md: AdamW lr 3e-4, weight decay 0.01, batch 128
images x 2 views, tau 0.5, CE weight 1, contrastive weight 1); the epoch count is a CPU-scale
default, not the paper's 600.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from spreadcon.data.views import RECIPES
from spreadcon.group_dro import check_eta
from spreadcon.io import read_json

PROTOCOLS = ("joint", "contrastive_then_probe", "ce")
# Where the loss, the CE head and the probes read (issue 26): "paper" (no projection head: one
# embedding for all three, as in the paper) or "projection" (h -> MLP -> z: the loss reads z, the
# probes read h; the SimCLR/SupCon habit).
EMBEDDINGS = ("paper", "projection")
OBJECTIVES = ("erm", "group_dro")
SELECT_BY = ("auto", "accuracy", "worst_group")
CE_LABELS = ("clean", "noisy")
# The one list of keys that say where or how a run is shown, not what it computes: they may differ
# when resuming or reusing a run (the data fingerprint checks the data wherever it lives), and
# experiments leave them out of a run's key.
RUNTIME_KEYS = frozenset({"device", "progress", "tensorboard", "out_dir", "data_root"})


@dataclass
class TrainConfig:
    """Everything that determines a training run (see `spreadcon train --help`)."""

    # data
    dataset: str = "mnist5k-coarse"
    dataset_options: dict[str, Any] = field(default_factory=dict)  # passed to spreadcon.data.load
    data_root: str | None = None
    data_seed: int = 0                  # seed of the dataset's own split (train/val/test)
    noise_rate: float = 0.0             # symmetric noise on the train labels (contrastive head)
    subsample_fraction: float = 1.0     # keep this fraction of the train split
    labelled_fraction: float = 1.0      # fraction of train labels the CE head may see
    ce_labels: str = "clean"            # CE head targets: "clean" (pre-noise) or "noisy" labels
    views: int = 2                      # augmented views per image (V)
    augment: str = "ours"               # views recipe: "ours" (digits: shifts) | "authors" (crop 0.2-1, flip, jitter)
    train_subset: str | None = None     # .npy of positions in the train split to keep (e.g. a coreset)
    # model
    encoder: str = "cnn"
    encoder_options: dict[str, Any] = field(default_factory=dict)  # passed to build_encoder
    embedding: str = "paper"            # "paper" (one embedding) | "projection" (h -> MLP -> z; see EMBEDDINGS)
    head_input: str = "z"               # the CE head reads "z" (the loss's input) or "h" (before encoder.proj)
    # objective
    protocol: str = "joint"             # "joint" | "contrastive_then_probe" | "ce"
    loss: str = "spread"                # a key of spreadcon.losses.LOSSES (ignored by protocol "ce")
    alpha: float = 0.5                  # L_spread = alpha * L_attract + (1 - alpha) * L_repel
    temperature: float = 0.5
    loss_options: dict[str, Any] = field(default_factory=dict)  # e.g. {"path": "lean"}
    memory_bank: int = 0                # > 0: contrast against a bank of the last N embeddings
    contrastive_weight: float = 1.0
    ce_weight: float = 1.0
    # worst-group robustness (Sagawa et al. 2020; GEORGE's end model): see spreadcon.groups
    objective: str = "erm"              # CE term: "erm" (mean) | "group_dro" (online Group DRO over `groups`)
    groups: str | None = None           # "group" | "stratum" (dataset fields) | a pseudo-group .npz; None: no groups
    gdro_eta: float = 0.01              # step size of the group weights q, in (0, 10]
    gdro_adjustment: float = 0.0        # C of the size adjustment C / sqrt(n_g) (Sagawa: 2 on Waterbirds)
    group_sampling: bool = False        # draw each epoch's N examples with replacement, p ~ 1 / n_g
    select_by: str = "auto"             # "accuracy" | "worst_group" (val); "auto": worst_group iff groups
    init_from: str | None = None        # run folder (its best.pt) or .pt whose encoder weights start training
    freeze_backbone_epochs: int = 0     # fine-tuning: train the heads only for the first k epochs
    backbone_lr_mult: float = 1.0       # fine-tuning: the backbone's learning rate is lr * this
    # optimisation
    epochs: int = 10
    batch_size: int = 128               # images per step (each seen in `views` views)
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_epochs: float = 1.0          # linear warm-up, then cosine decay to 0 at the last step
    grad_clip: float | None = None      # max global gradient norm; None: no clipping
    amp: bool = True                    # bfloat16 autocast, used on CUDA only
    channels_last: bool = False         # NHWC memory layout for image models (speed; not bit-identical)
    compile: str | None = None          # torch.compile backend for the training step ("inductor"); None: eager
    sync_batchnorm: bool = False        # under torchrun: BatchNorm -> SyncBatchNorm (CUDA only)
    probe_epochs: int = 100             # linear probe of protocol "contrastive_then_probe"
    probe_lr: float = 1e-3
    # bookkeeping
    seed: int = 0                       # model init, data order, augmentations, data transforms
    out_dir: str = "runs/run"
    device: str = "auto"                # "auto" = cuda if available, else cpu
    track_examples: bool = False        # write example_correct.npy [epochs, N_train]
    keep_checkpoints: list[int] = field(default_factory=list)  # epochs saved as ckpt_epoch{k}.pt
    eval_batch_size: int = 512
    progress: bool = True               # tqdm progress bar
    tensorboard: bool = True            # TensorBoard events, when tensorboard is importable

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the key for values that cannot be right whatever the data.

        Numbers given as numpy scalars or 0-d tensors are turned into Python numbers first."""
        for f in fields(self):
            setattr(self, f.name, _check_type(f.name, getattr(self, f.name), _KINDS[f.name]))
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol={self.protocol!r}; choose one of {list(PROTOCOLS)}")
        if self.head_input not in ("z", "h"):
            raise ValueError(f"head_input={self.head_input!r}; choose 'z' (the loss's input, the paper's "
                             f"protocol) or 'h' (the backbone output before the projection head)")
        self._check_embedding()
        if self.augment not in RECIPES:
            raise ValueError(f"augment={self.augment!r}; choose one of {list(RECIPES)} (the views recipe)")
        if self.ce_labels not in CE_LABELS:
            raise ValueError(f"ce_labels={self.ce_labels!r}; choose one of {list(CE_LABELS)}")
        self._check_ranges()
        self._check_groups()
        if self.protocol != "ce" and self.views < 2 and self.loss in ("simclr", "repel", "spread"):
            raise ValueError(f"loss {self.loss!r} needs views >= 2 (the augmentation is its positive); pass views=2")
        if self.data_root is not None:  # absolute: eval and --resume from another directory find the data
            self.data_root = str(Path(self.data_root).expanduser().resolve())
        if any(isinstance(k, bool) or not isinstance(k, int) for k in self.keep_checkpoints):
            raise ValueError(f"keep_checkpoints takes a list of epoch numbers, e.g. keep_checkpoints=[1,3]; "
                             f"got {self.keep_checkpoints!r}")
        bad = [k for k in self.keep_checkpoints if not 1 <= int(k) <= self.epochs]
        if bad:
            raise ValueError(f"keep_checkpoints {bad} outside 1..epochs={self.epochs}")
        if self.freeze_backbone_epochs > self.epochs:
            raise ValueError(f"freeze_backbone_epochs={self.freeze_backbone_epochs} exceeds epochs={self.epochs}")
        if self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs={self.warmup_epochs} exceeds epochs={self.epochs}; "
                             f"pass warmup_epochs <= epochs")

    def _check_embedding(self) -> None:
        if self.embedding not in EMBEDDINGS:
            raise ValueError(f"embedding={self.embedding!r}; choose 'paper' (loss, CE head and probes read one "
                             f"embedding) or 'projection' (h -> MLP -> z: the loss reads z, the probes read h)")
        if self.embedding == "paper" and self.encoder_options.get("proj_dim") is not None:
            raise ValueError(f"embedding='paper' has no projection head, but encoder_options.proj_dim="
                             f"{self.encoder_options['proj_dim']}; pass embedding=projection, or drop proj_dim")
        if self.embedding == "paper" and self.head_input != "z":
            raise ValueError("head_input='h' needs a projection head (embedding=projection); under "
                             "embedding='paper' the CE head reads the one embedding")

    def _check_ranges(self) -> None:
        for key in ("epochs", "batch_size", "views", "eval_batch_size", "probe_epochs"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key, most in _MAXIMA.items():
            if getattr(self, key) > most:
                raise ValueError(f"{key}={getattr(self, key)} is beyond any sensible run (at most {most}); "
                                 f"pass a smaller {key}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {self.alpha}")
        if not 0.0 <= self.noise_rate < 1.0:
            raise ValueError(f"noise_rate must lie in [0, 1), got {self.noise_rate}")
        for key in ("subsample_fraction", "labelled_fraction"):
            if not 0.0 < getattr(self, key) <= 1.0:
                raise ValueError(f"{key} must lie in (0, 1], got {getattr(self, key)}")
        for key in ("lr", "weight_decay", "warmup_epochs", "ce_weight", "contrastive_weight", "probe_lr",
                    "freeze_backbone_epochs", "backbone_lr_mult"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be a finite number >= 0, got {getattr(self, key)}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip}")
        if self.memory_bank < 0:
            raise ValueError(f"memory_bank must be >= 0 (0: no bank), got {self.memory_bank}")

    def _check_groups(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective={self.objective!r}; choose one of {list(OBJECTIVES)}")
        if self.select_by not in SELECT_BY:
            raise ValueError(f"select_by={self.select_by!r}; choose one of {list(SELECT_BY)}")
        try:
            check_eta(self.gdro_eta)
        except ValueError as err:
            raise ValueError(f"gdro_eta={self.gdro_eta}: {err}") from None
        if self.gdro_adjustment < 0:
            raise ValueError(f"gdro_adjustment (C of C / sqrt(n_g)) must be >= 0, got {self.gdro_adjustment}; "
                             f"Sagawa et al. use 2, 0 turns it off")
        if self.groups is not None and self.groups not in ("group", "stratum") and not self.groups.endswith(".npz"):
            raise ValueError(f"groups={self.groups!r}; pass groups=group or groups=stratum (dataset fields) or "
                             f"the path of a pseudo-group .npz")
        for key, needs in (("objective", self.objective == "group_dro"), ("group_sampling", self.group_sampling),
                           ("select_by", self.select_by == "worst_group")):
            if needs and self.groups is None:
                raise ValueError(f"{key}={getattr(self, key)!r} needs groups: pass groups=group, groups=stratum "
                                 f"or a pseudo-group .npz")
        if self.objective == "group_dro" and self.protocol == "contrastive_then_probe":
            raise ValueError("objective='group_dro' reweights the CE term of the step, which protocol "
                             "contrastive_then_probe does not have; use protocol joint or ce")

    @property
    def selection(self) -> str:
        """The model-selection rule in force: "accuracy" or "worst_group" (select_by, "auto" resolved)."""
        if self.select_by == "auto":
            return "worst_group" if self.groups is not None else "accuracy"
        return self.select_by

    # --- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        if "embedding" not in data and (data.get("encoder_options") or {}).get("proj_dim") is not None:
            data = {**data, "embedding": "projection"}  # a config.json written before `embedding` existed
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known keys: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        return cls.from_dict(json.loads(text))


def read_config(path: str | Path) -> TrainConfig:
    """A TrainConfig from a config.json; errors name the file and the key."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object of config keys, got {type(data).__name__}")
    try:
        return TrainConfig.from_dict(data)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from None


# Upper bounds that no run on one machine can reach (the memory check in train() is finer).
_MAXIMA = {"views": 1024, "batch_size": 1 << 20, "eval_batch_size": 1 << 20, "memory_bank": 1 << 24}


def _kind(f: dataclasses.Field) -> str:
    """'int' | 'float' | 'bool' | 'str' | 'dict' | 'list' (+ '?' when None is allowed)."""
    text = str(f.type)
    base = next(k for k in ("bool", "int", "float", "str", "dict", "list") if text.startswith(k))
    return base + ("?" if "None" in text else "")


def _as_number(value: Any) -> Any:
    """numpy scalars and 0-d tensors (anything with ndim 0 and .item()) -> Python numbers."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return value.item()
    return value


def _check_type(key: str, value: Any, kind: str) -> Any:
    """`value` checked against the field's kind; numbers normalised (see _as_number)."""
    if value is None and kind.endswith("?"):
        return None
    kind = kind.rstrip("?")
    value = _as_number(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{key} takes true or false, got {value!r}")
        return value
    if kind in ("int", "float") and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ValueError(f"{key} takes a number, got {value!r}; pass e.g. {key}={_EXAMPLE[kind]}")
    if kind == "int":
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{key} takes an integer, got {value!r}")
        return int(value)
    if kind == "float":
        if not math.isfinite(value):
            raise ValueError(f"{key} must be a finite number, got {value!r}")
        return float(value)
    expected = {"str": str, "dict": dict, "list": list}[kind]
    if not isinstance(value, expected):
        raise ValueError(f"{key} takes a {kind}, got {value!r} ({type(value).__name__})")
    return value


_EXAMPLE = {"int": 2, "float": 0.5}


def config_keys() -> list[str]:
    return [f.name for f in fields(TrainConfig)]


_KINDS = {f.name: _kind(f) for f in fields(TrainConfig)}


def parse_value(text: str) -> Any:
    """A command-line value: JSON if it parses (numbers, true/false/null, lists, dicts), else a string."""
    lowered = {"none": None, "true": True, "false": False}
    if text.lower() in lowered:
        return lowered[text.lower()]
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _coerce(key: str, value: Any, default: Any) -> Any:
    """`value` in the type of the field's default (ints stay ints, lists from "1,2")."""
    if value is None or default is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{key} takes true or false, got {value!r}")
        return value
    if isinstance(default, int) and isinstance(value, (int, float)) and not isinstance(value, bool):
        if float(value) != int(value):
            raise ValueError(f"{key} takes an integer, got {value!r}")
        return int(value)
    if isinstance(default, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, (int, float)) and not isinstance(value, (int, float)):
        raise ValueError(f"{key} takes a number, got {value!r}")
    if isinstance(default, list):
        if isinstance(value, str):
            value = [parse_value(v) for v in value.split(",") if v]
        if isinstance(value, (int, float)):
            value = [value]
        if not isinstance(value, list):
            raise ValueError(f"{key} takes a list, e.g. {key}=[1,3] or {key}=1,3; got {value!r}")
        return value
    if isinstance(default, dict) and not isinstance(value, dict):
        raise ValueError(f'{key} takes a JSON object, e.g. {key}={{"a":1}}, or set {key}.a=1; got {value!r}')
    if isinstance(default, str) and not isinstance(value, str):
        return str(value)
    return value


def apply_overrides(config: TrainConfig, overrides: list[str]) -> TrainConfig:
    """A new config with `key=value` overrides applied; `a.b=value` sets key b of dict field a.

    Values are read as JSON where possible (`alpha=0.25`, `keep_checkpoints=[1,3]`,
    `encoder_options.width=16`, `grad_clip=none`), else as strings (`loss=supcon`).
    """
    data = config.to_dict()
    defaults = TrainConfig().to_dict()
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value (e.g. --set alpha=0.25)")
        key, text = item.split("=", 1)
        key = key.strip()
        top, _, sub = key.partition(".")
        if top not in data:
            raise ValueError(f"unknown config key {top!r}; known keys: {sorted(data)}")
        value = parse_value(text)
        if sub:
            if not isinstance(defaults[top], dict):
                raise ValueError(f"{top} is not a dict field; use {top}=VALUE")
            data[top] = {**data[top], sub: value}
        else:
            default = defaults[top] if defaults[top] is not None else _FIELD_HINTS.get(top)
            data[top] = _coerce(top, value, default)
    return TrainConfig.from_dict(data)


# Fields whose default is None, with an example value of their type for coercion.
_FIELD_HINTS: dict[str, Any] = {"grad_clip": 1.0, "data_root": "", "groups": "", "init_from": ""}


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_diff(a: TrainConfig, b: TrainConfig, *, ignore: frozenset[str] = frozenset()) -> dict[str, tuple[Any, Any]]:
    """Keys (dotted inside dict fields) whose values differ: {key: (value in a, value in b)}."""
    fa, fb = _flatten(a.to_dict()), _flatten(b.to_dict())
    diff = {}
    for key in sorted(set(fa) | set(fb)):
        if key.split(".")[0] in ignore:
            continue
        va, vb = fa.get(key), fb.get(key)
        if va != vb:
            diff[key] = (va, vb)
    return diff
