"""Several processes, one contrastive batch: the losses over the global batch, and DDP plumbing.

The loss. With `torch.distributed` initialised, `GlobalBatchLoss(loss_module)` makes each
process contrast its *local* anchors against the *global* batch (the embeddings of every
process, gathered with an autograd-aware all-gather). Per process r, with A the number of valid
anchors over all processes and W the world size, the loss it back-propagates is

    L_r = W * sum_{i local to r} l_i / A

so that the mean over processes, sum_r L_r / W, is the single-process loss on the concatenated
batch, and under DDP's gradient *averaging* (and the all-gather's backward, which sums every
process's gradient into the embeddings they came from) each parameter receives exactly the
gradient of the single-process loss. No other scale factor is involved. The value the module
returns is the global loss itself on every process (L_r's gradient, the global value), so logs
agree across ranks. Local batches may differ in size (padded inside the gather).

A memory bank (`memory=`, a `spreadcon.losses.MemoryBank`) works the same way, provided every
process holds the *same* bank: push the gathered global batch, not the local rows,

    loss = GlobalBatchLoss(SpreadLoss())(z, y, memory=bank)   # z [B_r, V, D], y [B_r]
    loss.backward()
    bank.push(*gather_global_batch(z.detach(), y))            # [B, V, D], [B]: the global batch

Then every process's bank is the one a single process fed the whole global batches holds, the
bank's rows join every anchor's contrast set (detached, never anchors, instances of their own)
and the loss and gradients are the single-process ones on (global batch + bank).

The plumbing, used by `spreadcon.train` under `torchrun`: `init_from_env` / `teardown`,
`get_rank`, `get_world_size`, `is_main_process`, `local_device`, `check_batches` and `shard` (a
process's part of a global batch) with its inverse `gather_global_batch`, `rank_seed`,
`wrap_model` (DDP, optional SyncBatchNorm), `reduce_sums` (epoch statistics), `barrier`.
Without `torch.distributed` (or with one process) every helper is the identity.
A process that dies makes the others fail after `timeout` seconds with `DistributedError`
(gloo) instead of hanging; on NCCL see docs/distributed.md.
"""

from __future__ import annotations

import datetime
import gc
import inspect
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

DEFAULT_TIMEOUT_S = 300.0


class DistributedError(RuntimeError):
    """A collective failed: usually another process died, hung, or got a different batch shape."""


# --- where am I --------------------------------------------------------------------------------
def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0 (and in a single process): the one that logs and writes checkpoints."""
    return get_rank() == 0


def _collective(what: str, fn, *args, **kwargs):
    """Run a collective; turn a peer's death or a timeout into an error that says so."""
    try:
        return fn(*args, **kwargs)
    except RuntimeError as err:
        raise DistributedError(
            f"rank {get_rank()}/{get_world_size()}: {what} failed ({err}). Another process probably "
            f"died, stalled past the process-group timeout, or passed a tensor of another shape; "
            f"check the other ranks' logs.") from err


# --- the autograd-aware gather -----------------------------------------------------------------
def gather_sizes(n: int, device: torch.device) -> list[int]:
    """Every process's local row count n, in rank order (one small all-gather)."""
    local = torch.tensor([n], device=device, dtype=torch.long)
    sizes = [torch.zeros_like(local) for _ in range(get_world_size())]
    _collective("gathering batch sizes", dist.all_gather, sizes, local)
    return [int(s) for s in sizes]


def _gather_padded(x: Tensor, sizes: list[int]) -> Tensor:
    """Concatenate every process's x [n_r, ...] (n_r = sizes[r]) in rank order, no autograd."""
    pad = max(sizes)
    buf = x.new_zeros((pad, *x.shape[1:]))
    buf[: x.shape[0]] = x
    parts = [torch.empty_like(buf) for _ in sizes]
    _collective("all_gather", dist.all_gather, parts, buf.contiguous())
    return torch.cat([p[:n] for p, n in zip(parts, sizes)])


class _AllGather(torch.autograd.Function):
    """Forward: cat of every process's rows. Backward: each process's rows receive the sum over
    processes of the gradient flowing into them (every process's loss used them)."""

    @staticmethod
    def forward(ctx, x: Tensor, sizes: list[int]) -> Tensor:
        ctx.sizes, ctx.rank = sizes, get_rank()
        return _gather_padded(x, sizes)

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad = grad.contiguous()
        _collective("all_reduce of the gathered gradient", dist.all_reduce, grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start: start + ctx.sizes[ctx.rank]], None


def all_gather_with_grad(x: Tensor, sizes: list[int] | None = None) -> Tensor:
    """x [n_r, ...] on each process -> [sum_r n_r, ...] in rank order; gradients flow back to each
    process's own rows. Row counts may differ between processes; other dimensions may not."""
    if not is_initialized() or get_world_size() == 1:
        return x
    sizes = sizes if sizes is not None else gather_sizes(x.shape[0], x.device)
    return _AllGather.apply(x, sizes)


@torch.no_grad()
def all_gather_no_grad(x: Tensor, sizes: list[int] | None = None) -> Tensor:
    """Like `all_gather_with_grad`, without autograd (labels, instance ids)."""
    if not is_initialized() or get_world_size() == 1:
        return x
    sizes = sizes if sizes is not None else gather_sizes(x.shape[0], x.device)
    return _gather_padded(x, sizes)


def unshard_order(sizes: list[int], device: torch.device) -> Tensor:
    """Rows [B] that put a rank-order gather of `shard`'s parts (sizes[r] rows from rank r) back
    in the order of the global batch: gathered[unshard_order(...)] is that batch."""
    world, n = len(sizes), sum(sizes)
    expected = [len(range(r, n, world)) for r in range(world)]
    if list(sizes) != expected:
        raise ValueError(f"gather_global_batch takes each process's `shard` of one global batch: {n} rows "
                         f"over {world} processes come as {expected} rows per rank, got {list(sizes)}")
    position = torch.cat([torch.arange(r, n, world, device=device) for r in range(world)])  # of gathered rows
    return torch.argsort(position)


@torch.no_grad()
def gather_global_batch(*parts: Tensor) -> tuple[Tensor, ...]:
    """The inverse of `shard`, on every process: each part [B_r, ...] (this process's rows, e.g.
    detached embeddings [B_r, V, D] and labels [B_r]) -> [B, ...], the rows of every process in
    the order of the global batch (row j of rank r is row r + j * W), without autograd.

    For a memory bank: `bank.push(*gather_global_batch(z.detach(), labels))` pushes the same rows,
    in the same order, on every process as one process with the whole batch would (FIFO eviction
    included). One process: the parts unchanged.
    """
    if not parts or any(not isinstance(p, Tensor) or p.ndim < 1 or p.shape[0] != parts[0].shape[0] for p in parts):
        raise ValueError(f"gather_global_batch takes tensors with one row per image of this process's part "
                         f"of the batch, got shapes {[tuple(getattr(p, 'shape', ())) for p in parts]}")
    if not is_initialized() or get_world_size() == 1:
        return parts
    sizes = gather_sizes(parts[0].shape[0], parts[0].device)
    order = unshard_order(sizes, parts[0].device)
    return tuple(_gather_padded(p.detach(), sizes)[order] for p in parts)


# --- the losses over the global batch ----------------------------------------------------------
# The protocol a loss exposes (every module of spreadcon.losses does; no isinstance switch here):
#   loss.term_weights -> {term: weight} (terms of losses.TERMS), or None when the loss has no
#                        per-anchor form (the authors' variant),
#   loss.per_anchor(features [M, D], labels [M], ids [M], anchor_index=[K]) -> {term: (value [K],
#                        valid [K] bool)}, the loss of anchors `anchor_index` against all M rows;
#                        with a memory bank, per_anchor(..., memory=bank): against the M rows and
#                        the bank's (a loss without the `memory` keyword takes no bank).
def check_protocol(loss: nn.Module) -> dict[str, float]:
    """The loss's term weights, or a ValueError naming what is missing."""
    weights = getattr(loss, "term_weights", None)
    if not callable(getattr(loss, "per_anchor", None)) or not isinstance(weights, dict) or not weights:
        raise ValueError(f"GlobalBatchLoss wraps the loss modules of spreadcon.losses (any module with "
                         f"`term_weights` and `per_anchor(features, labels, ids, anchor_index=...)`; the "
                         f"'-authors' variants have none), got {type(loss).__name__}")
    if getattr(getattr(loss, "options", None), "anchors", "all") != "all":
        raise ValueError("GlobalBatchLoss needs anchors='all'; anchors='cross_view' is single-process only")
    return dict(weights)


