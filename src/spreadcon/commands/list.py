"""`spreadcon list`: the datasets, encoders and losses spreadcon knows, one line each."""

from __future__ import annotations

import argparse
import inspect

KINDS = ("datasets", "encoders", "losses")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "list", help="list datasets, encoders and losses with one line each",
        description="List the names `spreadcon train` accepts for --dataset, --encoder and --loss, "
                    "with a one-line description of each.",
    )
    parser.add_argument("kind", nargs="?", choices=KINDS, default=None,
                        help="list only this kind (default: all three)")
    parser.set_defaults(func=run)


def entries(kind: str) -> dict[str, str]:
    """{name: one-line description} for 'datasets', 'encoders' or 'losses'."""
    if kind == "datasets":
        from spreadcon.data import DATASETS

        out = {}
        for name, info in DATASETS.items():
            needs = "" if info.layout is None else " [needs --set data_root=DIR]"
            out[name] = info.description + needs
        return out
    if kind == "encoders":
        from spreadcon import models

        return {name: models.describe(name) for name in models.ENCODERS}
    if kind == "losses":
        from spreadcon import losses

        out = {name: _first_line(cls.__dict__.get("__doc__") or getattr(losses, f"{name}_loss", cls).__doc__)
               for name, cls in losses.LOSSES.items()}
        out.setdefault("ce", "cross-entropy alone (the L_CE baseline): use --protocol ce")
        return out
    raise ValueError(f"unknown kind {kind!r}; choose one of {list(KINDS)}")


def _first_line(doc: str | None) -> str:
    return (inspect.cleandoc(doc or "").splitlines() or [""])[0]


def run(args: argparse.Namespace) -> int:
    for kind in [args.kind] if args.kind else KINDS:
        items = entries(kind)
        print(f"{kind}:")
        width = max(map(len, items), default=0)
        for name, text in items.items():
            print(f"  {name:<{width}}  {text}")
    return 0
