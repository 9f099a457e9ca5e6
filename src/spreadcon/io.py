"""Files: the one atomic writer, JSON / JSON-lines / npz readers and writers, sha256, git revision.

    save_json({"a": 1}, path)                  # temp file beside `path`, then os.replace
    save_figure(fig, path)                     # a matplotlib figure, atomically
    read_json(path) / read_jsonl(path)         # errors name the file, line and column

Every file spreadcon writes goes through `atomic_write`, so a crash mid-write leaves the previous
version intact. This module imports nothing of spreadcon's: every other module may use it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor


# --- writing ---------------------------------------------------------------------------------
def _default_mode() -> int:
    """The mode a plain open() would give a new file (0o666 less the umask; mkstemp gives 0o600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_MODE = _default_mode()


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call write(tmp) on a temp file beside `path`, then rename it over `path` (atomic on POSIX)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, _MODE)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, (OSError, RuntimeError)):  # torch.save reports a full disk as a RuntimeError
            free = shutil.disk_usage(path.parent).free
            raise OSError(f"could not write {path} ({type(err).__name__}: {err}); {free:,} bytes free on its "
                          f"disk (no space left?): the previous file is intact; free space, then --resume") from err
        raise


def _binary(path: str | Path, write: Callable[[Any], None]) -> None:
    def to_tmp(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            write(f)
    atomic_write(path, to_tmp)


def save_torch(obj: Any, path: str | Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_text(text: str, path: str | Path) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def save_json(obj: Any, path: str | Path, *, sort_keys: bool = False) -> None:
    """Indented JSON; values JSON cannot hold (paths, numpy scalars) are written as strings."""
    save_text(json.dumps(obj, indent=2, sort_keys=sort_keys, default=_jsonable) + "\n", path)


def save_jsonl(rows: list[dict[str, Any]], path: str | Path) -> None:
    save_text("".join(json.dumps(r) + "\n" for r in rows), path)


def save_npy(array: np.ndarray, path: str | Path) -> None:
    _binary(path, lambda f: np.save(f, array))


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    _binary(path, lambda f: np.savez(f, **arrays))


def save_csv(table: np.ndarray, path: str | Path, **savetxt: Any) -> None:
    _binary(path, lambda f: np.savetxt(f, table, **savetxt))


def save_figure(fig: Any, path: str | Path, *, dpi: int = 120) -> None:
    """A matplotlib figure as PNG (the format follows the suffix)."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    _binary(path, lambda f: fig.savefig(f, dpi=dpi, format=fmt))


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return value.item()
    return str(value)


# --- reading ---------------------------------------------------------------------------------
def read_json(path: str | Path) -> Any:
    """The JSON in `path`; FileNotFoundError, or a ValueError naming the file, line and column."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(2, "No such file or directory", str(path))
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); "
                         f"restore it or re-create the run") from None


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file ([] when it does not exist); a ValueError naming the
    file and the line."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} line {number} is not valid JSON ({err.msg}); remove or repair that line") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path} line {number} must be a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


# --- hashes and revisions --------------------------------------------------------------------
def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tensor_sha256(t: Tensor) -> str:
    """sha256 of a tensor's dtype, shape and bytes."""
    digest = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    digest.update(memoryview(np.ascontiguousarray(t.detach().cpu().numpy())).cast("B"))
    return digest.hexdigest()


def git_revision(source: str | Path | None = None, *, short: bool = False) -> str | None:
    """The git commit of the spreadcon source tree (with '-dirty' for local changes to the files
    under `source`, default this package: edits to results/ or docs do not change what runs), if
    any; `short`: its first 10 hex digits."""
    here = Path(source).resolve() if source is not None else Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."], cwd=here,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = rev.stdout.strip()[:10] if short else rev.stdout.strip()
    return commit + ("-dirty" if dirty.stdout.strip() else "")
