"""Which checkpoint a derived output (eval/, apply outputs) came from, and whether it still matches.

    stamp = checkpoint_stamp("runs/spread", "best")  # {"checkpoint", "file", "epoch", "sha256"}
    stale_reason("runs/spread/eval/metrics.json", "runs/spread")   # None, or why it no longer matches

A stamp is `spreadcon.runs.checkpoint_id` (name, epoch, sha256 of the file's bytes) plus the file
name: a resumed or retrained run writes a new file with another hash, so an output made before is
detected as stale.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def checkpoint_stamp(run_dir: str | Path, checkpoint: str | int = "best") -> dict[str, Any]:
    """{"checkpoint", "file", "epoch", "sha256"} of a run's checkpoint; ValueError if absent."""
    from spreadcon.runs import checkpoint_id, checkpoint_path

    return {**checkpoint_id(run_dir, checkpoint), "file": checkpoint_path(run_dir, checkpoint).name}


def stale_reason(output: str | Path, run_dir: str | Path) -> str | None:
    """Why the stamped JSON `output` no longer matches the run's checkpoint; None when it does
    (or when there is no output yet)."""
    from spreadcon.runs import checkpoint_path, file_sha256

    output = Path(output)
    if not output.exists():
        return None
    try:
        stamp = json.loads(output.read_text()).get("stamp")
    except (json.JSONDecodeError, AttributeError):
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
