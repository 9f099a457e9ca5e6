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
  is the last good one (it is only ever replaced atomically). Non-finite input data is refused
  before training, naming the dataset and rows.
- A last batch of a single image (N_train % batch_size == 1) would break BatchNorm (one value per
  channel at 1x1 maps, or with views=1): it is merged into the previous batch, so that epoch's
  last step has batch_size + 1 images.
- config.memory_bank = N > 0 keeps spreadcon.losses.MemoryBank(size=N): the loss is called with
  memory=bank and bank.push(z.detach(), labels) follows every step (the bank is checkpointed).
  Under torchrun every process pushes the gathered global batch (distributed.gather_global_batch),
  so every process holds the bank of a single-process run.
- Worst-group robustness (Sagawa et al. 2020; GEORGE's end model), with config.groups naming the
  groups (spreadcon.groups): objective "group_dro" makes the CE term the online Group DRO loss
  `group_dro_loss` over the labelled images' per-image CE (q <- q exp(eta (L_g + C / sqrt(n_g))),
  normalised, once per step; q is TrainState.group_weights, checkpointed, logged per epoch as
  `group_weights`); the contrastive term is unchanged. group_sampling draws each epoch's N
  training examples with replacement, with probability 1 / n_g (the "order" generator). With
  groups, validation logs `val_group_accuracy` and `val_worst_group_accuracy`, and
  config.selection "worst_group" keeps the epoch with the best worst val-group accuracy.
- config.init_from copies a run's (or a .pt's) encoder weights into the model before training;
  the CE head starts fresh (spreadcon.build.init_encoder).

The loop reads top-down as in DINO (train_dino / train_one_epoch): `train` -> `prepare` (every
check, nothing written) -> `runs.writing` (the folder's lock and reuse rule) -> `fit` (epochs:
`train_one_epoch`, `validate`, `end_epoch`) -> `finish`. The state a checkpoint holds is
`spreadcon.checkpoint.TrainState`.
"""

from __future__ import annotations

import math
import os
import random
import signal
import threading
import time
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spreadcon import distributed, progress, runs
from spreadcon.build import (build_dataset, build_loss, build_memory_bank, build_model, init_encoder,
                             resolve_device)
from spreadcon.checkpoint import TrainState, load_checkpoint, read_checkpoint, rng_state, save_checkpoint, set_rng_state
from spreadcon.config import TrainConfig
from spreadcon.data import StrataDataset, default_views
from spreadcon.evaluate.embed import memory_available, predict
from spreadcon.evaluate.metrics import group_accuracy
from spreadcon.evaluate.probes import fit_linear
from spreadcon.group_dro import group_dro_loss
from spreadcon.groups import Groups, build_groups, check_groups
from spreadcon.io import read_json, save_json, save_npy, save_text, save_torch
from spreadcon.models import Classifier
from spreadcon.models.finetune import param_groups, set_backbone_trainable

__all__ = ["Callback", "TrainState", "fit_probe", "lr_factor", "rng_state", "set_rng_state",
           "train", "train_one_epoch", "train_or_reuse", "train_step", "validate"]


class Callback(Protocol):
    """What the trainer calls on a callback; a callback may define either method or both (the
    trainer asks with hasattr). The state_dict / load_state_dict of a callback, when it has them,
    are checkpointed with the run."""

    def relabel(self, step: int, z: Tensor, labels: Tensor, index: Tensor) -> Tensor:
        """z [B, V, D] detached unit vectors, labels [B], index [B] -> the labels [B] the
        contrastive loss sees (e.g. noisy-label correction)."""
        ...

    def on_epoch_end(self, epoch: int, state: dict[str, Any]) -> None:
        """state = {"model", "metrics" (dict, may be updated), "run_dir", "epoch", "config", "dataset"}."""
        ...


# --- pieces -----------------------------------------------------------------------------
def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up over `warmup_steps`, then cosine from 1 to 0 at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup_steps) / span)))


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


# --- checks before any work ---------------------------------------------------------------
def check_shapes(model: Classifier, views, x: Tensor, config: TrainConfig, device: torch.device) -> None:
    """One eval-mode forward on two training images, so an encoder/dataset mismatch fails now."""
    try:
        predict(model, x[:2], prepare=views.prepare, batch_size=2, device=device)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"encoder {config.encoder!r} cannot take dataset {config.dataset!r} "
                         f"(inputs {list(x.shape[1:])}): {err}") from err


def check_finite_data(ds: StrataDataset, config: TrainConfig) -> None:
    """Refuse NaN / inf in the inputs, naming the dataset and rows (not "the encoder output")."""
    if not ds.x.is_floating_point():
        return
    bad = torch.nonzero(~torch.isfinite(ds.x.reshape(len(ds), -1)).all(1)).squeeze(1)
    if len(bad):
        raise ValueError(f"dataset {config.dataset!r} has NaN or inf values in the inputs x of {len(bad)} "
                         f"row(s) (first: {bad[:5].tolist()}; data_root={config.data_root}); "
                         f"clean or drop those rows before training")


def _memory_available(device: torch.device) -> int | None:
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[1])
    return memory_available()


def check_memory(config: TrainConfig, input_shape: tuple[int, ...], device: torch.device) -> None:
    """Refuse a batch_size x views whose step cannot fit, before anything large is allocated:
    a lower bound of the step's memory (float32 inputs and views, three [BV, BV] loss matrices)."""
    images = config.batch_size * config.views
    need = images * math.prod(input_shape) * 4 * 3 + (images ** 2) * 4 * 3
    have = _memory_available(device)
    if have is not None and need > have:
        raise ValueError(f"batch_size={config.batch_size} x views={config.views} needs at least "
                         f"{need / 2**30:.1f} GiB per step, more than the {have / 2**30:.1f} GiB of {device}; "
                         f"pass a smaller batch_size or views")


