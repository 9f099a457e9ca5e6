"""Fused GPU kernels (Triton) for spreadcon's losses; see `row_stats` for the design.

`triton_row_stats` has the contract of `spreadcon.losses.core.RowStats` (the torch path) and
runs on CUDA tensors, or on the CPU under Triton's interpreter (`TRITON_INTERPRET=1`, tests).
`available()` says whether Triton is importable.
"""

from spreadcon.losses.kernels import row_stats
from spreadcon.losses.kernels.row_stats import TritonRowStats, interpreting, triton_row_stats


def available() -> bool:
    """Whether Triton can be imported (it ships with CUDA builds of torch)."""
    return row_stats.triton is not None


__all__ = ["TritonRowStats", "available", "interpreting", "triton_row_stats"]
