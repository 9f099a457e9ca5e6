"""A run folder, and how to rebuild a run's data and model from its config.

    RUN_DIR/
      config.json        the resolved TrainConfig
      run.json           seed, git revision, versions, device, dataset summary
      metrics.jsonl      one JSON object per epoch
      checkpoint.pt      the latest state (model, optimiser, scheduler, RNG states, position)
      best.pt            the model with the best validation accuracy (training labels, val split)
      ckpt_epoch{k}.pt   models at the epochs in config.keep_checkpoints
      example_correct.npy  [epochs, N_train] bool, when config.track_examples
      embeddings/{split}.npz  cached embeddings of the best model (see `Run.embeddings`)

Every file is written atomically (temp file + os.replace), so a crash mid-write leaves the
previous version intact. `load_run(run_dir)` gives the trained model in eval mode with the
dataset exactly as it was trained (noise, subsample and labelled fraction re-applied from the
config, all seeded).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from spreadcon.config import RUNTIME_KEYS, TrainConfig, config_diff


# --- building a run's pieces from its config ----------------------------------------------
class Classifier(nn.Module):
    """An encoder with a linear cross-entropy head reading the same embedding.

    forward(x [B, *input_shape]) -> (embedding [B, D] unnormalised, logits [B, K])
    """

    def __init__(self, encoder: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.embed_dim, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = self.encoder(x)
        return z, self.head(z)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but CUDA is not available here; use device=cpu or auto")
    return device


def build_dataset(config: TrainConfig):
    """spreadcon.data.load + the config's seeded transforms (subsample, noise, labelled fraction)."""
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
    return ds