# --- what a run holds fixed ----------------------------------------------------------------
@dataclass
class TrainData:
    """The training split on the device (x, contrastive labels, CE targets, CE mask) and the
    validation split on the CPU."""

    x: Tensor
    y_con: Tensor
    y_ce: Tensor
    labelled: Tensor
    x_val: Tensor
    y_val: Tensor

    @property
    def n(self) -> int:
        return len(self.x)


def train_data(ds: StrataDataset, config: TrainConfig, device: torch.device) -> TrainData:
    rows = ds.rows("train")
    val = ds.rows("val")
    clean = ds.clean_label if (config.ce_labels == "clean" and ds.clean_label is not None) else ds.label
    labelled = ds.labelled[rows] if ds.labelled is not None else torch.ones(len(rows), dtype=torch.bool)
    return TrainData(x=ds.x[rows].to(device), y_con=ds.label[rows].to(device), y_ce=clean[rows].to(device),
                     labelled=labelled.to(device), x_val=ds.x[val], y_val=ds.label[val])


@dataclass
class Schedule:
    """Batches of one epoch: steps of batch_size images; a last batch of one image is merged
    into the previous one (BatchNorm cannot normalise a single value per channel)."""

    n: int
    batch_size: int
    epochs: int
    warmup_epochs: float

    @property
    def steps_per_epoch(self) -> int:
        steps = math.ceil(self.n / self.batch_size)
        return steps - 1 if steps > 1 and self.n % self.batch_size == 1 else steps

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    @property
    def warmup_steps(self) -> int:
        return min(self.total_steps, round(self.warmup_epochs * self.steps_per_epoch))

    def batch(self, perm: Tensor, b: int) -> Tensor:
        end = self.n if b == self.steps_per_epoch - 1 else (b + 1) * self.batch_size
        return perm[b * self.batch_size:end]


@dataclass
class StepContext:
    """What every step uses: the (maybe DDP-wrapped) model, the loss, views, config, autocast,
    the relabelling callbacks and the memory bank (None without one)."""

    model: nn.Module
    loss_fn: nn.Module | None
    views: Any
    config: TrainConfig
    autocast: Any = field(default_factory=nullcontext)
    relabelers: Sequence[Any] = ()
    bank: Any = None
    memory_format: torch.memory_format | None = None  # torch.channels_last under config.channels_last
    dro: Groups | None = None  # the groups of objective "group_dro" (None: the plain mean CE)


@dataclass
class Batch:
    """One batch of the training split: inputs, contrastive labels, CE targets, CE mask [B],
    and the positions in the train split [B]."""

    x: Tensor
    y_con: Tensor
    y_ce: Tensor
    labelled: Tensor
    idx: Tensor
    group: Tensor | None = None  # [B] compact group ids (spreadcon.groups), when the run has groups


@dataclass
class TrainRun:
    """Everything one train() call holds fixed."""

    config: TrainConfig
    run_dir: Path
    device: torch.device
    main: bool
    ds: StrataDataset
    data: TrainData
    schedule: Schedule
    ctx: StepContext
    model: Classifier
    callbacks: Sequence[Any] = ()
    writer: Any = None
    fingerprint: dict[str, Any] = field(default_factory=dict)  # runs.data_fingerprint(ds)
    groups: Groups | None = None   # config.groups, built and checked (spreadcon.groups)
    init: dict[str, Any] | None = None  # build.init_encoder's record of config.init_from


