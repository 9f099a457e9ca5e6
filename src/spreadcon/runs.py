"""A run folder: its files, the data fingerprint, the writer's lock, one status, reading it back.

    RUN_DIR/
      .lock              held while a process writes the folder (spreadcon.run_lock)
      config.json        the resolved TrainConfig
      run.json           seed, git revision, versions, device, dataset summary, data fingerprint,
                         absolute data root, epochs_trained / epochs / finished
      metrics.jsonl      one JSON object per epoch
      checkpoint.pt      the latest state (spreadcon.checkpoint: model, optimiser, RNG, position)
      best.pt            the model with the best validation accuracy (training labels, val split)
      ckpt_epoch{k}.pt   models at the epochs in config.keep_checkpoints
      example_correct.npy  [epochs, N_train] bool, when config.track_examples
      embeddings/{split}.npz  cached embeddings of the best model (see `Run.embeddings`)

Every file is written atomically (spreadcon.io), so a crash mid-write leaves the previous version
intact. One status rule, `run_status` (run.json's epochs_trained and finished), for train, eval,
reuse and the experiments. `load_run(run_dir)` gives the trained model in eval mode with the
dataset exactly as it was trained (noise, subsample, labelled fraction and train subset
re-applied from the config, all seeded), refusing a dataset that changed since.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

import spreadcon
from spreadcon import distributed
from spreadcon.build import build_dataset, build_model, resolve_device
from spreadcon.checkpoint import checkpoint_path, read_checkpoint
from spreadcon.config import RUNTIME_KEYS, TrainConfig, config_diff, read_config
from spreadcon.data import SPLITS, StrataDataset
from spreadcon.evaluate.embed import split_arrays
from spreadcon.io import (git_revision, read_json, read_jsonl, save_json, save_jsonl, save_npz,
                          tensor_sha256)
from spreadcon.models import Classifier
from spreadcon.run_lock import RunLock

# Files a training run writes (besides .lock); any of them makes a folder "an existing run".
RUN_FILES = ("config.json", "run.json", "metrics.jsonl", "checkpoint.pt", "best.pt", "example_correct.npy")
RUN_GLOBS = ("ckpt_epoch*.pt",)
# Outputs derived from a run's model: removed when the run is resumed or overwritten.
DERIVED_DIRS = ("embeddings", "eval", "tensorboard")


# --- the data fingerprint -------------------------------------------------------------------
FINGERPRINT_ARRAYS = ("x", "label", "stratum", "split", "group", "clean_label", "labelled", "origin")


def data_fingerprint(ds: StrataDataset) -> dict[str, Any]:
    """{"sha256": one hash of everything, "arrays": {name: sha256}, "transforms": records} of the
    dataset as built for training (its arrays after the config's transforms)."""
    arrays = {k: tensor_sha256(getattr(ds, k)) for k in FINGERPRINT_ARRAYS if getattr(ds, k, None) is not None}
    transforms = json.loads(json.dumps(ds.transforms, default=str))
    whole = hashlib.sha256(json.dumps([arrays, transforms], sort_keys=True).encode()).hexdigest()
    return {"sha256": whole, "arrays": arrays, "transforms": transforms}


def fingerprint_changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between two data fingerprints, in words ([] if nothing)."""
    if saved.get("sha256") == now.get("sha256"):
        return []
    a, b = saved.get("arrays", {}), now.get("arrays", {})
    changes = [f"{k} changed" for k in sorted(set(a) & set(b)) if a[k] != b[k]]
    changes += [f"{k} is new" for k in sorted(set(b) - set(a))] + [f"{k} is gone" for k in sorted(set(a) - set(b))]
    if saved.get("transforms") != now.get("transforms"):
        changes.append(f"transforms {saved.get('transforms')} -> {now.get('transforms')}")
    return changes or ["the fingerprint differs"]


def check_same_data(run_dir: Path, info: dict[str, Any], fingerprint: dict[str, Any], doing: str) -> None:
    saved = info.get("data_fingerprint")
    if saved is None:
        raise ValueError(f"{run_dir} was written by an older spreadcon (run.json has no data fingerprint), "
                         f"so it cannot be checked against the data; {doing} refused: train again with "
                         f"overwrite=True (--overwrite) or into another out_dir")
    changes = fingerprint_changes(saved, fingerprint)
    if changes:
        raise ValueError(f"the dataset of {run_dir} changed since it was trained ({'; '.join(changes)}; "
                         f"data root then: {info.get('data_root')}); {doing} refused: restore the data, "
                         f"or train again with overwrite=True (--overwrite) or into another out_dir")


# --- run.json and metrics.jsonl -------------------------------------------------------------
def run_info(config: TrainConfig, device: torch.device, ds: StrataDataset, fingerprint: dict[str, Any],
             **extra: Any) -> dict[str, Any]:
    """run.json at the start of a run (epochs_trained 0, not finished); `extra` keys (e.g. the
    groups' summary, the init_from record) are added where not None."""
    root = config.data_root if config.data_root is not None else ds.meta.get("root")
    return {
        "seed": config.seed, "git_revision": git_revision(), "spreadcon": spreadcon.__version__,
        "torch": torch.__version__, "python": platform.python_version(), "device": str(device),
        "dataset": ds.summary(), "data_root": None if root is None else str(Path(root).expanduser().resolve()),
        "data_fingerprint": fingerprint, "epochs": config.epochs, "epochs_trained": 0, "finished": False,
        **{k: v for k, v in extra.items() if v is not None},
    }


def record_progress(run_dir: Path, epochs_trained: int, *, finished: bool = False) -> None:
    """Update run.json's epochs_trained / finished (after each epoch's checkpoint, and at the end)."""
    info = read_json(run_dir / "run.json")
    info.update(epochs_trained=int(epochs_trained), finished=bool(finished))
    save_json(info, run_dir / "run.json")


def append_metrics(run_dir: Path, row: dict[str, Any]) -> None:
    """metrics.jsonl with `row` added, rewritten atomically (a crash never leaves a torn line)."""
    save_jsonl([*read_metrics(run_dir), row], Path(run_dir) / "metrics.jsonl")


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    return read_jsonl(Path(run_dir) / "metrics.jsonl")


def truncate_metrics(run_dir: Path, last_epoch: int) -> None:
    """Keep the rows of epochs <= last_epoch (a resumed run rewrites the rest)."""
    save_jsonl([r for r in read_metrics(run_dir) if r.get("epoch", 0) <= last_epoch], run_dir / "metrics.jsonl")


# --- the one status rule ---------------------------------------------------------------------
@dataclass(frozen=True)
class RunStatus:
    """How far a run folder got: run.json's epochs_trained and finished (set after the last
    epoch's checkpoint, best model and embeddings are written), config.json's epochs."""

    epochs_trained: int
    epochs: int
    finished: bool

    def __str__(self) -> str:
        """E.g. "3 of 3 epochs" or "1 of 3 epochs: unfinished"."""
        return f"{self.epochs_trained} of {self.epochs} epochs" + ("" if self.finished else ": unfinished")


def run_status(run_dir: str | Path) -> RunStatus:
    """The status of `run_dir`: finished when run.json says so and its epochs_trained reach
    config.json's epochs (a folder without run files is 0 of 0 epochs, unfinished); errors name a
    damaged config.json or run.json."""
    run_dir = Path(run_dir)
    epochs = read_config(run_dir / "config.json").epochs if (run_dir / "config.json").exists() else 0
    info = read_json(run_dir / "run.json") if (run_dir / "run.json").exists() else {}
    if not isinstance(info, dict):
        raise ValueError(f"{run_dir / 'run.json'} must hold a JSON object; the run folder is damaged")
    return status_of(info, epochs)


def status_of(info: dict[str, Any], epochs: int) -> RunStatus:
    """The one rule, from run.json's contents and config.json's epochs."""
    trained = int(info.get("epochs_trained", 0))
    return RunStatus(trained, int(epochs), info.get("finished") is True and trained >= epochs)


# --- the run folder's lifecycle --------------------------------------------------------------
def run_files(run_dir: Path) -> list[str]:
    """The run files present in `run_dir` (any of them: the folder holds a run, finished or not)."""
    run_dir = Path(run_dir)
    found = [name for name in RUN_FILES if (run_dir / name).exists()]
    for pattern in RUN_GLOBS:
        found += sorted(p.name for p in run_dir.glob(pattern))
    return found


def check_out_dir(run_dir: Path) -> None:
    """Create `run_dir` and check it is writable, before any training starts."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write_test.{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"cannot write to the run folder {str(run_dir)!r} ({err.strerror}); "
                         f"choose another --out") from err


def remove_run(run_dir: Path) -> None:
    """Delete the run files and derived outputs of `run_dir` (other files stay)."""
    for name in run_files(run_dir):
        (run_dir / name).unlink()
    remove_derived(run_dir)


def remove_derived(run_dir: Path) -> None:
    """Delete outputs computed from the run's model (embeddings/, eval/, tensorboard/)."""
    for name in DERIVED_DIRS:
        shutil.rmtree(run_dir / name, ignore_errors=True)


def check_existing(config: TrainConfig, run_dir: Path, fingerprint: dict[str, Any], *,
                   resume: bool, overwrite: bool) -> None:
    """Refuse to reuse an existing run folder unless `resume` (same config, same data, a
    checkpoint to resume) or `overwrite` (then its run files are deleted)."""
    found = run_files(run_dir)
    if resume and overwrite:
        raise ValueError("pass either resume=True (--resume) or overwrite=True (--overwrite), not both")
    if overwrite:
        remove_run(run_dir)
        return
    if not resume:
        if found:
            raise ValueError(f"{run_dir} already holds a run ({', '.join(found)}); resume it with "
                             f"--resume, replace it with --overwrite, or choose another --out")
        return
    if not (run_dir / "config.json").exists() or not (run_dir / "checkpoint.pt").exists():
        raise ValueError(f"nothing to resume in {run_dir}: it needs config.json and checkpoint.pt "
                         f"(found: {found or 'no run files'}); train without --resume "
                         f"(with --overwrite if run files are there)")
    check_checkpoint_config(run_dir)
    check_same_config(config, run_dir, "resume")
    check_same_data(run_dir, read_json(run_dir / "run.json") if (run_dir / "run.json").exists() else {},
                    fingerprint, "resume")
    remove_derived(run_dir)  # computed from a model that is about to change


def check_owned(out: str | Path, run_dir: str | Path, what: str) -> None:
    """Outputs are owned by their run: refuse `out` when it lies in (or is) another run's folder."""
    out, own = Path(out).expanduser().resolve(), Path(run_dir).expanduser().resolve()
    for folder in (out, *out.parents):
        if folder == own:
            return
        if folder.is_dir() and run_files(folder):
            raise ValueError(f"{what} {out} lies in the run folder {folder}, which is not {own}; a command "
                             f"writes only inside its own run's folder (or a folder of no run): choose another --out")


def check_checkpoint_config(run_dir: Path) -> None:
    """Refuse to resume when config.json no longer says what the checkpoint was trained with (a
    hand edit): the run would train with a mix of both while config.json claims one."""
    saved = read_checkpoint(run_dir / "checkpoint.pt").get("config")
    if saved is None:
        return
    diff = config_diff(TrainConfig.from_dict(saved), read_config(run_dir / "config.json"), ignore=RUNTIME_KEYS)
    if diff:
        lines = ", ".join(f"{k}: {a!r} (checkpoint) != {b!r} (config.json)" for k, (a, b) in diff.items())
        raise ValueError(f"{run_dir / 'config.json'} was changed after the checkpoint was written ({lines}); "
                         f"restore it to resume, or train a new run with the new config (--overwrite or another --out)")


def check_same_config(config: TrainConfig, run_dir: Path, doing: str) -> None:
    saved = read_config(run_dir / "config.json")
    diff = config_diff(saved, config, ignore=RUNTIME_KEYS)
    if diff:
        lines = ", ".join(f"{k}: {a!r} (saved) != {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"refusing to {doing} {run_dir} with a different config; differing keys: {lines}")


@contextmanager
def writing(config: TrainConfig, fingerprint: dict[str, Any], *, resume: bool, overwrite: bool,
            main: bool = True) -> Iterator[Path]:
    """Hold the run folder's lock while the body writes it, after checking it may be written.

    Non-main processes (under torchrun) take no lock and write nothing."""
    run_dir = Path(config.out_dir)
    lock = RunLock(run_dir)
    try:
        refusal = None
        if main:
            try:
                check_out_dir(run_dir)
                lock.acquire()
                check_existing(config, run_dir, fingerprint, resume=resume, overwrite=overwrite)
            except ValueError as err:
                refusal = err
        # every process learns rank 0's verdict (so none waits at a barrier for a refused run)
        message = distributed.broadcast_object(None if refusal is None else str(refusal))
        if refusal is not None:
            raise refusal
        if message is not None:
            raise ValueError(message)
        yield run_dir
    finally:
        lock.release()


# --- reading a run back ---------------------------------------------------------------------
@dataclass
class Run:
    """A trained run: its config, the model (eval mode), the dataset as trained, the metrics."""

    run_dir: Path
    config: TrainConfig
    model: Classifier
    dataset: StrataDataset
    metrics: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    checkpoint: str = "best"

    @property
    def status(self) -> RunStatus:
        """As run.json said when the run was loaded."""
        return status_of(self.info, self.config.epochs)

    def embeddings(self, split: str) -> dict[str, np.ndarray]:
        """One split's `split_arrays`: embedding [N, D], logits [N, K], label, stratum, index [N]
        (rows of the dataset). The best checkpoint's are cached in embeddings/ (computed when
        missing); any other checkpoint's are computed afresh, not cached."""
        device = next(self.model.parameters()).device
        if str(self.checkpoint) != "best":
            return split_arrays(self.model, self.dataset, split, self.config.eval_batch_size, device)
        path = self.run_dir / "embeddings" / f"{split}.npz"
        if not path.exists():
            write_embeddings(self.model, self.dataset, self.run_dir, self.config.eval_batch_size, device)
        with np.load(path) as data:
            return dict(data)


def write_embeddings(model: Classifier, ds: StrataDataset, run_dir: Path, batch_size: int,
                     device: torch.device) -> None:
    """embeddings/{train,val,test}.npz: `split_arrays` of every split (the best model's cache)."""
    out = Path(run_dir) / "embeddings"
    out.mkdir(exist_ok=True)
    for split in SPLITS:
        save_npz(out / f"{split}.npz", **split_arrays(model, ds, split, batch_size, device))


def load_run(run_dir: str | Path, checkpoint: str | int = "best", device: str | torch.device = "cpu") -> Run:
    """Rebuild a run: config, dataset as trained, model from `checkpoint` ("best", "last",
    or an epoch kept with keep_checkpoints) in eval mode on `device`. Refuses a dataset whose
    fingerprint differs from the one recorded at training time."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no such folder); train one with `spreadcon train`")
    if not (run_dir / "config.json").exists():
        raise ValueError(f"{run_dir} is not a run folder (no config.json); train one with `spreadcon train`")
    config = read_config(run_dir / "config.json")
    path = checkpoint_path(run_dir, checkpoint)
    info = read_json(run_dir / "run.json") if (run_dir / "run.json").exists() else {}
    ds = build_dataset(config)
    if "data_fingerprint" in info:  # runs from before fingerprints load unchecked
        check_same_data(run_dir, info, data_fingerprint(ds), "loading the run")
    model = build_model(config, ds.input_shape, ds.num_classes, restore=True)
    model.load_state_dict(read_checkpoint(path)["model"])
    model.to(resolve_device(str(device))).eval()
    return Run(run_dir, config, model, ds, read_metrics(run_dir), info, str(checkpoint))
