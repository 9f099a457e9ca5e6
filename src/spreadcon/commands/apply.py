"""`spreadcon apply NAME RUN_DIR ...`: one of the paper's methods on a trained run folder.

The experiments around the methods (Figure 5's three panels) are `spreadcon reproduce fig5-*`.
"""

from __future__ import annotations

import argparse
import importlib

from spreadcon.commands import command_modules


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "apply", help="apply a method to a trained run (strata recovery + Group DRO, noisy labels, coresets)",
        description="Apply one of the paper's methods to a run folder written by `spreadcon train`. "
                    "The Figure 5 experiments are `spreadcon reproduce fig5-robustness|fig5-noise|fig5-coreset`.",
    )
    apps = parser.add_subparsers(dest="application", metavar="APPLICATION", required=True)
    for name in command_modules("apply_"):
        importlib.import_module(f"spreadcon.commands.{name}").add_parser(apps)