# --- the loop ---------------------------------------------------------------------------
def train(config: TrainConfig, callbacks: Sequence[Any] = (), *, resume: bool = False,
          overwrite: bool = False) -> Path:
    """Train per `config`; returns the run folder (see spreadcon.runs).

    An existing run in config.out_dir is refused unless resume=True (continue it: same config,
    runtime keys aside, and same data) or overwrite=True (delete its run files first). Under
    torchrun (WORLD_SIZE > 1) it trains with DDP: see spreadcon.distributed."""
    config.validate()
    owns_group = distributed.init_from_env()  # under torchrun: join the process group
    run = prepare(config, callbacks)          # every check; nothing written yet
    with runs.writing(config, run.fingerprint, resume=resume, overwrite=overwrite, main=run.main):
        state = new_state(run)
        if resume:
            resume_state(run, state)
        elif run.main:
            start_run_folder(run)
        fit(run, state)
        if run.main:
            finish(run, state)
        distributed.barrier()  # the run folder is complete when any process returns
    run_dir = run.run_dir
    del run, state  # the DDP wrapper goes before its process group
    if owns_group:  # after an error the group stays up, so the caller can still synchronise
        distributed.teardown()
    return run_dir


def prepare(config: TrainConfig, callbacks: Sequence[Any]) -> TrainRun:
    """Data, model, loss and step context, after every check that needs no run folder."""
    device = distributed.local_device(resolve_device(config.device))
    if config.protocol != "ce" and config.batch_size * distributed.get_world_size() < 2:
        warnings.warn(f"batch_size={config.batch_size}: each step contrasts one image's views with nothing else, "
                      f"so the contrastive loss is about 0 and teaches little; use batch_size >= 2 (the paper: 128)",
                      stacklevel=3)
    if config.freeze_backbone_epochs and distributed.get_world_size() > 1:
        raise ValueError("freeze_backbone_epochs is single-process for now (DDP fixes the trained parameters "
                         "when it wraps the model); pass freeze_backbone_epochs=0 under torchrun")
    if config.track_examples and config.protocol == "contrastive_then_probe":
        raise ValueError("track_examples needs a CE head during training: use protocol joint or ce")
    ds = build_dataset(config)
    check_finite_data(ds, config)
    check_memory(config, ds.input_shape, device)
    loss_fn = distributed.global_batch_loss(build_loss(config))  # contrast across all processes
    model = build_model(config, ds.input_shape, ds.num_classes)
    init = init_encoder(model, config)
    model = model.to(device)
    groups = run_groups(ds, config, device)
    memory_format = torch.channels_last if config.channels_last and ds.is_image else None
    if memory_format is not None:  # NHWC convolutions: faster for conv nets on most CPUs and GPUs
        model = model.to(memory_format=memory_format)
    views = default_views(ds, config.augment)
    data = train_data(ds, config, device)
    check_shapes(model, views, data.x, config, device)
    schedule = Schedule(data.n, config.batch_size, config.epochs, config.warmup_epochs)
    distributed.check_batches(data.n, config.batch_size)
    step_model = distributed.wrap_model(model, device, sync_batchnorm=config.sync_batchnorm,
                                        find_unused_parameters=config.protocol == "contrastive_then_probe")
    if config.compile is not None:  # the step compiles; checkpoints and evaluation keep the plain model
        backends = torch.compiler.list_backends(exclude_tags=())
        if config.compile not in backends:
            raise ValueError(f"compile={config.compile!r} is not a torch.compile backend; use one of {backends} "
                             f"(inductor on a GPU) or compile=none")
        step_model = torch.compile(step_model, backend=config.compile)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if config.amp and device.type == "cuda"
                else nullcontext())
    ctx = StepContext(step_model, loss_fn, views, config, autocast,
                      [cb for cb in callbacks if hasattr(cb, "relabel")], build_memory_bank(config, device),
                      memory_format, groups if config.objective == "group_dro" else None)
    return TrainRun(config, Path(config.out_dir), device, distributed.is_main_process(), ds, data,
                    schedule, ctx, model, callbacks, fingerprint=runs.data_fingerprint(ds), groups=groups,
                    init=init)


