"""Group DRO end models that train the whole network (GEORGE's and Sagawa et al.'s pipeline).

The estimator of `apps/gdro.py` (`GroupDRO`, mode "linear-frozen") fits a linear layer on frozen
embeddings: fast, but capped by what the frozen features separate. `NetworkGroupDRO` instead trains
a network with the one trainer (`spreadcon.train`), objective "group_dro" (the online Group DRO
loss of `spreadcon.group_dro`: exponentiated-gradient group weights, step eta, size adjustment
C / sqrt(n_g)), optionally with group-balanced sampling (Sagawa's --reweight_groups), model
selection by the worst validation (pseudo-)group accuracy, starting from scratch or from the
coarse run's encoder (`init`):

    end = NetworkGroupDRO(epochs=10, adjustment=2.0, group_sampling=True, init="scratch")
    dirs = end.fit_run(run, pseudo_groups_path, runs_dir="results/runs/end-models")
    # -> {"erm": ..., "gdro_pseudo": ..., "gdro_true": ...}: three run folders, trained or reused

Each end model is an ordinary run folder (config, checkpoints, metrics), keyed by its config:
from scratch, ERM and true-group Group DRO do not depend on the coarse run's loss, so the runs of
L_CE, L_SC and L_spread share them (`train_or_reuse`).
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from spreadcon.config import RUNTIME_KEYS, TrainConfig
from spreadcon.group_dro import check_eta
from spreadcon.io import file_sha256
from spreadcon.runs import Run
from spreadcon.train import train_or_reuse

INITS = ("scratch", "run")
# The trainer fields of the coarse run that the end models keep: the same data, split and network.
KEPT = ("dataset", "dataset_options", "data_root", "data_seed", "subsample_fraction", "encoder", "encoder_options", "embedding",
        "eval_batch_size", "device", "channels_last")


@dataclass
class NetworkGroupDRO:
    """Hyperparameters of the network end models. Defaults: Sagawa et al.'s Waterbirds settings
    where they apply (eta 0.01, C = 2, group-balanced sampling, strong weight decay); epochs, lr
    and batch chosen on spurious-mnist's worst validation group with the true groups (15 epochs,
    lr 3e-3, batch 64, weight decay 0.1: 0.83, against 0.26 for 4 epochs at lr 1e-3;
    docs/robust-training.md)."""

    epochs: int = 15
    lr: float = 3e-3
    weight_decay: float = 0.1
    batch_size: int = 64
    eta: float = 0.01
    adjustment: float = 2.0
    group_sampling: bool = True
    init: str = "scratch"            # "scratch" | "run": start from the coarse run's encoder
    mode: str = "network"

    def __post_init__(self) -> None:
        check_eta(self.eta)
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if self.mode != "network":
            raise ValueError(f"mode must be 'network' (the linear-frozen option is apps.gdro.GroupDRO), "
                             f"got {self.mode!r}")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("lr", "adjustment", "weight_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)) \
                    or float(value) < 0 or (name == "lr" and float(value) == 0):
                raise ValueError(f"{name} must be finite and {'> 0' if name == 'lr' else '>= 0'}, got {value!r}")
        if not isinstance(self.group_sampling, bool):
            raise ValueError(f"group_sampling must be true or false, got {self.group_sampling!r}")

    def get_params(self) -> dict[str, Any]:
        return asdict(self)

    def train_config(self, run_config: TrainConfig, *, method: str, groups: str | None, run_dir: Path, out_dir: Path):
        """The TrainConfig of one end model ("erm", "gdro_pseudo", "gdro_true") of a coarse run."""
        base = {k: getattr(run_config, k) for k in KEPT}
        robust = method != "erm"
        return TrainConfig(
            **base, protocol="ce", epochs=int(self.epochs), lr=float(self.lr), weight_decay=float(self.weight_decay),
            batch_size=int(self.batch_size), views=1, seed=run_config.seed, objective="group_dro" if robust else "erm",
            groups=groups, gdro_eta=float(self.eta), gdro_adjustment=float(self.adjustment),
            group_sampling=bool(self.group_sampling) and robust,
            select_by="worst_group" if robust else "accuracy",
            init_from=str(run_dir) if self.init == "run" else None, out_dir=str(out_dir), progress=False,
            tensorboard=False)

    def fit_run(self, run: Run, pseudo_groups: str | Path, *, runs_dir: str | Path) -> dict[str, Path]:
        """Train (or reuse) the three end models of a loaded coarse `run`; {method: run folder}.

        pseudo_groups: the .npz of `spreadcon.groups.write_group_file` (recovered groups of the train and val
        splits). The true groups are the dataset's `group` field, else its `stratum`."""
        if not Path(pseudo_groups).is_file():
            raise FileNotFoundError(f"pseudo_groups {pseudo_groups} does not exist; write it with "
                                    f"spreadcon.groups.write_group_file (apps.robustness does)")
        true = "group" if run.dataset.group is not None else "stratum"
        plan = {"erm": None, "gdro_pseudo": str(pseudo_groups), "gdro_true": true}
        out = {}
        for method, groups in plan.items():
            config = self.train_config(run.config, method=method, groups=groups, run_dir=run.run_dir,
                                       out_dir=Path("unset"))
            config.out_dir = str(Path(runs_dir) / f"{method}-{_digest(config, groups)}")
            out[method] = train_or_reuse(config)
        return out


def _digest(config: TrainConfig, groups: str | None) -> str:
    """A key of the end model's config; a pseudo-group file enters by its path and its content
    (recovered again with other settings, it keys a new end model)."""
    # data_root stays in: end-model folders keyed before it became a runtime key keep their names
    d = {k: v for k, v in config.to_dict().items() if k not in RUNTIME_KEYS - {"data_root"}}
    if groups is not None and groups not in ("group", "stratum"):
        d["groups_sha256"] = file_sha256(groups)
    return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:10]
