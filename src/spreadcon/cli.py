"""The `spreadcon` command line.

Each subcommand lives in its own module under `spreadcon.commands` (see its docstring); command
modules import heavy libraries inside `func`, so `spreadcon --help` stays fast.

One error convention for every subcommand, here and nowhere else: a user error (`UserError`,
`ValueError`, `OSError`, see `spreadcon.errors`) is printed as one line
`spreadcon COMMAND: error: MESSAGE` with exit code 2 and no traceback; `--debug` re-raises it
with its traceback. Any other exception is a bug and keeps its traceback. A diverged training
(FloatingPointError) exits 1, Ctrl-C 130.

Threads are set once, here: `--threads N`, else the environment variable SPREADCON_THREADS,
else torch's own default (which follows OMP_NUM_THREADS). `--debug` and `--threads` are global
options and may stand anywhere on the command line.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

import spreadcon
from spreadcon.commands import command_modules
from spreadcon.errors import USER_ERRORS, UserError, describe

THREADS_ENV = "SPREADCON_THREADS"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spreadcon",
        description="Supervised contrastive learning that keeps what labels don't say "
                    "(L_spread, SupCon, SimCLR; strata, noisy labels, coresets).",
    )
    parser.add_argument("--version", action="version", version=f"spreadcon {spreadcon.__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a user error")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help=f"torch CPU threads (default: ${THREADS_ENV}, else torch's default)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in command_modules():
        if name.startswith("apply_"):
            continue  # registered under `spreadcon apply`
        importlib.import_module(f"spreadcon.commands.{name}").add_parser(sub)
    return parser


def split_global_options(argv: list[str]) -> tuple[list[str], bool, str | None]:
    """(argv without --debug / --threads N, debug, threads text): global options anywhere."""
    rest, debug, threads = [], False, None
    items = iter(argv)
    for item in items:
        if item == "--":
            rest += [item, *items]
            break
        if item == "--debug":
            debug = True
        elif item == "--threads":
            threads = next(items, "")
        elif item.startswith("--threads="):
            threads = item.split("=", 1)[1]
        else:
            rest.append(item)
    return rest, debug, threads


def set_threads(text: str | None) -> int | None:
    """Set torch's CPU threads from --threads, else $SPREADCON_THREADS; None leaves torch's default."""
    source = "--threads"
    if text is None:
        text, source = os.environ.get(THREADS_ENV), THREADS_ENV
    if text is None or text == "":
        return None
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise UserError(f"{source} must be a whole number >= 1, got {text!r}")
    import torch

    torch.set_num_threads(n)
    return n


def main(argv: list[str] | None = None) -> int:
    argv, debug, threads = split_global_options(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)
    command = " ".join(filter(None, [args.command, getattr(args, "application", None)]))
    try:
        set_threads(threads)
        return int(args.func(args) or 0)
    except USER_ERRORS as err:
        if debug:
            raise
        print(f"spreadcon {command}: error: {describe(err)}", file=sys.stderr)
        return 2
    except FloatingPointError as err:
        if debug:
            raise
        print(f"spreadcon {command}: {describe(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        print(f"\nspreadcon {command}: {str(err) or 'interrupted'}", file=sys.stderr)
        return 130
