"""The `spreadcon` command line.

Each subcommand lives in its own module under `spreadcon.commands` and defines
`add_parser(subparsers)`, which registers the subcommand and sets `func(args) -> int` as its
default. Command modules import heavy libraries inside `func`, so `spreadcon --help` stays fast.
`spreadcon apply NAME` is assembled the same way from `spreadcon.commands.apply_*` modules.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import spreadcon
import spreadcon.commands


def command_modules(prefix: str = "") -> list[str]:
    """Modules of `spreadcon.commands` whose names start with `prefix`, sorted."""
    names = [m.name for m in pkgutil.iter_modules(spreadcon.commands.__path__)]
    return sorted(n for n in names if n.startswith(prefix) and not n.startswith("_"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spreadcon",
        description="Supervised contrastive learning that keeps what labels don't say "
                    "(L_spread, SupCon, SimCLR; strata, noisy labels, coresets).",
    )
    parser.add_argument("--version", action="version", version=f"spreadcon {spreadcon.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in command_modules():
        if name.startswith("apply_"):
            continue  # registered under `spreadcon apply`
        importlib.import_module(f"spreadcon.commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
