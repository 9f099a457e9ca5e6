"""The training loop: a contrastive loss jointly with a cross-entropy head, resumable bit for bit.

    run_dir = train(TrainConfig(dataset="digits", encoder="cnn-test", loss="spread", epochs=2))

One step, for a batch of B training images (indices drawn from a seeded permutation):

    v   = views(x[idx], V, aug_generator)        # [B, V, C, H, W] augmented views (batched ops)
    e   = encoder(v.flatten(0, 1))               # [B*V, D] the encoder output
    z   = normalize(e).view(B, V, D)             # what the contrastive loss sees
    logits = head(e).view(B, V, K)               # the CE head reads the same (unnormalised) output
    loss = contrastive_weight * L(z, labels) + ce_weight * CE(logits, targets)[labelled]

Protocols (config.protocol):
- "joint": the paper's ViT protocol (contrastive + CE head, optimised together).
- "contrastive_then_probe": the paper's ResNet protocol: contrastive loss alone; model selection
  by a nearest-class-centre classifier on the encoder output (centres of the epoch's training
  embeddings); then the CE head is fit as a linear probe on the frozen best encoder.
- "ce": cross-entropy alone (the L_CE baseline).

Choices:
- The CE head sees all V views of each image (each view is an augmented sample of the same
  label); its loss is averaged over views, then over the labelled images of the batch (a batch
  without labelled images contributes 0). Its targets are the clean labels when the data has
  label noise (config.ce_labels="clean", the paper's noisy-label setting: noise only on the
  contrastive head's labels), else ds.label.
- Per-example correctness (config.track_examples) is the CE head's prediction on the example's
  first augmented view during the epoch (Toneva et al. 2019 count presentations during training).
- `index` given to callbacks and the columns of example_correct.npy are positions in the train
  split of the dataset as trained (`load_run(run_dir).dataset.get_split("train")`).
- Ctrl-C (SIGINT) lets the current step finish, saves a checkpoint and raises KeyboardInterrupt;
  a second Ctrl-C stops at once. Resuming from any checkpoint continues bit-identically on the CPU.
- A non-finite loss raises FloatingPointError before the optimiser step; the checkpoint on disk
  is the last good one (it is only ever replaced atomically).
"""

from __future__ import annotations

import json
import math
import random
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from spreadcon import distributed, runs
from spreadcon.config import TrainConfig


class Callback(Protocol):
    """Both methods are optional.

    relabel(step, z [B, V, D] detached unit vectors, labels [B], index [B]) -> labels [B]
        the labels the contrastive loss sees (e.g. noisy-label correction)
    on_epoch_end(epoch, state) -> None; state = {"model", "metrics" (dict, may be updated),
        "run_dir", "epoch", "config", "dataset"}
    """


# --- pieces -----------------------------------------------------------------------------
def build_loss(config: TrainConfig) -> torch.nn.Module | None:
    """The contrastive loss module named by config.loss (None under protocol "ce")."""
    if config.protocol == "ce":
        return None
    from spreadcon.losses import LOSSES

    if config.loss not in LOSSES:
        raise ValueError(f"unknown loss {config.loss!r}; known losses: {sorted(LOSSES)} "
                         f"(or protocol=ce for cross-entropy alone)")
    kwargs: dict[str, Any] = {"temperature": config.temperature, **config.loss_options}
    if config.loss == "spread":
        kwargs["alpha"] = config.alpha
    return LOSSES[config.loss](**kwargs)


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up over `warmup_steps`, then cosine from 1 to 0 at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup_steps) / span)))


def rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
             **{k: g.get_state() for k, g in generators.items()}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    for k, g in generators.items():
        g.set_state(state[k])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def deferred_sigint() -> Iterator[dict[str, bool]]:
    """Turn the first Ctrl-C into a flag (checked between steps); a second one interrupts at once."""
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):  # noqa: ARG001
        flag["stop"] = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def tensorboard_writer(config: TrainConfig, run_dir: Path):
    if not config.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def check_shapes(model: runs.Classifier, views, x: Tensor, config: TrainConfig, device: torch.device) -> None:
    """One eval-mode forward on two training images, so an encoder/dataset mismatch fails now."""
    try:
        runs.predict(model, views.prepare, x[:2], 2, device)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"encoder {config.encoder!r} cannot take dataset {config.dataset!r} "
                         f"(inputs {list(x.shape[1:])}): {err}") from err


