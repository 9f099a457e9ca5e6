"""Finding a user's files, and errors that say what to put where."""

from __future__ import annotations

from pathlib import Path


def find_dir(root: Path, marker: str | tuple[str, ...], subdirs: tuple[str, ...], layout: str) -> Path:
    """The first of root/<subdir> (in order; "" = root itself) that contains `marker` (or one of them)."""
    markers = (marker,) if isinstance(marker, str) else marker
    if not root.exists():
        raise FileNotFoundError(f"data root {root} does not exist. Expected layout:\n{layout}")
    for sub in subdirs:
        candidate = root / sub if sub else root
        if any((candidate / m).exists() for m in markers):
            return candidate
    looked = ", ".join(str(root / s) if s else str(root) for s in subdirs)
    raise FileNotFoundError(f"could not find {markers[0]} under {root} (looked in {looked}). Expected layout:\n{layout}")


def require(path: Path, layout: str) -> Path:
    """`path` if it exists, else an error naming it and the expected layout."""
    if not path.exists():
        raise FileNotFoundError(f"missing file {path}. Expected layout:\n{layout}")
    return path


def corrupt(path: Path, why: str) -> ValueError:
    return ValueError(f"{path} is truncated or corrupt: {why}. Replace it with a fresh copy.")
