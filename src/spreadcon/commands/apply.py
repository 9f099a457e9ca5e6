"""`spreadcon apply NAME RUN_DIR ...`: the paper's applications on a trained run."""

from __future__ import annotations

import argparse
import importlib

from spreadcon.cli import command_modules


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "apply", help="run an application (strata recovery + Group DRO, noisy labels, coresets)",
        description="Run one of the paper's applications.",
    )
    apps = parser.add_subparsers(dest="application", metavar="APPLICATION", required=True)
    for name in command_modules("apply_"):
        importlib.import_module(f"spreadcon.commands.{name}").add_parser(apps)