def run_groups(ds: StrataDataset, config: TrainConfig, device: torch.device) -> Groups | None:
    """config.groups built on the dataset as trained and checked for what the run uses them for
    (train ids on the device; val ids and counts on the CPU); None without groups."""
    if config.groups is None:
        return None
    if config.objective == "group_dro" and distributed.get_world_size() > 1:
        # each rank would update q from its own shard of the batch: the ranks' q would drift apart
        raise ValueError("objective=group_dro is single-process for now; run it without torchrun")
    groups = build_groups(ds, config.groups, adjustment=config.gdro_adjustment, dataset=config.dataset)
    check_groups(groups, robust=config.objective == "group_dro" or config.group_sampling,
                 worst_group=config.selection == "worst_group")
    groups.train = groups.train.to(device)
    return groups


def new_state(run: TrainRun) -> TrainState:
    """Optimiser, schedule and seeded random streams: the state at step 0."""
    config, sched = run.config, run.schedule
    # foreach: one kernel per op over all parameters instead of a Python loop (bit-identical to
    # the loop here, and the CUDA default already); fused is faster still but not bit-identical.
    params = (run.model.parameters() if config.backbone_lr_mult == 1.0 and config.freeze_backbone_epochs == 0
              else param_groups(run.model, config.lr, config.backbone_lr_mult))  # fine-tuning: two groups
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, foreach=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, sched.warmup_steps, sched.total_steps))
    torch.manual_seed(config.seed)
    np.random.seed(config.seed % 2**32)
    random.seed(config.seed)
    generators = {"order": torch.Generator().manual_seed(config.seed),
                  "views": torch.Generator(device=run.device).manual_seed(distributed.rank_seed(config.seed + 1))}
    q = None
    if run.ctx.dro is not None:  # Group DRO starts from uniform group weights (Sagawa et al.)
        g = run.ctx.dro.n_groups
        q = torch.full((g,), 1.0 / g, dtype=torch.float64, device=run.device)
    return TrainState(run.model, optimizer, scheduler, generators, group_weights=q)


def _extra_state(run: TrainRun) -> list[Any]:
    return [] if run.ctx.bank is None else [run.ctx.bank]


def resume_state(run: TrainRun, state: TrainState) -> None:
    load_checkpoint(run.run_dir / "checkpoint.pt", state, callbacks=run.callbacks, extra=_extra_state(run),
                    device=run.device)
    if not run.main:  # the checkpoint holds rank 0's augmentation stream
        state.generators["views"].manual_seed(distributed.rank_seed(run.config.seed + 1) + state.global_step)
    if run.main:
        runs.truncate_metrics(run.run_dir, state.epoch)
        runs.record_progress(run.run_dir, state.epoch)
        run.writer = tensorboard_writer(run.config, run.run_dir)


def start_run_folder(run: TrainRun) -> None:
    """config.json, run.json (with the data fingerprint), an empty metrics.jsonl."""
    save_text(run.config.to_json() + "\n", run.run_dir / "config.json")
    info = runs.run_info(run.config, run.device, run.ds, run.fingerprint, init_from=run.init,
                         groups=None if run.groups is None else run.groups.summary())
    save_json(info, run.run_dir / "run.json")
    save_text("", run.run_dir / "metrics.jsonl")
    run.writer = tensorboard_writer(run.config, run.run_dir)


def save_training_checkpoint(run: TrainRun, state: TrainState) -> None:
    if run.main:
        save_checkpoint(run.run_dir / "checkpoint.pt", state, callbacks=run.callbacks,
                        extra=_extra_state(run), config=run.config.to_dict())


def fit(run: TrainRun, state: TrainState) -> None:
    """The epochs from state.epoch to config.epochs; Ctrl-C saves a checkpoint and raises."""
    with deferred_sigint() as sigint:
        while state.epoch < run.config.epochs:
            epoch = state.epoch + 1
            if run.config.freeze_backbone_epochs:  # the heads alone for the first k epochs
                set_backbone_trainable(run.model, epoch > run.config.freeze_backbone_epochs)
            stats = train_one_epoch(run, state, sigint=sigint)
            if stats is None:
                save_training_checkpoint(run, state)
                raise KeyboardInterrupt(
                    f"interrupted at epoch {epoch}, step {state.step_in_epoch} of {run.schedule.steps_per_epoch}; "
                    f"checkpoint saved in {run.run_dir}; continue with resume")
            end_epoch(run, state, {**stats, **validate(run, state)})
            if sigint["stop"]:
                raise KeyboardInterrupt(f"interrupted after epoch {epoch}; checkpoint saved in {run.run_dir}")
    if run.writer is not None:
        run.writer.close()


