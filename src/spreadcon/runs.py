"""A run folder, and how to rebuild a run's data and model from its config.

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

Every file is written atomically (temp file + os.replace), so a crash mid-write leaves the
previous version intact. `load_run(run_dir)` gives the trained model in eval mode with the
dataset exactly as it was trained (noise, subsample, labelled fraction and train subset
re-applied from the config, all seeded), refusing a dataset that changed since.

One reuse rule for every experiment: `train_or_reuse(config)`; one "done" rule: `is_finished`.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from spreadcon.config import RUNTIME_KEYS, TrainConfig, config_diff
from spreadcon.models.classifier import Classifier

# Files a training run writes (besides .lock); any of them makes a folder "an existing run".
RUN_FILES = ("config.json", "run.json", "metrics.jsonl", "checkpoint.pt", "best.pt", "example_correct.npy")
RUN_GLOBS = ("ckpt_epoch*.pt",)
# Outputs derived from a run's model: removed when the run is resumed or overwritten.
DERIVED_DIRS = ("embeddings", "eval", "tensorboard")


# --- building a run's pieces from its config ----------------------------------------------
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


def build_dataset(config: TrainConfig):
    """spreadcon.data.load + the config's seeded transforms (subsample, noise, labelled fraction),
    then config.train_subset (positions in the train split of the dataset as transformed so far)."""
    from spreadcon import data

    if config.dataset not in data.DATASETS:
        raise ValueError(f"unknown dataset {config.dataset!r}; known datasets: {sorted(data.DATASETS)}")
    ds = data.load(config.dataset, root=config.data_root, seed=config.data_seed, **config.dataset_options)
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
    return ds


def record_group_file(ds, path: str | Path):
    """`ds` with a transform record of the pseudo-group file (absolute path, sha256), so that the
    data fingerprint of a run trained on those groups changes when the file does."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"groups={str(path)!r}: no such file; pass groups=group, groups=stratum or a "
                                f"pseudo-group .npz (spreadcon.groups.write_group_file)")
    record = {"transform": "groups", "path": str(path.resolve()), "sha256": file_sha256(path)}
    return ds.with_transform(record) if hasattr(ds, "with_transform") else ds