# --- the loop ---------------------------------------------------------------------------
def train(config: TrainConfig, callbacks: Sequence[Any] = (), *, resume: bool = False) -> Path:
    """Train per `config`; returns the run folder (see spreadcon.runs). resume=True continues
    the run in config.out_dir, refusing if its saved config differs (runtime keys aside).
    Under torchrun (WORLD_SIZE > 1) it trains with DDP: see spreadcon.distributed."""
    from spreadcon.data.views import default_views

    config.validate()
    owns_group = distributed.init_from_env()  # under torchrun: join the process group
    main = distributed.is_main_process()      # only rank 0 writes the run folder
    run_dir = Path(config.out_dir)
    device = distributed.local_device(runs.resolve_device(config.device))
    if config.track_examples and config.protocol == "contrastive_then_probe":
        raise ValueError("track_examples needs a CE head during training: use protocol joint or ce")

    # Everything that can be wrong is checked before the first step.
    ds = runs.build_dataset(config)
    loss_fn = distributed.global_batch_loss(build_loss(config))  # contrast across all processes
    model = runs.build_model(config, ds.input_shape, ds.num_classes).to(device)
    views = default_views(ds)
    if main:
        runs.check_out_dir(run_dir)
    runs.check_resume(config, run_dir, resume)
    distributed.barrier()  # no process starts writing before all have checked the folder

    train_rows = torch.nonzero(ds.split == 0).squeeze(1)
    val_rows = torch.nonzero(ds.split == 1).squeeze(1)
    x_train = ds.x[train_rows].to(device)
    check_shapes(model, views, x_train, config, device)
    y_con = ds.label[train_rows].to(device)                        # contrastive labels (maybe noisy)
    clean = ds.clean_label if (config.ce_labels == "clean" and ds.clean_label is not None) else ds.label
    y_ce = clean[train_rows].to(device)                            # CE targets
    labelled = (ds.labelled[train_rows] if ds.labelled is not None
                else torch.ones(len(train_rows), dtype=torch.bool)).to(device)
    x_val, y_val = ds.x[val_rows], ds.label[val_rows]
    n, k = len(train_rows), ds.num_classes
    steps_per_epoch = math.ceil(n / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = min(total_steps, round(config.warmup_epochs * steps_per_epoch))
    distributed.check_batches(n, config.batch_size)
    step_model = distributed.wrap_model(model, device, sync_batchnorm=config.sync_batchnorm,
                                        find_unused_parameters=config.protocol == "contrastive_then_probe")

    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, warmup_steps, total_steps))
    torch.manual_seed(config.seed)
    np.random.seed(config.seed % 2**32)
    random.seed(config.seed)
    generators = {"order": torch.Generator().manual_seed(config.seed),
                  "views": torch.Generator(device=device).manual_seed(distributed.rank_seed(config.seed + 1))}
    relabelers = [cb for cb in callbacks if hasattr(cb, "relabel")]
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if config.amp and device.type == "cuda"
                else nullcontext())

    # The position in training: everything a checkpoint must hold to continue bit-identically.
    pos: dict[str, Any] = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "perm": None,
                           "best_val": -1.0, "best_epoch": 0, "history": [], "acc": None}
    if resume:
        ckpt = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        pos = ckpt["position"]
        pos["acc"] = None if pos["acc"] is None else {a: t.to(device) for a, t in pos["acc"].items()}
        set_rng_state(ckpt["rng"], generators)
        if not main:  # the checkpoint holds rank 0's augmentation stream
            generators["views"].manual_seed(distributed.rank_seed(config.seed + 1) + pos["global_step"])
        for cb, state in zip(callbacks, ckpt.get("callbacks", [])):
            if state is not None and hasattr(cb, "load_state_dict"):
                cb.load_state_dict(state)
        if main:
            runs.truncate_metrics(run_dir, pos["epoch"])
    elif main:
        runs.save_text(config.to_json() + "\n", run_dir / "config.json")
        runs.save_text(json.dumps(runs.run_info(config, device, ds.summary()), indent=2) + "\n",
                       run_dir / "run.json")
        runs.save_text("", run_dir / "metrics.jsonl")
    writer = tensorboard_writer(config, run_dir) if main else None

    def checkpoint(path: Path) -> None:
        if not main:
            return
        cpu_pos = dict(pos)
        cpu_pos["acc"] = None if pos["acc"] is None else {a: t.cpu() for a, t in pos["acc"].items()}
        runs.save_torch({
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "position": cpu_pos, "rng": rng_state(generators),
            "callbacks": [cb.state_dict() if hasattr(cb, "state_dict") else None for cb in callbacks],
            "config": config.to_dict(),
        }, path)

    def new_accumulators() -> dict[str, Tensor]:
        z = lambda *shape: torch.zeros(*shape, device=device, dtype=torch.float64)  # noqa: E731
        acc = {"loss": z(()), "contrastive": z(()), "ce": z(()), "correct": z(()), "seen": z(()),
               "images": z(()), "seconds": z(())}
        if config.protocol != "ce" and config.loss == "spread":
            acc["attract"], acc["repel"] = z(()), z(())
        if config.protocol == "contrastive_then_probe":
            acc["centre_sum"] = z(k, model.encoder.embed_dim)
        if config.track_examples:
            acc["example_correct"] = torch.zeros(n, dtype=torch.bool, device=device)
        return acc

    with deferred_sigint() as sigint:
        while pos["epoch"] < config.epochs:
            epoch = pos["epoch"] + 1
            if pos["perm"] is None:
                pos["perm"] = torch.randperm(n, generator=generators["order"])
                pos["acc"] = new_accumulators()
            acc = pos["acc"]
            model.train()
            bar = _progress(config, epoch, steps_per_epoch, pos["step_in_epoch"])
            while pos["step_in_epoch"] < steps_per_epoch:
                b = pos["step_in_epoch"]
                t0 = time.perf_counter()
                idx = pos["perm"][b * config.batch_size:(b + 1) * config.batch_size].to(device)
                idx = distributed.shard(idx)  # this process's part of the global batch
                terms = _step(step_model, loss_fn, views, config, autocast, generators["views"], relabelers,
                              pos["global_step"], x_train[idx], y_con[idx], y_ce[idx], labelled[idx], idx, acc)
                loss_value = float(terms["loss"])  # one host sync per step: NaN check + progress
                if not math.isfinite(loss_value):
                    raise FloatingPointError(
                        f"loss is {loss_value} at step {pos['global_step'] + 1} (epoch {epoch}, batch {b + 1}); "
                        f"stopped before the update. The last good checkpoint is {run_dir / 'checkpoint.pt'} "
                        f"(after epoch {_saved_epoch(run_dir)}); try a lower lr or grad_clip")
                if config.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                scheduler.step()
                seconds = time.perf_counter() - t0
                acc["seconds"] += seconds
                pos["step_in_epoch"] += 1
                pos["global_step"] += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_value:.4f}", img_s=f"{len(idx) / max(seconds, 1e-9):.0f}", refresh=False)
                if sigint["stop"]:
                    break
            if bar is not None:
                bar.close()
            if sigint["stop"]:
                checkpoint(run_dir / "checkpoint.pt")
                raise KeyboardInterrupt(f"interrupted at epoch {epoch}, step {pos['step_in_epoch']} of "
                                        f"{steps_per_epoch}; checkpoint saved in {run_dir}; continue with resume")

            # end of epoch: validation, model selection, metrics, checkpoints
            distributed.reduce_sums(acc)  # epoch statistics over all processes
            metrics = _epoch_metrics(epoch, acc, optimizer, model, views, x_val, y_val, config, device)
            if config.track_examples:
                pos["history"].append(acc["example_correct"].cpu())
                if main:
                    runs.save_npy(torch.stack(pos["history"]).numpy(), run_dir / "example_correct.npy")
            metrics["best"] = metrics["val_acc"] > pos["best_val"] or pos["best_epoch"] == 0
            if metrics["best"]:
                pos["best_val"], pos["best_epoch"] = metrics["val_acc"], epoch
                if main:
                    runs.save_torch({"model": model.state_dict(), "epoch": epoch, "val_acc": metrics["val_acc"]},
                                    run_dir / "best.pt")
            if epoch in config.keep_checkpoints and main:
                runs.save_torch({"model": model.state_dict(), "epoch": epoch}, run_dir / f"ckpt_epoch{epoch}.pt")
            state = {"model": model, "metrics": metrics, "run_dir": run_dir, "epoch": epoch,
                     "config": config, "dataset": ds}
            for cb in callbacks:
                if hasattr(cb, "on_epoch_end"):
                    cb.on_epoch_end(epoch, state)
            if main:
                runs.append_metrics(run_dir, metrics)
            if writer is not None:
                for key, value in metrics.items():
                    if isinstance(value, (int, float)):
                        writer.add_scalar(key, value, epoch)
            pos.update(epoch=epoch, step_in_epoch=0, perm=None, acc=None)
            checkpoint(run_dir / "checkpoint.pt")
            if sigint["stop"]:
                raise KeyboardInterrupt(f"interrupted after epoch {epoch}; checkpoint saved in {run_dir}")

    if writer is not None:
        writer.close()
    if main:
        _finish(model, ds, views, config, run_dir, device, pos)
    distributed.barrier()  # the run folder is complete when any process returns
    if owns_group:
        distributed.teardown()
    return run_dir