def new_accumulators(config: TrainConfig, *, n: int, num_classes: int, embed_dim: int,
                     device: torch.device) -> dict[str, Tensor]:
    """An epoch's running sums (float64 scalars, on the device: no host sync per step)."""
    z = lambda *shape: torch.zeros(*shape, device=device, dtype=torch.float64)  # noqa: E731
    acc = {"loss": z(()), "contrastive": z(()), "ce": z(()), "correct": z(()), "seen": z(()),
           "images": z(()), "seconds": z(())}
    if config.protocol != "ce" and config.loss == "spread":
        acc["attract"], acc["repel"] = z(()), z(())
    if config.protocol == "contrastive_then_probe":
        acc["centre_sum"] = z(num_classes, embed_dim)
    if config.track_examples:
        acc["example_correct"] = torch.zeros(n, dtype=torch.bool, device=device)
    return acc


def train_one_epoch(run: TrainRun, state: TrainState, *, sigint: dict[str, bool]) -> dict[str, float] | None:
    """The rest of epoch state.epoch + 1; returns its averaged statistics (over all processes),
    or None when Ctrl-C stopped it between two steps."""
    epoch, sched, data = state.epoch + 1, run.schedule, run.data
    if state.perm is None:
        state.perm = epoch_order(run, state.generators["order"])
        state.acc = new_accumulators(run.config, n=data.n, num_classes=run.ds.num_classes,
                                     embed_dim=run.model.embed_dim, device=run.device)
    state.model.train()
    bar = progress.bar(sched.steps_per_epoch, desc=f"epoch {epoch}/{run.config.epochs}", initial=state.step_in_epoch,
                       enabled=run.config.progress)
    try:
        while state.step_in_epoch < sched.steps_per_epoch:
            t0 = time.perf_counter()
            idx = distributed.shard(sched.batch(state.perm, state.step_in_epoch).to(run.device))
            group = None if run.groups is None else run.groups.train[idx]
            batch = Batch(data.x[idx], data.y_con[idx], data.y_ce[idx], data.labelled[idx], idx, group)
            loss = train_step(run.ctx, batch, generator=state.generators["views"], step=state.global_step,
                              acc=state.acc, group_weights=state.group_weights)
            _check_finite_loss(float(loss), run, state)  # one host sync per step: NaN check + progress
            if run.config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(state.model.parameters(), run.config.grad_clip)
            state.optimizer.step()
            state.scheduler.step()
            seconds = time.perf_counter() - t0
            state.acc["seconds"] += seconds
            state.step_in_epoch += 1
            state.global_step += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss):.4f}", img_s=f"{len(idx) / max(seconds, 1e-9):.0f}", refresh=False)
            if sigint["stop"]:
                break
    finally:
        if bar is not None:
            bar.close()
    if state.step_in_epoch < sched.steps_per_epoch:
        return None
    distributed.reduce_sums(state.acc)  # epoch statistics over all processes
    return averaged_stats(epoch, state)


def epoch_order(run: TrainRun, generator: torch.Generator) -> Tensor:
    """The epoch's order of training rows [N_train]: a permutation, or under config.group_sampling
    N draws with replacement with probability 1 / n_g (Sagawa et al.'s --reweight_groups)."""
    if run.config.group_sampling:
        return torch.multinomial(run.groups.sampling_weights(), run.data.n, replacement=True, generator=generator)
    return torch.randperm(run.data.n, generator=generator)


def _check_finite_loss(value: float, run: TrainRun, state: TrainState) -> None:
    if math.isfinite(value):
        return
    raise FloatingPointError(
        f"loss is {value} at step {state.global_step + 1} (epoch {state.epoch + 1}, batch "
        f"{state.step_in_epoch + 1}); stopped before the update (the input data is finite: checked before "
        f"training). The last good checkpoint is {run.run_dir / 'checkpoint.pt'} (after epoch "
        f"{_saved_epoch(run.run_dir)}); try a lower lr or grad_clip")


def averaged_stats(epoch: int, state: TrainState) -> dict[str, float]:
    """epoch, lr and the per-image means of the epoch's sums (attract / repel under L_spread)."""
    acc = state.acc
    seen = float(acc["seen"])
    stats = {
        "epoch": epoch, "lr": state.optimizer.param_groups[0]["lr"],
        "loss": float(acc["loss"]) / seen, "contrastive": float(acc["contrastive"]) / seen,
        "ce": float(acc["ce"]) / seen, "train_acc": float(acc["correct"]) / seen,
        "images_per_s": float(acc["images"]) / max(float(acc["seconds"]), 1e-9),
    }
    for term in ("attract", "repel"):
        if term in acc:
            stats[term] = float(acc[term]) / seen
    return stats