def apply_train_subset(ds, path: str | Path):
    """Keep the train rows at the positions stored in the .npy at `path` (val/test untouched);
    the transform record holds the file's absolute path and sha256."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"train_subset={str(path)!r}: no such file; pass an .npy of positions "
                                f"in the train split (e.g. from spreadcon.apps.coreset)")
    try:
        pos = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise ValueError(f"train_subset={str(path)!r} is not a readable .npy file ({err})") from None
    rows = torch.nonzero(ds.split == 0).squeeze(1)
    if pos.ndim != 1 or pos.size == 0 or not np.issubdtype(pos.dtype, np.integer):
        raise ValueError(f"train_subset {path}: expected a non-empty 1-d integer array of positions, "
                         f"got dtype {pos.dtype} shape {pos.shape}")
    if pos.min() < 0 or pos.max() >= len(rows) or len(np.unique(pos)) != len(pos):
        raise ValueError(f"train_subset {path}: positions must be distinct and in [0, {len(rows)}) "
                         f"(the train split's size); got range [{pos.min()}, {pos.max()}], {len(pos)} values")
    keep = torch.ones(len(ds), dtype=torch.bool)
    keep[rows] = False
    keep[rows[torch.as_tensor(pos, dtype=torch.int64)]] = True
    record = {"transform": "train_subset", "path": str(path.resolve()), "sha256": file_sha256(path),
              "kept": int(len(pos)), "of": int(len(rows))}
    out = ds.subset(keep)
    return out.with_transform(record) if hasattr(out, "with_transform") else out


def build_model(config: TrainConfig, input_shape: tuple[int, ...], num_classes: int) -> Classifier:
    """The encoder named in the config (its init seeded by config.seed) with a CE head."""
    from spreadcon.models import ENCODERS, build_encoder

    if config.encoder not in ENCODERS:
        raise ValueError(f"unknown encoder {config.encoder!r}; known encoders: {sorted(ENCODERS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        encoder = build_encoder(config.encoder, tuple(input_shape), **config.encoder_options)
        return Classifier(encoder, num_classes, head_input=config.head_input)


def init_encoder(model: Classifier, config: TrainConfig) -> dict[str, Any] | None:
    """Copy the encoder weights of config.init_from (a run folder: its best.pt; or a .pt file) into
    `model` (its CE head keeps its fresh init). Returns {"path", "sha256", "epoch"} for run.json, or
    None without init_from. A different encoder architecture is refused, naming both."""
    from spreadcon.checkpoint import read_checkpoint

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
    arch = (config.encoder, config.encoder_options)
    if saved is not None and (saved.get("encoder"), saved.get("encoder_options", {})) != arch:
        raise ValueError(f"init_from={config.init_from!r} holds encoder {saved.get('encoder')!r} with encoder_options "
                         f"{saved.get('encoder_options', {})}, this run builds encoder {config.encoder!r} with "
                         f"encoder_options {config.encoder_options}; pass the same encoder and options")
    weights = {k[len("encoder."):]: v for k, v in ckpt.get("model", {}).items() if k.startswith("encoder.")}
    own = model.encoder.state_dict()
    wrong = sorted(k for k in set(own) | set(weights)
                   if k not in own or k not in weights or own[k].shape != weights[k].shape)
    if wrong:
        raise ValueError(f"init_from={config.init_from!r}: its encoder weights do not fit encoder {config.encoder!r} "
                         f"on this dataset (keys or shapes differ: {wrong[:5]}); the source run must use the same "
                         f"encoder, encoder_options and input shape")
    model.encoder.load_state_dict(weights)
    epoch = ckpt.get("epoch", ckpt.get("position", {}).get("epoch"))
    return {"path": str(path.resolve()), "sha256": file_sha256(path), "epoch": epoch}


# --- the data fingerprint -------------------------------------------------------------------
FINGERPRINT_ARRAYS = ("x", "label", "stratum", "split", "group", "clean_label", "labelled", "origin")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _tensor_sha256(t: Tensor) -> str:
    digest = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    digest.update(memoryview(np.ascontiguousarray(t.detach().cpu().numpy())).cast("B"))
    return digest.hexdigest()


def data_fingerprint(ds) -> dict[str, Any]:
    """{"sha256": one hash of everything, "arrays": {name: sha256}, "transforms": records} of the
    dataset as built for training (its arrays after the config's transforms)."""
    arrays = {k: _tensor_sha256(getattr(ds, k)) for k in FINGERPRINT_ARRAYS if getattr(ds, k, None) is not None}
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


# --- files --------------------------------------------------------------------------------
def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(tmp) on a temp file beside `path`, then rename it over `path` (atomic on POSIX)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, (OSError, RuntimeError)):  # torch.save reports a full disk as a RuntimeError
            free = shutil.disk_usage(path.parent).free
            raise OSError(f"could not write {path} ({type(err).__name__}: {err}); {free:,} bytes free on its "
                          f"disk (no space left?): the previous file is intact; free space, then --resume") from err
        raise


def save_torch(obj: Any, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_text(text: str, path: Path) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def save_json(obj: Any, path: Path) -> None:
    save_text(json.dumps(obj, indent=2) + "\n", path)


def save_npy(array: np.ndarray, path: Path) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)
    atomic_write(path, write)


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    atomic_write(path, write)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file's object, or a ValueError naming the file."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); the run folder is damaged") from None


def git_revision(source: str | Path | None = None) -> str | None:
    """The git commit of the spreadcon source tree (with '-dirty' for local changes to the files
    under `source`, default this package: edits to results/ or docs do not change what runs), if any."""
    here = Path(source).resolve() if source is not None else Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."], cwd=here,
                               capture_output=True, text=True, timeout=5)
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def run_info(config: TrainConfig, device: torch.device, ds, fingerprint: dict[str, Any],
             **extra: Any) -> dict[str, Any]:
    """run.json at the start of a run (epochs_trained 0, not finished); `extra` keys (e.g. the
    groups' summary, the init_from record) are added where not None."""
    import spreadcon

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
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} line {number} is not valid JSON ({err})") from None
    return rows


