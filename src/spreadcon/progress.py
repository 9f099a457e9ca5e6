"""Progress on long work: a tqdm bar on a terminal, one line per epoch or stage in a log file.

    bar = progress.bar(15, desc="epoch 1/30")        # a tqdm bar on a terminal, else None
    progress.line("epoch 1/30: loss 5.7, val_acc 0.93")   # printed only when stderr is not a terminal
    with progress.stage("coarse-to-fine probes"):    # "coarse-to-fine probes ... 3.1 s"
        ...

Only rank 0 of a torchrun job shows anything (RANK unset: a single process is rank 0), so the
ranks never draw interleaved bars; and a log file gets whole lines, never carriage returns.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from typing import Any, Iterator


def is_main() -> bool:
    return os.environ.get("RANK", "0") == "0"


def interactive() -> bool:
    """stderr is a terminal (bars redraw in place) rather than a log file or a pipe."""
    return sys.stderr.isatty()


def bar(total: int, *, desc: str, initial: int = 0, unit: str = "step", enabled: bool = True) -> Any:
    """A tqdm bar on a terminal (rank 0 only); None elsewhere or when not `enabled`."""
    if not (enabled and is_main() and interactive()):
        return None
    from tqdm.auto import tqdm  # imported on use: a log-file run never loads it

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=False, dynamic_ncols=True)


def line(text: str, *, enabled: bool = True) -> None:
    """One line on stderr for a log file (rank 0 only); on a terminal the bar says it instead."""
    if enabled and is_main() and not interactive():
        print(text, file=sys.stderr, flush=True)


@contextmanager
def stage(name: str, *, enabled: bool = True, at_least: float = 1.0) -> Iterator[None]:
    """Announce a step and how long it took (rank 0 only): on a terminal as it starts, in a log
    file once it ends, and there only when it took `at_least` seconds."""
    show = enabled and is_main()
    start = time.perf_counter()
    if show and interactive():
        print(f"{name} ...", end="", file=sys.stderr, flush=True)
    try:
        yield
    finally:
        seconds = time.perf_counter() - start
        if show and interactive():
            print(f" {seconds:.1f} s", file=sys.stderr, flush=True)
        elif show and seconds >= at_least:
            print(f"{name}: {seconds:.1f} s", file=sys.stderr, flush=True)