def _contrastive_labels(ctx: StepContext, z: Tensor, batch: Batch, step: int) -> Tensor:
    labels = batch.y_con
    for cb in ctx.relabelers:
        labels = cb.relabel(step, z.detach(), labels, batch.idx)
        if labels.shape != (len(batch.idx),):
            raise ValueError(f"relabel returned labels of shape {tuple(labels.shape)}, expected ({len(batch.idx)},)")
    return labels


def _contrastive(ctx: StepContext, z: Tensor, labels: Tensor, acc: dict[str, Tensor]) -> Tensor:
    """The contrastive loss of z [B, V, D] (unit vectors); logs L_spread's two terms in `acc`."""
    memory = {} if ctx.bank is None else {"memory": ctx.bank}
    if "attract" not in acc:
        return ctx.loss_fn(z, labels, **memory)
    value, terms = ctx.loss_fn(z, labels, return_terms=True, **memory)
    acc["attract"] += terms["attract"].detach() * len(labels)
    acc["repel"] += terms["repel"].detach() * len(labels)
    return value


def _per_image_cross_entropy(logits: Tensor, batch: Batch) -> Tensor:
    """CE [B] of each image: over its V views (logits [B, V, K]), averaged over the views."""
    b, v = logits.shape[:2]
    per_view = F.cross_entropy(logits.flatten(0, 1), batch.y_ce.repeat_interleave(v), reduction="none")
    return per_view.view(b, v).mean(1)


def _cross_entropy(logits: Tensor, batch: Batch) -> Tensor:
    """CE averaged over views, then over the labelled images."""
    per_image = _per_image_cross_entropy(logits, batch)
    return (per_image * batch.labelled).sum() / batch.labelled.sum().clamp_min(1)


def _group_dro_cross_entropy(logits: Tensor, batch: Batch, dro: Groups, weights: Tensor, eta: float) -> Tensor:
    """The online Group DRO loss sum_g q_g L_g of the labelled images' per-image CE (float64 for q),
    with `weights` (q [G]) updated in place to this step's q (Sagawa et al. 2020, Algorithm 1)."""
    keep = batch.labelled
    per_image = _per_image_cross_entropy(logits, batch)[keep].double()
    loss, new_weights = group_dro_loss(per_image, batch.group[keep], weights, eta=eta,
                                       adjustment=dro.adjustment.to(weights.device))
    weights.copy_(new_weights)
    return loss.float()


def train_step(ctx: StepContext, batch: Batch, *, generator: torch.Generator, step: int,
               acc: dict[str, Tensor], group_weights: Tensor | None = None) -> Tensor:
    """Forward and backward for one batch (gradients left in the model for the optimiser);
    accumulates epoch statistics in `acc` without a host sync. Returns the detached loss.
    Under objective "group_dro" (ctx.dro set) the CE term is the Group DRO loss and
    `group_weights` (q [G], TrainState.group_weights) is updated in place."""
    config = ctx.config
    b, v = batch.x.shape[0], config.views
    xv = ctx.views(batch.x, v, generator).flatten(0, 1)             # [B*V, ...]
    if ctx.memory_format is not None:
        xv = xv.contiguous(memory_format=ctx.memory_format)
    with ctx.autocast:
        emb, logits = ctx.model(xv)                                 # [B*V, D], [B*V, K]
    emb = emb.float().view(b, v, -1)
    logits = logits.float().view(b, v, -1)
    loss = emb.new_zeros(())
    contrastive = ce = emb.new_zeros(())
    labels = batch.y_con
    if ctx.loss_fn is not None:
        z = F.normalize(emb, dim=-1)                                # [B, V, D] on the unit sphere
        labels = _contrastive_labels(ctx, z, batch, step)
        contrastive = _contrastive(ctx, z, labels, acc)
        loss = loss + config.contrastive_weight * contrastive
    if config.protocol != "contrastive_then_probe":
        ce = (_cross_entropy(logits, batch) if ctx.dro is None
              else _group_dro_cross_entropy(logits, batch, ctx.dro, group_weights, config.gdro_eta))
        loss = loss + config.ce_weight * ce
    ctx.model.zero_grad(set_to_none=True)
    loss.backward()
    if ctx.bank is not None:  # the global batch on every process: identical banks (see spreadcon.distributed)
        ctx.bank.push(*distributed.gather_global_batch(z.detach(), labels))
    _accumulate(acc, batch, emb=emb, logits=logits, losses=(loss, contrastive, ce))
    return loss.detach()


