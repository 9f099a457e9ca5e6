"""Projection heads (SimCLR / SupCon style). Off by default: the paper uses none."""

from __future__ import annotations

from torch import nn


def projection_head(in_dim: int, out_dim: int, hidden_dim: int | None = None, kind: str = "mlp") -> nn.Module:
    """[B, in_dim] -> [B, out_dim]. kind 'mlp': Linear-ReLU-Linear (hidden_dim defaults to in_dim);
    kind 'linear': a single Linear."""
    if out_dim < 1:
        raise ValueError(f"proj_dim must be a positive integer, got {out_dim}")
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    if kind == "mlp":
        hidden = hidden_dim or in_dim
        return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))
    raise ValueError(f"unknown projection head kind {kind!r}; choose 'mlp' or 'linear'")
