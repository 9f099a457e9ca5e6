"""One module per `spreadcon` subcommand; see `spreadcon.cli`.

Each module defines `add_parser(subparsers)`, which registers the subcommand and sets
`func(args) -> int` as its default. `spreadcon apply NAME` is assembled from the `apply_*` modules.
"""

from __future__ import annotations

import pkgutil


def command_modules(prefix: str = "") -> list[str]:
    """Modules of `spreadcon.commands` whose names start with `prefix`, sorted (private ones skipped)."""
    names = [m.name for m in pkgutil.iter_modules(__path__)]
    return sorted(n for n in names if n.startswith(prefix) and not n.startswith("_"))