@torch.no_grad()
def _accumulate(acc: dict[str, Tensor], batch: Batch, *, emb: Tensor, logits: Tensor,
                losses: tuple[Tensor, Tensor, Tensor]) -> None:
    b = len(batch.idx)
    loss, contrastive, ce = losses
    correct = logits[:, 0].argmax(-1) == batch.y_ce               # first view, CE head
    acc["loss"] += loss.detach() * b
    acc["contrastive"] += contrastive.detach() * b
    acc["ce"] += ce.detach() * b
    acc["correct"] += correct.sum()
    acc["seen"] += b
    acc["images"] += b
    if "centre_sum" in acc:
        acc["centre_sum"].index_add_(0, batch.y_con, F.normalize(emb[:, 0].detach(), dim=-1).double())
    if "example_correct" in acc:
        acc["example_correct"][batch.idx] = correct


@torch.no_grad()
def validate(run: TrainRun, state: TrainState) -> dict[str, float]:
    """val_acc of this epoch's model (once per epoch): the CE head, or under contrastive_then_probe
    the nearest centre of this epoch's training embeddings (then train_acc is NaN). Without a
    validation split (dataset option val_fraction=0) val_acc is NaN and the last epoch is the best."""
    if len(run.data.y_val) == 0:
        return {"val_acc": float("nan")}
    emb, logits = predict(state.model, run.data.x_val, prepare=run.ctx.views.prepare,
                          batch_size=run.config.eval_batch_size, device=run.device)
    out: dict[str, float] = {}
    if "centre_sum" in state.acc:
        centres = F.normalize(state.acc["centre_sum"].float().cpu(), dim=-1)
        pred = (F.normalize(emb, dim=-1) @ centres.T).argmax(-1)
        out["train_acc"] = float("nan")
    else:
        pred = logits.argmax(-1)
    y_val = run.data.y_val
    out["val_acc"] = float((pred == y_val).float().mean()) if len(y_val) else float("nan")
    if run.groups is not None:
        out.update(group_val_metrics(pred, y_val, run.groups))
    return out


def group_val_metrics(pred: Tensor, y_val: Tensor, groups: Groups) -> dict[str, Any]:
    """val_group_accuracy {group id: accuracy} (groups with val members) and its minimum,
    val_worst_group_accuracy."""
    names = groups.names()  # the source's ids of the compact ids 0..G-1
    scored = {names[g]: a for g, a in group_accuracy(pred, y_val, groups.val).items()}
    return {"val_group_accuracy": scored, "val_worst_group_accuracy": min(scored.values(), default=float("nan"))}


def end_epoch(run: TrainRun, state: TrainState, metrics: dict[str, Any]) -> None:
    """Model selection, kept checkpoints, callbacks, metrics.jsonl and TensorBoard, then the
    checkpoint and run.json's epochs_trained (in that order: a crash leaves a resumable folder)."""
    epoch, run_dir, main = metrics["epoch"], run.run_dir, run.main
    if run.config.track_examples:
        state.history.append(state.acc["example_correct"].cpu())
        if main:
            save_npy(torch.stack(state.history).numpy(), run_dir / "example_correct.npy")
    if state.group_weights is not None:
        metrics["group_weights"] = dict(zip(run.groups.names(), state.group_weights.cpu().tolist()))
    no_val = len(run.data.y_val) == 0  # model selection needs a val split: without one, the last epoch
    score = metrics.get("val_worst_group_accuracy" if run.config.selection == "worst_group" else "val_acc",
                        float("nan"))
    metrics["best"] = no_val or score > state.best_val or state.best_epoch == 0
    if metrics["best"]:
        state.best_val, state.best_epoch = score, epoch
        if main:
            save_torch({"model": state.model.state_dict(), "epoch": epoch, "val_acc": metrics["val_acc"],
                             "selected_by": run.config.selection, "score": score}, run_dir / "best.pt")
    if epoch in run.config.keep_checkpoints and main:
        save_torch({"model": state.model.state_dict(), "epoch": epoch}, run_dir / f"ckpt_epoch{epoch}.pt")
    view = {"model": state.model, "metrics": metrics, "run_dir": run_dir, "epoch": epoch,
            "config": run.config, "dataset": run.ds}
    for cb in run.callbacks:
        if hasattr(cb, "on_epoch_end"):
            cb.on_epoch_end(epoch, view)
    if main:
        runs.append_metrics(run_dir, metrics)
        progress.line(epoch_line(metrics, run.config.epochs), enabled=run.config.progress)
    if run.writer is not None:
        for key, value in metrics.items():
            if isinstance(value, (int, float)):
                run.writer.add_scalar(key, value, epoch)
    state.epoch, state.step_in_epoch, state.perm, state.acc = epoch, 0, None, None
    save_training_checkpoint(run, state)
    if main:
        runs.record_progress(run_dir, epoch)