def _saved_epoch(run_dir: Path) -> int | str:
    path = run_dir / "checkpoint.pt"
    if not path.exists():
        return "none saved yet"
    return torch.load(path, map_location="cpu", weights_only=False)["position"]["epoch"]


def _progress(config: TrainConfig, epoch: int, total: int, initial: int):
    if not config.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=f"epoch {epoch}/{config.epochs}", unit="step",
                leave=False, dynamic_ncols=True)


def _step(model, loss_fn, views, config: TrainConfig, autocast, gen: torch.Generator, relabelers,
          step: int, x: Tensor, y_con: Tensor, y_ce: Tensor, labelled: Tensor, idx: Tensor,
          acc: dict[str, Tensor]) -> dict[str, Tensor]:
    """Forward and backward for one batch; accumulates epoch statistics in `acc` (no host sync)."""
    b, v = x.shape[0], config.views
    xv = views(x, v, gen)                                           # [B, V, ...]
    with autocast:
        emb, logits = model(xv.flatten(0, 1))                       # [B*V, D], [B*V, K]
    emb = emb.float().view(b, v, -1)
    logits = logits.float().view(b, v, -1)
    loss = emb.new_zeros(())
    contrastive = ce = emb.new_zeros(())
    if loss_fn is not None:
        z = F.normalize(emb, dim=-1)                                # [B, V, D] on the unit sphere
        labels = y_con
        for cb in relabelers:
            labels = cb.relabel(step, z.detach(), labels, idx)
            if labels.shape != (b,):
                raise ValueError(f"relabel returned labels of shape {tuple(labels.shape)}, expected ({b},)")
        if "attract" in acc:  # L_spread: also log its two terms
            contrastive, terms = loss_fn(z, labels, return_terms=True)
            acc["attract"] += terms["attract"].detach() * b
            acc["repel"] += terms["repel"].detach() * b
        else:
            contrastive = loss_fn(z, labels)
        loss = loss + config.contrastive_weight * contrastive
    if config.protocol != "contrastive_then_probe":
        per_view = F.cross_entropy(logits.flatten(0, 1), y_ce.repeat_interleave(v), reduction="none")
        per_image = per_view.view(b, v).mean(1)
        ce = (per_image * labelled).sum() / labelled.sum().clamp_min(1)
        loss = loss + config.ce_weight * ce
    model.zero_grad(set_to_none=True)
    loss.backward()

    with torch.no_grad():
        correct = logits[:, 0].argmax(-1) == y_ce                   # first view, CE head
        acc["loss"] += loss.detach() * b
        acc["contrastive"] += contrastive.detach() * b
        acc["ce"] += ce.detach() * b
        acc["correct"] += correct.sum()
        acc["seen"] += b
        acc["images"] += b
        if "centre_sum" in acc:
            acc["centre_sum"].index_add_(0, y_con, F.normalize(emb[:, 0].detach(), dim=-1).double())
        if "example_correct" in acc:
            acc["example_correct"][idx] = correct
    return {"loss": loss.detach()}


