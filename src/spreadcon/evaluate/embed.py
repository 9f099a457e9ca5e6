"""Embeddings of a whole array through a model, in eval mode and without gradients."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn


@torch.no_grad()
def embed(model: nn.Module, x: Tensor, batch_size: int = 512, prepare: Callable[[Tensor], Tensor] | None = None,
          device: torch.device | str | None = None, *, normalize: bool = False,
          method: str = "forward") -> Tensor:
    """Run `model` over x [N, ...] in batches and return [N, D] float32 on the CPU.

    prepare: applied to each raw batch (already on `device`) before the model, e.g. Views.prepare
        to turn uint8 images into normalised floats; None feeds x as is.
    device: where the batches are sent (the model must already be there); default the device of
        the model's first parameter (CPU if it has none).
    normalize: L2-normalise each row of the result.
    method: which model method gives the embedding, e.g. "forward_features" for an Encoder's
        backbone output ("forward", the default, is the projection head's output, which is the
        same thing when there is no head).
    The model runs in eval mode (dropout off, BatchNorm running statistics); its previous
    train/eval mode is restored afterwards.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    fn = model if method == "forward" else getattr(model, method)
    was_training = model.training
    model.eval()
    try:
        chunks = []
        for start in range(0, x.shape[0], batch_size):
            batch = x[start:start + batch_size].to(device)
            if prepare is not None:
                batch = prepare(batch)
            chunks.append(fn(batch).float().cpu())
    finally:
        model.train(was_training)
    if not chunks:
        raise ValueError("embed got an empty input (x has 0 rows)")
    out = torch.cat(chunks)
    return torch.nn.functional.normalize(out, dim=1) if normalize else out
