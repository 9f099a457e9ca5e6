"""Which checkpoint a derived output (eval/, apply outputs) came from, and whether it still matches.

    stamp = checkpoint_stamp("runs/spread", "best")  # {"checkpoint", "file", "epoch", "sha256"}
    stale_reason("runs/spread/eval/metrics.json", "runs/spread")   # None, or why it no longer matches

A stamp is the checkpoint's name, file, epoch and the sha256 of the file's bytes: a resumed or
retrained run writes a new file with another hash, so an output made before is detected as stale.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

CHECKPOINT_FILES = {"best": "best.pt", "last": "checkpoint.pt"}


def checkpoint_file(run_dir: str | Path, checkpoint: str | int = "best") -> Path:
    """The file of a checkpoint: best.pt, checkpoint.pt ("last") or ckpt_epoch<N>.pt."""
    name = CHECKPOINT_FILES.get(str(checkpoint), f"ckpt_epoch{checkpoint}.pt")
    return Path(run_dir) / name


def sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_epoch(path: str | Path) -> int | None:
    """The epoch a checkpoint file was saved at (None when the file does not say)."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a truncated or foreign file: say which, not a pickle traceback
        raise ValueError(f"cannot read the checkpoint {path} ({type(err).__name__}: {err}); "
                         f"it may be truncated; use another --checkpoint or resume the run") from None
    if isinstance(state, dict):
        if isinstance(state.get("epoch"), int):
            return state["epoch"]
        position = state.get("position")
        if isinstance(position, dict) and isinstance(position.get("epoch"), int):
            return position["epoch"]
    return None


def checkpoint_stamp(run_dir: str | Path, checkpoint: str | int = "best") -> dict[str, Any]:
    """{"checkpoint", "file", "epoch", "sha256"} of a run's checkpoint; FileNotFoundError if absent."""
    path = checkpoint_file(run_dir, checkpoint)
    if not path.exists():
        kept = sorted(p.name for p in Path(run_dir).glob("*.pt"))
        raise FileNotFoundError(2, f"no checkpoint {path.name} in the run (kept: {kept})", str(path))
    try:  # the trainer's own id of a checkpoint, where this tree has it (one definition of a stamp)
        from spreadcon.runs import checkpoint_id
    except ImportError:
        return {"checkpoint": str(checkpoint), "file": path.name, "epoch": checkpoint_epoch(path),
                "sha256": sha256(path)}
    return {**checkpoint_id(run_dir, checkpoint), "file": path.name}


def stale_reason(output: str | Path, run_dir: str | Path) -> str | None:
    """Why the stamped JSON `output` no longer matches the run's checkpoint; None when it does
    (or when there is no output yet)."""
    output = Path(output)
    if not output.exists():
        return None
    try:
        stamp = json.loads(output.read_text()).get("stamp")
    except (json.JSONDecodeError, AttributeError):
        return f"{output} is not a JSON object"
    if not isinstance(stamp, dict) or "sha256" not in stamp:
        return f"{output} has no checkpoint stamp (written by an older spreadcon)"
    path = checkpoint_file(run_dir, stamp.get("checkpoint", "best"))
    if not path.exists():
        return f"{output} came from {stamp.get('file')}, which is no longer in the run"
    if sha256(path) != stamp["sha256"]:
        return (f"{output} came from {stamp.get('file')} at epoch {stamp.get('epoch')}, "
                f"and that checkpoint has changed since (resumed or retrained)")
    return None