@torch.no_grad()
def _epoch_metrics(epoch: int, acc: dict[str, Tensor], optimizer, model, views, x_val: Tensor, y_val: Tensor,
                   config: TrainConfig, device: torch.device) -> dict[str, Any]:
    seen = float(acc["seen"])
    metrics: dict[str, Any] = {
        "epoch": epoch, "lr": optimizer.param_groups[0]["lr"],
        "loss": float(acc["loss"]) / seen, "contrastive": float(acc["contrastive"]) / seen,
        "ce": float(acc["ce"]) / seen, "train_acc": float(acc["correct"]) / seen,
        "images_per_s": float(acc["images"]) / max(float(acc["seconds"]), 1e-9),
    }
    for term in ("attract", "repel"):
        if term in acc:
            metrics[term] = float(acc[term]) / seen
    emb, logits = runs.predict(model, views.prepare, x_val, config.eval_batch_size, device)
    if "centre_sum" in acc:  # contrastive_then_probe: nearest class centre of this epoch's embeddings
        centres = F.normalize(acc["centre_sum"].float().cpu(), dim=-1)
        pred = (F.normalize(emb, dim=-1) @ centres.T).argmax(-1)
        metrics["train_acc"] = float("nan")
    else:
        pred = logits.argmax(-1)
    metrics["val_acc"] = float((pred == y_val).float().mean()) if len(y_val) else float("nan")
    return metrics


