"""Shared argument types and run-folder readers of the subcommands.

Comma-separated lists (`--seeds 0,1,2`), and readers of config.json / metrics.jsonl whose errors
name the file, the line and the key, for `spreadcon.cli.main`'s one-line error convention.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from spreadcon.errors import UserError


def _items(text: str, kind: type, what: str) -> tuple:
    try:
        return tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from None


def floats(text: str) -> tuple[float, ...]:
    return _items(text, float, "numbers (e.g. 0.1,0.2)")


def ints(text: str) -> tuple[int, ...]:
    return _items(text, int, "whole numbers (e.g. 0,1,2)")


def strs(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def read_json(path: str | Path) -> Any:
    """The JSON in `path`; a UserError naming the file, line and column when it does not parse."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(2, "No such file or directory", str(path))
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); "
                        f"restore it or re-create the run") from None


def read_config(path: str | Path):
    """A TrainConfig from a config.json; errors name the file and the key."""
    from spreadcon.config import TrainConfig

    data = read_json(path)
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a JSON object of config keys, got {type(data).__name__}")
    try:
        return TrainConfig.from_dict(data)
    except (TypeError, ValueError) as err:
        raise UserError(f"{path}: {err}") from None


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file (metrics.jsonl); a UserError naming the file and the line."""
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
            raise UserError(f"{path} line {number} is not valid JSON ({err.msg}); remove or repair that line") from None
        if not isinstance(row, dict):
            raise UserError(f"{path} line {number} must be a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows
