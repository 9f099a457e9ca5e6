"""Per-example scores of the coreset baselines; high score = keep.

- Forgetting (Toneva et al. 2019, "An empirical study of example forgetting"): from a
  correctness history [T, N] (was example n classified correctly at its t-th presentation), a
  forgetting event is a correct -> incorrect change between consecutive presentations. An
  example never classified correctly in a run counts as the maximum: it gets T, more than any
  learned example can reach (at most floor(T/2) events). Counts are summed over seeds; the most
  forgotten are kept.
- EL2N (Paul et al. 2021, "Deep learning on a data diet"): ||softmax(f(x)) - onehot(y)||_2 with
  the model in eval mode on un-augmented inputs, early in training, averaged over seeds.
- GraNd (Paul et al. 2021): ||grad_theta CE(f(x), y)||_2 per example over all trainable
  parameters, via torch.func (vmap of grad), averaged over seeds. `grand_last_layer` is the
  closed form when only the final linear layer W h + b counts: ||p - y|| * sqrt(||h||^2 + 1).

The model functions take any module x -> logits; `logits_module` makes one of a spreadcon
Classifier (which returns (embedding, logits)).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["forgetting_counts", "el2n_scores", "logits_module", "model_logits", "model_el2n", "grand_scores",
           "grand_last_layer"]


def forgetting_counts(history: Any) -> np.ndarray:
    """history [T, N] or [S, T, N] bool -> forgetting counts [N] (int, summed over seeds S).

    Per seed: #{t >= 1 : correct[t-1] and not correct[t]}; T for never-correct examples.
    """
    h = np.asarray(history).astype(bool)
    if h.ndim == 2:
        h = h[None]
    if h.ndim != 3 or h.shape[1] < 1:
        raise ValueError(f"history must be [T, N] or [seeds, T, N] with T >= 1, got shape {h.shape}")
    events = (h[:, :-1] & ~h[:, 1:]).sum(1)                  # (S, N)
    never = ~h.any(1)                                        # (S, N)
    return np.where(never, h.shape[1], events).sum(0).astype(np.int64)


def el2n_scores(logits: Tensor | np.ndarray, labels: Tensor | np.ndarray) -> np.ndarray:
    """logits [N, C] or [S, N, C], labels [N] -> EL2N [N], the mean over seeds S."""
    z = torch.as_tensor(np.asarray(logits) if not isinstance(logits, Tensor) else logits).double()
    y = torch.as_tensor(labels).long()
    if z.dim() == 2:
        z = z[None]
    if z.dim() != 3 or y.shape != (z.shape[1],):
        raise ValueError(f"logits must be [N, C] or [S, N, C] and labels [N]; got "
                         f"{tuple(z.shape)} and {tuple(y.shape)}")
    err = z.softmax(-1) - F.one_hot(y, z.shape[-1]).double()
    return err.norm(dim=-1).mean(0).cpu().numpy()


class _Logits(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)[1]


def logits_module(model: nn.Module) -> nn.Module:
    """The module x -> logits [B, K] of a Classifier (whose forward gives (embedding, logits)),
    sharing its parameters: what `model_logits`, `model_el2n` and `grand_scores` take."""
    return _Logits(model)


def _models(models: nn.Module | Sequence[nn.Module]) -> list[nn.Module]:
    return [models] if isinstance(models, nn.Module) else list(models)


@torch.no_grad()
def model_logits(model: nn.Module, x: Tensor, *, batch_size: int = 512) -> Tensor:
    """Logits [N, C] of `model` (eval mode, no augmentation) on prepared inputs x [N, ...]."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = torch.cat([model(xb.to(device)).float().cpu() for xb in x.split(batch_size)])
    model.train(was_training)
    return out


def model_el2n(models: nn.Module | Sequence[nn.Module], x: Tensor, labels: Tensor, *,
               batch_size: int = 512) -> np.ndarray:
    """EL2N [N] of one model or the mean over several (seeds); models map x -> logits."""
    logits = torch.stack([model_logits(m, x, batch_size=batch_size) for m in _models(models)])
    return el2n_scores(logits, labels)


def grand_scores(models: nn.Module | Sequence[nn.Module], x: Tensor, labels: Tensor, *,
                 batch_size: int = 128, prepare: Callable[[Tensor], Tensor] | None = None) -> np.ndarray:
    """GraNd [N]: per-example L2 norm of the cross-entropy gradient w.r.t. every trainable
    parameter (eval mode), averaged over `models` (x -> logits). x [N, ...] inputs, labels [N];
    `prepare` (e.g. Views.prepare: raw uint8 -> normalised float) is applied to each batch on the
    model's device, else x must be prepared already. Memory: batch_size x #parameters floats."""
    from torch.func import functional_call, grad, vmap

    y_all = torch.as_tensor(labels).long()
    if y_all.shape != (x.shape[0],):
        raise ValueError(f"labels must be [N] = [{x.shape[0]}], got {tuple(y_all.shape)}")
    per_model = []
    for model in _models(models):
        was_training = model.training
        model.eval()
        params = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
        buffers = {k: b.detach() for k, b in model.named_buffers()}
        device = next(model.parameters()).device

        def loss(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
            out = functional_call(model, (p, buffers), (xi[None],))
            return F.cross_entropy(out, yi[None])

        per_example = vmap(grad(loss), in_dims=(None, 0, 0))
        norms = []
        for xb, yb in zip(x.split(batch_size), y_all.split(batch_size)):
            xb = xb.to(device)
            g = per_example(params, prepare(xb) if prepare is not None else xb, yb.to(device))
            sq = sum(t.flatten(1).double().pow(2).sum(1) for t in g.values())
            norms.append(sq.sqrt().cpu())
        model.train(was_training)
        per_model.append(torch.cat(norms))
    return torch.stack(per_model).mean(0).numpy()


def grand_last_layer(features: Tensor, logits: Tensor, labels: Tensor, *, bias: bool = True) -> np.ndarray:
    """Closed-form GraNd restricted to a final linear layer logits = W h + b.

    features h [N, D], logits [N, C], labels [N] -> ||p - y||_2 * sqrt(||h||^2 + 1{bias}) [N],
    since dL/dW = (p - y) h^T and dL/db = p - y for the cross-entropy loss.
    """
    h, z = torch.as_tensor(features).double(), torch.as_tensor(logits).double()
    y = torch.as_tensor(labels).long()
    err = (z.softmax(-1) - F.one_hot(y, z.shape[-1]).double()).norm(dim=-1)
    return (err * (h.pow(2).sum(-1) + float(bias)).sqrt()).numpy()