def _finish(model, ds, views, config: TrainConfig, run_dir: Path, device: torch.device, pos: dict) -> None:
    """Load the best model; under contrastive_then_probe fit the CE head as a linear probe on the
    frozen encoder; cache embeddings of every split."""
    best = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=False)
    model.load_state_dict(best["model"])
    if config.protocol == "contrastive_then_probe" and not best.get("probed", False):
        fit_probe(model, ds, views, config, device)
        runs.save_torch({**best, "model": model.state_dict(), "probed": True}, run_dir / "best.pt")
    runs.write_embeddings(model, ds, run_dir, config.eval_batch_size, device)
    model.eval()


def fit_probe(model: runs.Classifier, ds, views, config: TrainConfig, device: torch.device) -> None:
    """Set model.head to a linear probe on frozen, un-augmented train embeddings (CE targets of
    the labelled examples; AdamW with config.probe_lr for config.probe_epochs, seeded)."""
    from spreadcon.evaluate.probes import fit_linear

    rows = torch.nonzero(ds.split == 0).squeeze(1)
    emb, _ = runs.predict(model, views.prepare, ds.x[rows], config.eval_batch_size, device)
    target = (ds.clean_label if config.ce_labels == "clean" and ds.clean_label is not None else ds.label)[rows]
    if ds.labelled is not None:
        emb, target = emb[ds.labelled[rows]], target[ds.labelled[rows]]
    layer = fit_linear(emb, target, ds.num_classes, epochs=config.probe_epochs, lr=config.probe_lr,
                       batch_size=config.batch_size, seed=config.seed)
    model.head.load_state_dict({k: v.to(device) for k, v in layer.state_dict().items()})
