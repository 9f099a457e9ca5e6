"""A FIFO memory bank of past embeddings: extra contrast points for any loss of `spreadcon.losses`.

Like pytorch-metric-learning's `CrossBatchMemory` / `ref_emb` and lightly's memory bank: rows
pushed after a step are *detached* copies (embeddings, labels, optional instance ids); on the next
calls they join every anchor's contrast set (P(i), N(i), and aug(i) where their id matches an
anchor's explicit id) but are never anchors themselves and receive no gradient. For L_spread they
widen P(i) in the repel denominator, which small CPU batches lack.

    bank = MemoryBank(size=4096)
    loss = spread_loss(z, y, memory=bank)     # z [B, V, D], y [B]
    loss.backward(); bank.push(z.detach(), y)  # after the step; oldest rows drop out first

State lives only in the bank object the caller owns (no hidden global state). Under
torch.distributed each process owns one and pushes the gathered global batch,
`bank.push(*spreadcon.distributed.gather_global_batch(z.detach(), y))`, so all hold the same rows
(`spreadcon.distributed.GlobalBatchLoss` takes memory=bank too).
"""

from __future__ import annotations

import torch
from torch import Tensor


class MemoryBank:
    """FIFO of at most `size` rows: embeddings [n, D], labels [n], ids [n] and has_id [n] (bool)."""

    def __init__(self, size: int):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"MemoryBank size must be a positive int (rows kept), got {size!r}")
        self.size = size
        self.embeddings: Tensor | None = None
        self.labels: Tensor | None = None
        self.ids: Tensor | None = None
        self.has_id: Tensor | None = None
        self.device: torch.device | None = None  # set by .to(); None: the device of the pushed rows

    def __len__(self) -> int:
        return 0 if self.embeddings is None else self.embeddings.shape[0]

    def __repr__(self) -> str:
        dim = None if self.embeddings is None else self.embeddings.shape[1]
        return f"MemoryBank(size={self.size}, rows={len(self)}, dim={dim})"

    @property
    def dim(self) -> int | None:
        return None if self.embeddings is None else self.embeddings.shape[1]

    def state_dict(self) -> dict[str, Tensor | None]:
        """The rows held (for checkpoints: a resumed run contrasts against the same bank)."""
        return {"embeddings": self.embeddings, "labels": self.labels, "ids": self.ids, "has_id": self.has_id}

    def load_state_dict(self, state: dict[str, Tensor | None]) -> None:
        """Restore the rows of `state_dict()` (onto this bank's device, if `.to` set one)."""
        self.embeddings, self.labels, self.ids, self.has_id = (state[k] for k in ("embeddings", "labels", "ids",
                                                                                  "has_id"))
        if self.device is not None:
            self.to(self.device)

    def to(self, device: torch.device | str) -> MemoryBank:
        """Keep the rows on `device` (in place, like nn.Module.to): those held now and those pushed
        later. Returns the bank."""
        self.device = torch.device(device)
        if self.embeddings is not None:
            self.embeddings, self.labels, self.ids, self.has_id = (
                t.to(device) for t in (self.embeddings, self.labels, self.ids, self.has_id))
        return self

    def clear(self) -> None:
        self.embeddings = self.labels = self.ids = self.has_id = None

    def push(self, z: Tensor, labels: Tensor, ids: Tensor | None = None) -> None:
        """Append detached rows: z [B, V, D] with labels [B] (ids [B]), or z [M, D] with labels [M]
        (ids [M]). ids=None: the rows are instances of their own (never in any anchor's aug(i))."""
        if not isinstance(z, Tensor) or z.ndim not in (2, 3) or not z.is_floating_point():
            raise ValueError(f"push z: a float tensor [B, V, D] or [M, D], got "
                             f"{type(z).__name__ if not isinstance(z, Tensor) else (tuple(z.shape), z.dtype)}")
        n, views = z.shape[0], (z.shape[1] if z.ndim == 3 else 1)
        if labels is None:
            raise ValueError("push labels: an integer tensor [B] (or [M]) is required; "
                             "for SimCLR pass any, e.g. the ids")
        rows = z.detach().reshape(n * views, z.shape[-1])
        rows = rows if self.device is None else rows.to(self.device)
        for name, t in (("labels", labels), ("ids", ids)):
            if t is None:
                continue
            if not isinstance(t, Tensor) or t.ndim != 1 or t.shape[0] != n or t.is_floating_point() \
                    or t.dtype == torch.bool:
                raise ValueError(f"push {name}: an integer tensor [{n}] (one per image / row of z), got "
                                 f"{t if not isinstance(t, Tensor) else (tuple(t.shape), t.dtype)}")
        if self.dim is not None and rows.shape[1] != self.dim:
            raise ValueError(f"push z: the bank holds rows of dimension {self.dim}, got {rows.shape[1]}; "
                             f"call bank.clear() or build a new MemoryBank for another embedding size")
        lab = labels.detach().long().to(rows.device).repeat_interleave(views)
        has = torch.full_like(lab, ids is not None, dtype=torch.bool)
        idv = ids.detach().long().to(rows.device).repeat_interleave(views) if ids is not None else torch.zeros_like(lab)
        if self.embeddings is not None:
            rows = torch.cat([self.embeddings, rows.to(self.embeddings)])
            lab, idv, has = (torch.cat([a, b.to(a.device)]) for a, b in
                             ((self.labels, lab), (self.ids, idv), (self.has_id, has)))
        keep = slice(max(0, rows.shape[0] - self.size), None)  # FIFO: the newest `size` rows
        self.embeddings, self.labels = rows[keep].clone(), lab[keep].clone()
        self.ids, self.has_id = idv[keep].clone(), has[keep].clone()

    def contents(self, dim: int, like: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
        """(embeddings [n, D] in like's dtype/device, labels, ids, has_id), or None when empty."""
        if self.embeddings is None:
            return None
        if dim != self.dim:
            raise ValueError(f"memory: the MemoryBank holds rows of dimension {self.dim} but the features "
                             f"have dimension {dim}; pass the bank of this embedding (or bank.clear())")
        dev = like.device
        return (self.embeddings.to(device=dev, dtype=like.dtype), self.labels.to(dev), self.ids.to(dev),
                self.has_id.to(dev))