def build_model(config: TrainConfig, input_shape: tuple[int, ...], num_classes: int) -> Classifier:
    """The encoder named in the config (its init seeded by config.seed) with a CE head."""
    from spreadcon.models import ENCODERS, build_encoder

    if config.encoder not in ENCODERS:
        raise ValueError(f"unknown encoder {config.encoder!r}; known encoders: {sorted(ENCODERS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        encoder = build_encoder(config.encoder, tuple(input_shape), **config.encoder_options)
        return Classifier(encoder, num_classes)


# --- files --------------------------------------------------------------------------------
def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(tmp) on a temp file beside `path`, then rename it over `path` (atomic on POSIX)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_torch(obj: Any, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_text(text: str, path: Path) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


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


def git_revision() -> str | None:
    """The git commit of the spreadcon source tree (with '-dirty' for local changes), if any."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def run_info(config: TrainConfig, device: torch.device, dataset_summary: dict[str, Any]) -> dict[str, Any]:
    import spreadcon

    return {
        "seed": config.seed, "git_revision": git_revision(), "spreadcon": spreadcon.__version__,
        "torch": torch.__version__, "python": platform.python_version(), "device": str(device),
        "dataset": dataset_summary,
    }


def check_out_dir(run_dir: Path) -> None:
    """Create `run_dir` and check it is writable, before any training starts."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"cannot write to the run folder {str(run_dir)!r} ({err.strerror}); "
                         f"choose another --out") from err


def check_resume(config: TrainConfig, run_dir: Path, resume: bool) -> None:
    """Refuse to overwrite a run, or to resume one trained with a different config."""
    saved_path = run_dir / "config.json"
    has_run = (run_dir / "checkpoint.pt").exists()
    if not resume:
        if has_run:
            raise ValueError(f"{run_dir} already holds a run; resume it with --resume, "
                             f"or choose another --out")
        return
    if not saved_path.exists() or not has_run:
        raise ValueError(f"nothing to resume in {run_dir}: no config.json and checkpoint.pt there")
    saved = TrainConfig.from_json(saved_path.read_text())
    diff = config_diff(saved, config, ignore=RUNTIME_KEYS)
    if diff:
        lines = ", ".join(f"{k}: {a!r} (saved) != {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"refusing to resume {run_dir} with a different config; differing keys: {lines}")


def append_metrics(run_dir: Path, row: dict[str, Any]) -> None:
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(run_dir: Path, last_epoch: int) -> None:
    """Keep the rows of epochs <= last_epoch (a resumed run rewrites the rest)."""
    rows = [r for r in read_metrics(run_dir) if r.get("epoch", 0) <= last_epoch]
    save_text("".join(json.dumps(r) + "\n" for r in rows), run_dir / "metrics.jsonl")


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

    @property
    def encoder(self) -> nn.Module:
        return self.model.encoder

    def views(self):
        from spreadcon.data.views import default_views

        return default_views(self.dataset)

    def embeddings(self, split: str) -> dict[str, np.ndarray]:
        """The cached embeddings of one split: embedding [N, D], logits [N, K], label, stratum,
        index [N] (rows of the dataset); computed and cached when missing."""
        path = self.run_dir / "embeddings" / f"{split}.npz"
        if not path.exists():
            write_embeddings(self.model, self.dataset, self.run_dir, self.config.eval_batch_size,
                             device=next(self.model.parameters()).device)
        with np.load(path) as data:
            return dict(data)


@torch.no_grad()
def predict(model: Classifier, x_prepared: Callable[[Tensor], Tensor], x: Tensor, batch_size: int,
            device: torch.device) -> tuple[Tensor, Tensor]:
    """(embedding [N, D], logits [N, K]) in eval mode; x [N, ...] raw, prepared per batch on `device`."""
    was_training = model.training
    model.eval()
    embs, logits = [], []
    for start in range(0, len(x), batch_size):
        xb = x_prepared(x[start:start + batch_size].to(device, non_blocking=True))
        e, lg = model(xb)
        embs.append(e.float().cpu())
        logits.append(lg.float().cpu())
    model.train(was_training)
    k = model.head.out_features
    d = model.encoder.embed_dim
    return (torch.cat(embs) if embs else torch.zeros(0, d)), (torch.cat(logits) if logits else torch.zeros(0, k))


def write_embeddings(model: Classifier, ds: Any, run_dir: Path, batch_size: int, device: torch.device) -> None:
    """embeddings/{train,val,test}.npz: embedding [N, D], logits [N, K], label, stratum, index (rows of
    the dataset as trained), and clean_label, group, origin (rows of the dataset as loaded) when set."""
    from spreadcon.data import SPLITS
    from spreadcon.data.views import default_views

    views = default_views(ds)
    out = Path(run_dir) / "embeddings"
    out.mkdir(exist_ok=True)
    for split, code in SPLITS.items():
        index = torch.nonzero(ds.split == code).squeeze(1)
        emb, logits = predict(model, views.prepare, ds.x[index], batch_size, device)
        arrays = {"embedding": emb.numpy(), "logits": logits.numpy(), "index": index.numpy(),
                  "label": ds.label[index].numpy(), "stratum": ds.stratum[index].numpy()}
        for key in ("clean_label", "group", "origin"):
            if getattr(ds, key) is not None:
                arrays[key] = getattr(ds, key)[index].numpy()
        save_npz(out / f"{split}.npz", **arrays)


def load_run(run_dir: str | Path, checkpoint: str = "best", device: str | torch.device = "cpu") -> Run:
    """Rebuild a run: config, dataset as trained, model from `checkpoint` ("best", "last",
    or an epoch kept with keep_checkpoints) in eval mode on `device`."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise ValueError(f"{run_dir} is not a run folder (no config.json); train one with `spreadcon train`")
    config = TrainConfig.from_json((run_dir / "config.json").read_text())
    names = {"best": "best.pt", "last": "checkpoint.pt"}
    path = run_dir / names.get(str(checkpoint), f"ckpt_epoch{checkpoint}.pt")
    if not path.exists():
        kept = sorted(p.name for p in run_dir.glob("*.pt"))
        raise ValueError(f"no checkpoint {path.name} in {run_dir}; available: {kept}")
    ds = build_dataset(config)
    model = build_model(config, ds.input_shape, ds.num_classes)
    state = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    model.to(device).eval()
    info_path = run_dir / "run.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    return Run(run_dir, config, model, ds, read_metrics(run_dir), info)