def _saved_epoch(run_dir: Path) -> int | str:
    path = run_dir / "checkpoint.pt"
    if not path.exists():
        return "none saved yet"
    return read_checkpoint(path)["position"]["epoch"]


def epoch_line(metrics: dict[str, Any], epochs: int) -> str:
    """One line of an epoch's metrics, for a log file: "epoch 3/30: loss 5.71, ce 0.12, val_acc 0.975, ..."."""
    keys = ("loss", "contrastive", "ce", "train_acc", "val_acc", "val_worst_group_accuracy", "images_per_s")
    shown = ", ".join(f"{k} {metrics[k]:.4g}" for k in keys if isinstance(metrics.get(k), (int, float)))
    return f"epoch {metrics['epoch']}/{epochs}: {shown}" + (" (best so far)" if metrics.get("best") else "")


def finish(run: TrainRun, state: TrainState) -> None:
    """Load the best model; under contrastive_then_probe fit the CE head as a linear probe on the
    frozen encoder; cache embeddings of every split; mark run.json finished."""
    model, config = state.model, run.config
    best = read_checkpoint(run.run_dir / "best.pt")
    model.load_state_dict(best["model"])
    if config.protocol == "contrastive_then_probe" and not best.get("probed", False):
        fit_probe(model, run.ds, run.ctx.views, config, run.device)
        save_torch({**best, "model": model.state_dict(), "probed": True}, run.run_dir / "best.pt")
    runs.write_embeddings(model, run.ds, run.run_dir, config.eval_batch_size, run.device)
    model.eval()
    runs.record_progress(run.run_dir, state.epoch, finished=True)


def fit_probe(model: Classifier, ds: StrataDataset, views, config: TrainConfig, device: torch.device) -> None:
    """Set model.head to a linear probe on frozen, un-augmented train embeddings (CE targets of
    the labelled examples; AdamW with config.probe_lr for config.probe_epochs, seeded)."""
    rows = ds.rows("train")
    emb, _, h = predict(model, ds.x[rows], prepare=views.prepare, batch_size=config.eval_batch_size, device=device,
                        features=True)
    emb = h if model.head_input == "h" else emb
    target = (ds.clean_label if config.ce_labels == "clean" and ds.clean_label is not None else ds.label)[rows]
    if ds.labelled is not None:
        emb, target = emb[ds.labelled[rows]], target[ds.labelled[rows]]
    layer = fit_linear(emb, target, ds.num_classes, epochs=config.probe_epochs, lr=config.probe_lr,
                       batch_size=config.batch_size, seed=config.seed)
    model.head.load_state_dict({k: v.to(device) for k, v in layer.state_dict().items()})


# --- the one reuse rule ----------------------------------------------------------------------
def train_or_reuse(config: TrainConfig, callbacks: Sequence[Any] = ()) -> Path:
    """The one run-reuse rule: config.out_dir holding a finished run with the same config
    (RUNTIME_KEYS aside) and the same data -> reuse it; an unfinished run with the same config ->
    resume it; an empty folder -> train; anything else -> ValueError saying what differs."""
    run_dir = Path(config.out_dir)
    found = runs.run_files(run_dir) if run_dir.is_dir() else []
    if not found:
        return train(config, callbacks)
    if not (run_dir / "config.json").exists():
        raise ValueError(f"{run_dir} holds run files ({', '.join(found)}) but no config.json; "
                         f"remove the folder or choose another out_dir")
    runs.check_same_config(config, run_dir, "reuse")
    if runs.run_status(run_dir).finished:
        info = read_json(run_dir / "run.json")
        runs.check_same_data(run_dir, info, runs.data_fingerprint(build_dataset(config)), "reuse")
        return run_dir
    if not (run_dir / "checkpoint.pt").exists():  # stopped before its first epoch ended: restart
        return train(config, callbacks, overwrite=True)
    return train(config, callbacks, resume=True)
