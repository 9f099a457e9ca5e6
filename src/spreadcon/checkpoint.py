"""The training state and its checkpoint file: everything needed to continue a run bit for bit.

    state = TrainState(model, optimizer, scheduler, generators)
    save_checkpoint(path, state, callbacks=cbs, config=cfg)     # atomic (temp file + rename)
    load_checkpoint(path, state, callbacks=cbs, device=dev)     # fills `state` in place

checkpoint.pt = {"format": 2, "model", "optimizer", "scheduler", "position" (TrainState's
counters, this epoch's order and running sums), "rng" (global torch/numpy/python states and the
trainer's generators), "callbacks" (their state_dicts), "extra" (e.g. a memory bank), "config"}.
A file that cannot be read names the other saved models (best.pt, ckpt_epoch{k}.pt).

A run folder's models are named by `checkpoint_path` ("best" -> best.pt, "last" ->
checkpoint.pt, k -> ckpt_epoch{k}.pt). Outputs derived from a model (eval/, apply outputs) carry
its `checkpoint_stamp` (name, file, epoch, sha256 of the file's bytes): a resumed or retrained run
writes a new file with another hash, so `stale_reason` tells an output made before.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from spreadcon.io import file_sha256, read_json, save_torch

FORMAT = 2
# The position's fields, in TrainState (format 1, before TrainState, had the same keys).
POSITION_KEYS = ("epoch", "step_in_epoch", "global_step", "perm", "best_val", "best_epoch", "history", "acc",
                 "group_weights")
# Position keys added after format 2 was fixed, with their value in an older checkpoint.
LATER_KEYS = {"group_weights": None}


@dataclass
class TrainState:
    """Where training is: the model and its optimiser, the random streams, the counters.

    epoch: epochs completed; step_in_epoch / global_step: optimiser steps taken in this epoch /
    in all; perm [N_train]: this epoch's order of the training rows (None between epochs);
    best_val / best_epoch: model selection so far; history: example_correct [N_train] bool per
    finished epoch; acc: this epoch's running sums (float64 tensors, see train.new_accumulators);
    group_weights [G] float64: Group DRO's q on the simplex (objective "group_dro"; else None),
    updated in place by every step.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    generators: dict[str, torch.Generator]
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    perm: Tensor | None = None
    best_val: float = -1.0
    best_epoch: int = 0
    history: list[Tensor] = field(default_factory=list)
    acc: dict[str, Tensor] | None = None
    group_weights: Tensor | None = None

    def position(self) -> dict[str, Any]:
        """The counters and running sums, on the CPU."""
        pos = {key: getattr(self, key) for key in POSITION_KEYS}
        pos["acc"] = None if self.acc is None else {k: t.cpu() for k, t in self.acc.items()}
        pos["group_weights"] = None if self.group_weights is None else self.group_weights.cpu().clone()
        return pos

    def set_position(self, pos: dict[str, Any], device: torch.device) -> None:
        for key in POSITION_KEYS:
            setattr(self, key, pos[key] if key in pos or key not in LATER_KEYS else LATER_KEYS[key])
        self.acc = None if self.acc is None else {k: t.to(device) for k, t in self.acc.items()}
        if self.group_weights is not None:
            self.group_weights = self.group_weights.to(device)


def rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
             **{k: g.get_state() for k, g in generators.items()}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    for k, g in generators.items():
        g.set_state(state[k])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _state_dicts(objects: Sequence[Any]) -> list[Any]:
    return [obj.state_dict() if hasattr(obj, "state_dict") else None for obj in objects]


def _load_state_dicts(objects: Sequence[Any], states: Sequence[Any]) -> None:
    for obj, saved in zip(objects, states):
        if saved is not None and hasattr(obj, "load_state_dict"):
            obj.load_state_dict(saved)


