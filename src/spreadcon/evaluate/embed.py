"""The one inference helper: a model over a whole array, in eval mode and without gradients.

    feats, logits = predict(model, x, prepare=views.prepare, batch_size=512, device="cpu")
    feats = embed(encoder, x, prepare=views.prepare, normalize=True)

`predict` is for a Classifier (spreadcon.models.classifier: forward -> (embedding, logits));
`embed` for any module whose forward (or `method`) gives one [B, D] tensor.
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch import Tensor, nn

Prepare = Callable[[Tensor], Tensor]


def _device_of(model: nn.Module, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _prepared_batches(model: nn.Module, x: Tensor, *, prepare: Prepare | None, batch_size: int,
                      device: torch.device | str | None) -> Iterator[Tensor]:
    """Batches of x on `device`, prepared, with `model` in eval mode meanwhile (mode restored)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = _device_of(model, device)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, x.shape[0], batch_size):
            batch = x[start:start + batch_size].to(device, non_blocking=True)
            yield prepare(batch) if prepare is not None else batch
    finally:
        model.train(was_training)


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, *, prepare: Prepare | None = None, batch_size: int = 512,
            device: torch.device | str | None = None, features: bool = False) -> tuple[Tensor, ...]:
    """(embedding [N, D], logits [N, K]) float32 on the CPU, for a Classifier over raw x [N, ...];
    with `features`, also the backbone output h [N, F] before the projection head (the standard
    protocol's probe layer): (embedding, logits, features).

    prepare: applied to each raw batch on `device` (e.g. Views.prepare: uint8 -> normalised float);
    device: where batches go (the model must be there already); default the model's device.
    An empty x gives [0, D] and [0, K] tensors.
    """
    outs: list[list[Tensor]] = [[], [], []]
    for xb in _prepared_batches(model, x, prepare=prepare, batch_size=batch_size, device=device):
        e, logits, h = model.forward_all(xb)
        for out, t in zip(outs, (e, logits, h if features else None)):
            if t is not None:
                out.append(t.float().cpu())
    if not outs[0]:
        empty = (torch.zeros(0, model.embed_dim), torch.zeros(0, model.num_classes))
        return (*empty, torch.zeros(0, model.encoder.feature_dim)) if features else empty
    return tuple(torch.cat(o) for o in outs if o)


@torch.no_grad()
def embed(model: nn.Module, x: Tensor, batch_size: int = 512, prepare: Prepare | None = None,
          device: torch.device | str | None = None, *, normalize: bool = False,
          method: str = "forward") -> Tensor:
    """Run `model` over x [N, ...] in batches and return [N, D] float32 on the CPU.

    prepare, device: as in `predict`. normalize: L2-normalise each row of the result.
    method: which model method gives the embedding, e.g. "forward_features" for an Encoder's
        backbone output ("forward", the default, is the projection head's output, which is the
        same thing when there is no head).
    The model runs in eval mode (dropout off, BatchNorm running statistics); its previous
    train/eval mode is restored afterwards.
    """
    fn = model if method == "forward" else getattr(model, method)
    chunks = [fn(b).float().cpu()
              for b in _prepared_batches(model, x, prepare=prepare, batch_size=batch_size, device=device)]
    if not chunks:
        raise ValueError("embed got an empty input (x has 0 rows)")
    out = torch.cat(chunks)
    return torch.nn.functional.normalize(out, dim=1) if normalize else out
