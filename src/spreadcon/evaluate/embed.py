"""The one inference helper: a model over a whole array, in eval mode and without gradients.

    feats, logits = predict(model, x, prepare=views.prepare, batch_size=512, device="cpu")
    feats = embed(encoder, x, prepare=views.prepare, normalize=True)

`predict` is for a Classifier (spreadcon.models.classifier: forward -> (embedding, logits));
`embed` for any module whose forward (or `method`) gives one [B, D] tensor; `split_arrays` is one
split of a dataset through a Classifier, as a run folder caches it.
"""

from __future__ import annotations

import os
from typing import Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from spreadcon.data import StrataDataset, default_views

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


def memory_available() -> int | None:
    """Bytes of physical memory of this machine (None where it cannot be read)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(rows: int, columns: int, *, what: str, share: float = 0.5) -> None:
    """Refuse to build float32 arrays [rows, columns] larger than `share` of physical memory,
    before allocating them."""
    need, have = 4 * rows * columns, memory_available()
    if have is not None and need > share * have:
        raise MemoryError(f"{what} need {need / 2**30:.1f} GiB ({rows:,} rows x {columns:,} columns of float32), "
                          f"more than {share:.0%} of this machine's {have / 2**30:.1f} GiB; evaluate fewer rows or "
                          f"classes (e.g. subsample_fraction) or use a larger machine")


def split_arrays(model: nn.Module, ds: StrataDataset, split: str, batch_size: int,
                 device: torch.device) -> dict[str, np.ndarray]:
    """One split through a Classifier (eval mode): embedding [N, D] (what the loss reads), logits
    [N, K], features [N, F] (the backbone output h, only when the encoder has a projection head),
    index, label, stratum (rows of the dataset as trained), and clean_label, group, origin (rows of
    the dataset as loaded) when set."""
    index = ds.rows(split)
    check_fits(len(index), model.num_classes + model.embed_dim + model.encoder.feature_dim, what=f"the {split} split's "
               f"embeddings and logits")
    has_proj = model.has_projection
    out = predict(model, ds.x[index], prepare=default_views(ds).prepare, batch_size=batch_size, device=device,
                  features=has_proj)
    arrays = {"embedding": out[0].numpy(), "logits": out[1].numpy(), "index": index.numpy(),
              "label": ds.label[index].numpy(), "stratum": ds.stratum[index].numpy()}
    if has_proj:  # the backbone output h, before the projection head (the standard protocol's probe layer)
        arrays["features"] = out[2].numpy()
    for key in ("clean_label", "group", "origin"):
        if getattr(ds, key) is not None:
            arrays[key] = getattr(ds, key)[index].numpy()
    return arrays