def _global_rows(features: Tensor, labels: Tensor | None, simclr: bool, bank_rows: int = 0):
    """Gathered rows z [M, D] (with autograd), labels [M], ids [M], and this rank's anchor rows.
    bank_rows: the rows of this process's memory bank (every process must hold as many)."""
    if features.ndim != 3:
        raise ValueError(f"features must have shape [B, V, D] (images, views, dim), got {tuple(features.shape)}")
    b, v, d = features.shape
    device = features.device
    if labels is None or simclr:
        labels = torch.zeros(b, dtype=torch.long, device=device)
    # One small collective checks shapes and bank sizes and learns the batch sizes of every process.
    local = torch.tensor([b, v, d, bank_rows], device=device, dtype=torch.long)
    shapes = [torch.zeros_like(local) for _ in range(get_world_size())]
    _collective("gathering batch shapes", dist.all_gather, shapes, local)
    shapes = [tuple(int(s) for s in t) for t in shapes]
    if any(s[1:3] != (v, d) for s in shapes):
        raise ValueError(f"every process must pass features [B_r, V, D] with the same V and D; "
                         f"got (B, V, D) per rank {[s[:3] for s in shapes]}")
    if any(s[3] != bank_rows for s in shapes):
        raise ValueError(f"every process must hold the same memory bank; its rows per rank are "
                         f"{[s[3] for s in shapes]}: push the global batch on every process, "
                         f"bank.push(*gather_global_batch(z.detach(), labels))")
    sizes = [s[0] * v for s in shapes]
    offset = sum(s[0] for s in shapes[: get_rank()])              # images of lower ranks
    ids = torch.arange(offset, offset + b, device=device)        # global instance ids
    z = all_gather_with_grad(features.reshape(b * v, d), sizes)  # [M, D]; row b * V + v: view v of b
    y = all_gather_no_grad(labels.long().repeat_interleave(v), sizes)
    i = all_gather_no_grad(ids.repeat_interleave(v), sizes)
    return z, (i if simclr else y), i, torch.arange(offset * v, (offset + b) * v, device=device)


def _takes_memory(loss: nn.Module) -> bool:
    try:
        return "memory" in inspect.signature(loss.per_anchor).parameters
    except (TypeError, ValueError):  # no signature to read (a builtin): assume the keyword works
        return True


def global_batch_forward(loss: nn.Module, features: Tensor, labels: Tensor | None = None, *,
                         memory: Any = None, return_terms: bool = False):
    """The loss of this process's anchors against the global batch (and `memory`'s rows, a
    MemoryBank every process holds identically), scaled as the module docstring says; `loss`
    follows the protocol above. features [B_r, V, D], labels [B_r]."""
    weights = check_protocol(loss)
    if memory is not None and not _takes_memory(loss):
        raise ValueError(f"{type(loss).__name__}.per_anchor takes no memory= keyword: this loss cannot use a "
                         f"memory bank under torch.distributed; drop memory=")
    bank_rows = 0 if memory is None else len(memory)
    z, y, i, anchor_index = _global_rows(features, labels, set(weights) == {"simclr"}, bank_rows)
    kw = {} if memory is None else {"memory": memory}
    parts = loss.per_anchor(z, y, i, anchor_index=anchor_index, **kw)
    # Global sums of values and of valid-anchor counts, per term: [2, T] in one all-reduce.
    sums = torch.stack([torch.stack([parts[t][0].detach().sum().double(), parts[t][1].sum().double()])
                        for t in weights], 1)
    _collective("all_reduce of the loss", dist.all_reduce, sums, op=dist.ReduceOp.SUM)
    world = get_world_size()
    total, means = 0.0, {}
    for n, (term, weight) in enumerate(weights.items()):
        value, _ = parts[term]
        count = sums[1, n].clamp_min(1)
        local_part = value.sum() * (world / count).to(value.dtype)    # L_r: its gradient is exact
        global_mean = (sums[0, n] / count).to(value.dtype)            # the single-process value
        means[term] = global_mean
        total = total + weight * (local_part + (global_mean - local_part).detach())
    return (total, means) if return_terms else total


class GlobalBatchLoss(nn.Module):
    """Wrap a `spreadcon.losses` module so that, under torch.distributed, each process's anchors
    contrast against the global batch (see the module docstring for the exact scaling). The same
    as building the module with `gather_distributed=True` (lightly's flag).

    forward(features [B_r, V, D], labels [B_r] (ignored by SimCLR), return_terms=False,
    memory=None) -> scalar, the global loss on every process; B_r may differ between processes, V
    and D may not. memory: a MemoryBank, the same on every process (push `gather_global_batch`'s
    rows): its rows join the contrast sets as in the single-process loss, without gradient.
    Without an initialised process group (or with world size 1) it is the wrapped module.
    The wrapped module's temperature, normalize, path and block_size apply (path="lean"
    included); anchors must be "all" (the authors' cross-view variant is single-process only).
    """

    def __init__(self, loss: nn.Module):
        super().__init__()
        self.terms = check_protocol(loss)
        self.loss = loss

    def forward(self, features: Tensor, labels: Tensor | None = None, return_terms: bool = False,
                memory: Any = None):
        if not is_initialized() or get_world_size() == 1:
            kw = {"return_terms": True} if return_terms else {}
            kw.update({} if memory is None else {"memory": memory})
            return self.loss(features, labels, **kw)
        return global_batch_forward(self.loss, features, labels, memory=memory, return_terms=return_terms)


