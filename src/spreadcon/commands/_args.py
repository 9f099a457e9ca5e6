"""Shared argument types of the subcommands: comma-separated lists (`--seeds 0,1,2`)."""

from __future__ import annotations

import argparse


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