def truncate_metrics(run_dir: Path, last_epoch: int) -> None:
    """Keep the rows of epochs <= last_epoch (a resumed run rewrites the rest)."""
    rows = [r for r in read_metrics(run_dir) if r.get("epoch", 0) <= last_epoch]
    save_text("".join(json.dumps(r) + "\n" for r in rows), run_dir / "metrics.jsonl")


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
    check_same_config(config, run_dir, "resume")
    check_same_data(run_dir, read_json(run_dir / "run.json") if (run_dir / "run.json").exists() else {},
                    fingerprint, "resume")
    remove_derived(run_dir)  # computed from a model that is about to change


def check_same_config(config: TrainConfig, run_dir: Path, doing: str) -> None:
    saved = TrainConfig.from_dict(read_json(run_dir / "config.json"))
    diff = config_diff(saved, config, ignore=RUNTIME_KEYS)
    if diff:
        lines = ", ".join(f"{k}: {a!r} (saved) != {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"refusing to {doing} {run_dir} with a different config; differing keys: {lines}")


@contextmanager
def writing(config: TrainConfig, fingerprint: dict[str, Any], *, resume: bool, overwrite: bool,
            main: bool = True) -> Iterator[Path]:
    """Hold the run folder's lock while the body writes it, after checking it may be written.

    Non-main processes (under torchrun) take no lock and write nothing."""
    from spreadcon import distributed
    from spreadcon.run_lock import RunLock

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


def is_finished(run_dir: str | Path) -> bool:
    """The one "is this run done?" rule: run.json says finished (set after the last epoch's
    checkpoint, best model and embeddings are written)."""
    path = Path(run_dir) / "run.json"
    if not path.exists():
        return False
    try:
        return json.loads(path.read_text()).get("finished") is True
    except json.JSONDecodeError:
        return False


def train_or_reuse(config: TrainConfig, callbacks: Sequence[Any] = ()) -> Path:
    """The one run-reuse rule: config.out_dir holding a finished run with the same config
    (RUNTIME_KEYS aside) and the same data -> reuse it; an unfinished run with the same config ->
    resume it; an empty folder -> train; anything else -> ValueError saying what differs."""
    from spreadcon.train import train

    run_dir = Path(config.out_dir)
    found = run_files(run_dir) if run_dir.is_dir() else []
    if not found:
        return train(config, callbacks)
    if not (run_dir / "config.json").exists():
        raise ValueError(f"{run_dir} holds run files ({', '.join(found)}) but no config.json; "
                         f"remove the folder or choose another out_dir")
    check_same_config(config, run_dir, "reuse")
    if is_finished(run_dir):
        check_same_data(run_dir, read_json(run_dir / "run.json"), data_fingerprint(build_dataset(config)), "reuse")
        return run_dir
    if not (run_dir / "checkpoint.pt").exists():  # stopped before its first epoch ended: restart
        return train(config, callbacks, overwrite=True)
    return train(config, callbacks, resume=True)


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


def _checkpoint_epoch(state: dict[str, Any]) -> int:
    return int(state["position"]["epoch"] if "position" in state else state["epoch"])


def checkpoint_id(run_dir: str | Path, checkpoint: str | int = "best") -> dict[str, Any]:
    """{"checkpoint", "epoch", "sha256"} of a run's checkpoint: stamp derived outputs with it, so
    a later reader can tell whether they came from the model now in the folder."""
    from spreadcon.checkpoint import read_checkpoint

    path = checkpoint_path(run_dir, checkpoint)
    return {"checkpoint": str(checkpoint), "epoch": _checkpoint_epoch(read_checkpoint(path)),
            "sha256": file_sha256(path)}


# --- reading a run back ---------------------------------------------------------------------
@dataclass
class Run:
    """A trained run: its config, the model (eval mode), the dataset as trained, the metrics."""

    run_dir: Path
    config: TrainConfig
    model: Classifier
    dataset: Any
    metrics: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    checkpoint: str = "best"

    @property
    def encoder(self) -> nn.Module:
        """The model's encoder (kept for callers of the old Run.encoder)."""
        return self.model.encoder

    @property
    def epochs(self) -> int:
        return int(self.config.epochs)

    @property
    def epochs_trained(self) -> int:
        """Epochs completed (run.json; the metrics rows for runs from before it recorded them)."""
        return int(self.info.get("epochs_trained", len(self.metrics)))

    @property
    def finished(self) -> bool:
        return self.info.get("finished") is True

    def status(self) -> str:
        """E.g. "3 of 3 epochs: finished" or "1 of 3 epochs: unfinished"."""
        word = "finished" if self.finished else "unfinished"
        return f"{self.epochs_trained} of {self.epochs} epochs: {word}"

    def views(self):
        from spreadcon.data.views import default_views

        return default_views(self.dataset)

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


def split_arrays(model: Classifier, ds: Any, split: str, batch_size: int, device: torch.device) -> dict[str, np.ndarray]:
    """One split through the model (eval mode): embedding [N, D] (what the loss reads), logits [N, K],
    features [N, F] (the backbone output h, only when the encoder has a projection head), index, label, stratum
    (rows of the dataset as trained), and clean_label, group, origin (rows of the dataset as loaded) when set."""
    from spreadcon.data import SPLITS
    from spreadcon.data.views import default_views
    from spreadcon.evaluate.embed import predict

    index = torch.nonzero(ds.split == SPLITS[split]).squeeze(1)
    has_proj = not isinstance(model.encoder.proj, nn.Identity)
    out = predict(model, ds.x[index], prepare=default_views(ds).prepare, batch_size=batch_size, device=device,
                  features=has_proj)
    arrays = {"embedding": out[0].numpy(), "logits": out[1].numpy(), "index": index.numpy(),
              "label": ds.label[index].numpy(), "stratum": ds.stratum[index].numpy()}
    if has_proj:  # the backbone output h, before the projection head (the standard protocol's probe layer)
        arrays["features"] = out[2].numpy()
    for key in ("clean_label", "group", "origin"):
        if getattr(ds, key) is not None:
            arrays[key] = getattr(ds, key)[index].numpy()
    return arrays


def write_embeddings(model: Classifier, ds: Any, run_dir: Path, batch_size: int, device: torch.device) -> None:
    """embeddings/{train,val,test}.npz: `split_arrays` of every split (the best model's cache)."""
    from spreadcon.data import SPLITS

    out = Path(run_dir) / "embeddings"
    out.mkdir(exist_ok=True)
    for split in SPLITS:
        save_npz(out / f"{split}.npz", **split_arrays(model, ds, split, batch_size, device))


def load_run(run_dir: str | Path, checkpoint: str | int = "best", device: str | torch.device = "cpu") -> Run:
    """Rebuild a run: config, dataset as trained, model from `checkpoint` ("best", "last",
    or an epoch kept with keep_checkpoints) in eval mode on `device`. Refuses a dataset whose
    fingerprint differs from the one recorded at training time."""
    from spreadcon.checkpoint import read_checkpoint

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise ValueError(f"{run_dir} is not a run folder (no config.json); train one with `spreadcon train`")
    config = TrainConfig.from_dict(read_json(run_dir / "config.json"))
    path = checkpoint_path(run_dir, checkpoint)
    info = read_json(run_dir / "run.json") if (run_dir / "run.json").exists() else {}
    ds = build_dataset(config)
    if "data_fingerprint" in info:  # runs from before fingerprints load unchecked
        check_same_data(run_dir, info, data_fingerprint(ds), "loading the run")
    model = build_model(config, ds.input_shape, ds.num_classes)
    model.load_state_dict(read_checkpoint(path)["model"])
    model.to(device).eval()
    return Run(run_dir, config, model, ds, read_metrics(run_dir), info, str(checkpoint))