def save_checkpoint(path: Path, state: TrainState, *, callbacks: Sequence[Any] = (),
                    extra: Sequence[Any] = (), config: dict[str, Any] | None = None) -> None:
    """Write `state` to `path` atomically; `callbacks` / `extra` objects with a state_dict too."""
    save_torch({
        "format": FORMAT, "model": state.model.state_dict(), "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(), "position": state.position(),
        "rng": rng_state(state.generators), "callbacks": _state_dicts(callbacks),
        "extra": _state_dicts(extra), "config": config,
    }, path)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """torch.load of a checkpoint, or a ValueError naming the file and the other saved models."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"no checkpoint {path}; {_alternatives(path)}") from None
    except Exception as err:  # a truncated or corrupt file: pickle, zip and torch errors alike
        raise ValueError(f"cannot read {path} (truncated or corrupt: {type(err).__name__}: {err}); "
                         f"{_alternatives(path)}") from None


def _alternatives(path: Path) -> str:
    others = sorted(p.name for p in path.parent.glob("*.pt") if p.name != path.name)
    if not others:
        return "no other saved model in the folder; train again with overwrite=True (--overwrite)"
    return (f"other saved models there: {', '.join(others)} (load one with "
            f"load_run(run_dir, checkpoint='best' or an epoch)); a run cannot resume without "
            f"checkpoint.pt: train again with overwrite=True (--overwrite)")


def load_checkpoint(path: Path, state: TrainState, *, callbacks: Sequence[Any] = (),
                    extra: Sequence[Any] = (), device: torch.device = torch.device("cpu")) -> None:
    """Fill `state` (and the callbacks' / extra objects' states) from the checkpoint at `path`."""
    ckpt = read_checkpoint(path)
    missing = [k for k in ("model", "optimizer", "scheduler", "position", "rng") if k not in ckpt]
    if missing or ckpt.get("format", 1) > FORMAT:
        raise ValueError(f"{path} is not a training checkpoint this spreadcon can resume "
                         f"(format {ckpt.get('format', 1)}, missing {missing}); "
                         f"train again with overwrite=True (--overwrite)")
    state.model.load_state_dict(ckpt["model"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.scheduler.load_state_dict(ckpt["scheduler"])
    state.set_position(ckpt["position"], device)
    set_rng_state(ckpt["rng"], state.generators)
    _load_state_dicts(callbacks, ckpt.get("callbacks", []))
    _load_state_dicts(extra, ckpt.get("extra", []))


# --- a run folder's models, and the stamps of outputs derived from them ----------------------
def checkpoint_path(run_dir: str | Path, checkpoint: str | int = "best") -> Path:
    """The file of `checkpoint`: "best" -> best.pt, "last" -> checkpoint.pt, k -> ckpt_epoch{k}.pt."""
    run_dir = Path(run_dir)
    names = {"best": "best.pt", "last": "checkpoint.pt"}
    path = run_dir / names.get(str(checkpoint), f"ckpt_epoch{checkpoint}.pt")
    if not path.exists():
        kept = sorted(p.name for p in run_dir.glob("*.pt"))
        raise ValueError(f"no checkpoint {path.name} in {run_dir}; available: {kept} "
                         f"(pass checkpoint='best', 'last' or a kept epoch)")
    return path


def checkpoint_epoch(state: dict[str, Any]) -> int | None:
    """The epoch a saved model comes from (a training checkpoint's position, or its "epoch")."""
    epoch = state["position"]["epoch"] if "position" in state else state.get("epoch")
    return None if epoch is None else int(epoch)


def checkpoint_stamp(run_dir: str | Path, checkpoint: str | int = "best") -> dict[str, Any]:
    """{"checkpoint", "epoch", "sha256", "file"} of a run's checkpoint; ValueError if absent."""
    path = checkpoint_path(run_dir, checkpoint)
    return {"checkpoint": str(checkpoint), "epoch": checkpoint_epoch(read_checkpoint(path)),
            "sha256": file_sha256(path), "file": path.name}


def stale_reason(output: str | Path, run_dir: str | Path) -> str | None:
    """Why the stamped JSON `output` no longer matches the run's checkpoint; None when it does
    (or when there is no output yet)."""
    output = Path(output)
    if not output.exists():
        return None
    try:
        stamp = read_json(output).get("stamp")
    except (ValueError, AttributeError):
        return f"{output} is not a JSON object"
    if not isinstance(stamp, dict) or "sha256" not in stamp:
        return f"{output} has no checkpoint stamp (written by an older spreadcon)"
    try:
        path = checkpoint_path(run_dir, stamp.get("checkpoint", "best"))
    except ValueError:
        return f"{output} came from {stamp.get('file')}, which is no longer in the run"
    if file_sha256(path) != stamp["sha256"]:
        return (f"{output} came from {stamp.get('file')} at epoch {stamp.get('epoch')}, "
                f"and that checkpoint has changed since (resumed or retrained)")
    return None