def global_batch_loss(loss: nn.Module | None) -> nn.Module | None:
    """`GlobalBatchLoss(loss)` when more than one process runs, else `loss` unchanged."""
    if loss is None or get_world_size() == 1:
        return loss
    return GlobalBatchLoss(loss)


# --- process group, devices, data, model -------------------------------------------------------
def init_from_env(backend: str | None = None, timeout_s: float | None = None) -> bool:
    """Join the process group that `torchrun` describes (RANK, WORLD_SIZE, MASTER_ADDR, ...).

    Returns True if this call initialised it (then call `teardown()` at the end), False when not
    launched by torchrun with WORLD_SIZE > 1 or already initialised. backend: "nccl" on CUDA,
    else "gloo" (default from the device). timeout_s (default $SPREADCON_DIST_TIMEOUT or 300):
    how long a collective waits for a peer before failing instead of hanging.
    """
    if is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if timeout_s is None:
        timeout_s = float(os.environ.get("SPREADCON_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return True


def teardown() -> None:
    """Leave the process group (safe to call when none is initialised). Drop every DDP wrapper
    first: a reducer still holding the group when it is destroyed can abort the process at exit
    ("terminate called without an active exception"); the collection frees those kept by cycles."""
    if is_initialized():
        gc.collect()
        dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """A CUDA device becomes this process's GPU (cuda:LOCAL_RANK) under torchrun; others stay."""
    if device.type == "cuda" and is_initialized():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return device


def check_batches(n: int, batch_size: int) -> None:
    """Refuse a split in which some process would get an empty part of a global batch: every
    batch of `batch_size` images out of n (the last one may be smaller) needs >= W images."""
    world = get_world_size()
    last = n % batch_size
    if world > 1 and (batch_size < world or 0 < last < world):
        raise ValueError(f"{world} processes need every global batch to hold >= {world} images; "
                         f"batch_size={batch_size} over {n} training images leaves a last batch of "
                         f"{last or batch_size}: choose another batch_size")


def shard(index: Tensor) -> Tensor:
    """This process's part of a global batch of indices [B] -> [~B / W] (rows rank, rank + W, ...).

    Every process draws the same seeded permutation (a distributed sampler without padding), so
    the global batches are those of a single process and the union of the parts is exactly the
    global batch. Process parts differ in size by at most one; see `check_batches`. The inverse,
    on rows of the parts (embeddings, labels): `gather_global_batch`.
    """
    world = get_world_size()
    if world == 1:
        return index
    if index.shape[0] < world:
        raise ValueError(f"a global batch of {index.shape[0]} images cannot be split over {world} "
                         f"processes (see check_batches)")
    return index[get_rank()::world]


def rank_seed(seed: int) -> int:
    """A per-process seed (augmentation streams must differ between processes)."""
    return seed + 7919 * get_rank()


def wrap_model(model: nn.Module, device: torch.device, *, sync_batchnorm: bool = False,
               find_unused_parameters: bool = False) -> nn.Module:
    """DDP around `model` when several processes run; `model` itself otherwise. sync_batchnorm
    converts BatchNorm layers of `model` to SyncBatchNorm in place (CUDA only). Save `model`'s
    state, not the wrapper's (no "module." prefix). find_unused_parameters: for models with
    parameters the loss does not use (e.g. a CE head under a contrastive-only protocol)."""
    if get_world_size() == 1:
        return model
    if sync_batchnorm:
        if device.type != "cuda":
            raise ValueError("sync_batchnorm needs CUDA devices (SyncBatchNorm has no CPU kernel); "
                             "set sync_batchnorm=false for CPU / gloo training")
        for name, child in model.named_children():
            setattr(model, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids,
                                               find_unused_parameters=find_unused_parameters)


def reduce_sums(acc: dict[str, Tensor], *, max_keys: tuple[str, ...] = ("seconds",)) -> dict[str, Tensor]:
    """Sum each process's epoch accumulators in place (max for `max_keys`; bools: logical or)."""
    if get_world_size() == 1:
        return acc
    for key, t in acc.items():
        op = dist.ReduceOp.MAX if (key in max_keys or t.dtype == torch.bool) else dist.ReduceOp.SUM
        buf = t.to(torch.uint8) if t.dtype == torch.bool else t
        _collective(f"all_reduce of {key}", dist.all_reduce, buf, op=op)
        if buf is not t:
            t.copy_(buf.bool())
    return acc


def barrier() -> None:
    if get_world_size() > 1:
        _collective("barrier", dist.barrier)


def broadcast_object(obj: Any) -> Any:
    """rank 0's `obj` on every process."""
    if get_world_size() == 1:
        return obj
    box = [obj]
    _collective("broadcast", dist.broadcast_object_list, box, src=0)
    return box[0]
