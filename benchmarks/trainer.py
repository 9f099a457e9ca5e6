"""Trainer throughput against a bare PyTorch loop doing the same work, and what each CPU speed
option buys, side by side in one run.

    python benchmarks/trainer.py                      # the demo recipe (mnist5k-coarse, cnn-digits + projection head)
    python benchmarks/trainer.py --threads 1 --options  # + before/after: AdamW loop/foreach/fused, NHWC, torch.compile
    python benchmarks/trainer.py --encoder cnn-test --dataset digits --epochs 4 --threads 1

Both loops start from the same weights and draw the same batches and the same augmented views
(same seeded generators), run the same forward (encoder, L2-normalise, L_spread, CE head on every
view), backward and AdamW + cosine step. The bare loop does nothing else; the trainer also does
everything it does in real use: per-step NaN check and progress statistics, per-epoch validation,
metrics.jsonl, atomic checkpoints, best.pt. Throughput is training images per second of wall time
over whole epochs (the first epoch of each is warm-up, and with torch.compile also the compile,
and is not counted); the variants alternate for `--rounds` rounds so that machine load hits all
alike. Target: trainer >= 90% of the bare loop.

`--options` measures the bare loop from PyTorch's CPU defaults ("before": AdamW's per-parameter
loop, NCHW, eager) through each option the trainer uses or offers ("after": foreach AdamW, the
trainer's default; fused AdamW; channels_last; torch.compile with inductor), and the trainer
with the options it exposes (TrainConfig.channels_last, TrainConfig.compile).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import shutil
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from spreadcon.config import TrainConfig
from spreadcon.data.views import default_views
from spreadcon.experiments.recipes import SMALL_TRAIN
from spreadcon.build import build_dataset, build_loss, build_model, resolve_device
from spreadcon.train import lr_factor, train


class EpochClock:
    """Callback: wall time at the end of each epoch."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_epoch_end(self, epoch, state) -> None:
        self.times.append(time.perf_counter())


def trainer_throughput(config: TrainConfig, n_train: int) -> float:
    shutil.rmtree(config.out_dir, ignore_errors=True)
    clock = EpochClock()
    train(config, callbacks=[clock])
    # epoch k's wall time = between epoch ends k-1 and k (it includes epoch k-1's checkpoint write)
    spans = [b - a for a, b in zip(clock.times, clock.times[1:])]
    return n_train * len(spans) / sum(spans)


def bare_throughput(config: TrainConfig, optimizer: str = "foreach") -> float:
    """The same computation in a plain loop; optimizer: AdamW as a per-parameter "loop" (PyTorch's
    CPU default), "foreach" (the trainer's) or "fused"."""
    device = resolve_device(config.device)
    ds = build_dataset(config)
    model = build_model(config, ds.input_shape, ds.num_classes).to(device)
    fmt = torch.channels_last if config.channels_last and ds.is_image else torch.contiguous_format
    model = model.to(memory_format=fmt)
    step_model = model if config.compile is None else torch.compile(model, backend=config.compile)
    loss_fn = build_loss(config)
    views = default_views(ds)
    rows = torch.nonzero(ds.split == 0).squeeze(1)
    x, y = ds.x[rows].to(device), ds.label[rows].to(device)
    n, b, v = len(rows), config.batch_size, config.views
    steps = math.ceil(n / b)
    total = steps * config.epochs
    warmup = round(config.warmup_epochs * steps)
    kind = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}[optimizer]
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, **kind)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, warmup, total))
    order = torch.Generator().manual_seed(config.seed)
    gen = torch.Generator(device=device).manual_seed(config.seed + 1)
    model.train()
    ends = []
    for _ in range(config.epochs):
        for idx in torch.randperm(n, generator=order).split(b):
            idx = idx.to(device)
            xv = views(x[idx], v, gen).flatten(0, 1).contiguous(memory_format=fmt)
            emb, logits = step_model(xv)
            emb = emb.view(len(idx), v, -1)
            loss = (config.contrastive_weight * loss_fn(F.normalize(emb, dim=-1), y[idx])
                    + config.ce_weight * F.cross_entropy(logits, y[idx].repeat_interleave(v)))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        ends.append(time.perf_counter())
    spans = [b2 - a for a, b2 in zip(ends, ends[1:])]
    return n * len(spans) / sum(spans)


def variants(config: TrainConfig, options: bool) -> dict[str, tuple[str, callable]]:
    """name -> (settings in words, a function measuring img/s)."""
    n_train = len(build_dataset(config).rows("train"))
    base = dataclasses.replace(config, channels_last=False, compile=None)
    nhwc = dataclasses.replace(base, channels_last=True)
    compiled = dataclasses.replace(base, compile="inductor")
    if not options:
        return {"bare PyTorch": ("", lambda: bare_throughput(config)),
                "spreadcon.train": ("", lambda: trainer_throughput(config, n_train))}
    return {
        "bare, before": ("AdamW loop, NCHW, eager", lambda: bare_throughput(base, "loop")),
        "bare, foreach": ("AdamW foreach, NCHW, eager", lambda: bare_throughput(base, "foreach")),
        "bare, fused": ("AdamW fused, NCHW, eager", lambda: bare_throughput(base, "fused")),
        "bare, channels_last": ("AdamW foreach, NHWC, eager", lambda: bare_throughput(nhwc, "foreach")),
        "bare, compile": ("AdamW foreach, NCHW, inductor", lambda: bare_throughput(compiled, "foreach")),
        "spreadcon.train": ("defaults (foreach, NCHW, eager)", lambda: trainer_throughput(base, n_train)),
        "spreadcon.train, channels_last": ("channels_last=True", lambda: trainer_throughput(nhwc, n_train)),
        "spreadcon.train, compile": ('compile="inductor"', lambda: trainer_throughput(compiled, n_train)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist5k-coarse")
    parser.add_argument("--encoder", default=SMALL_TRAIN["encoder"])
    parser.add_argument("--epochs", type=int, default=3, help="per measurement; the first is warm-up")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=SMALL_TRAIN["batch_size"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--channels-last", action="store_true", help="TrainConfig.channels_last in both loops")
    parser.add_argument("--options", action="store_true",
                        help="measure each CPU speed option against PyTorch's defaults (before/after)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(tempfile.mkdtemp(prefix="spreadcon-bench-"))
    # the demo's recipe (experiments.recipes.SMALL_TRAIN) unless --encoder says otherwise
    options = SMALL_TRAIN["encoder_options"] if args.encoder == SMALL_TRAIN["encoder"] else {}
    config = TrainConfig(dataset=args.dataset, encoder=args.encoder, encoder_options=options, loss="spread",
                         embedding=SMALL_TRAIN["embedding"] if options else "paper",
                         epochs=args.epochs, batch_size=args.batch_size, lr=SMALL_TRAIN["lr"],
                         weight_decay=SMALL_TRAIN["weight_decay"], device=args.device,
                         out_dir=str(out / "run"), progress=False, tensorboard=False,
                         channels_last=args.channels_last)
    measures = variants(config, args.options)
    got: dict[str, list[float]] = {name: [] for name in measures}
    for r in range(args.rounds):
        for name, (_, measure) in measures.items():
            got[name].append(measure())
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in got.items()) + " img/s", flush=True)
    shutil.rmtree(out, ignore_errors=True)
    mean = {k: sum(v) / len(v) for k, v in got.items()}
    device = resolve_device(args.device)
    print(f"\n{args.dataset}, {args.encoder} {options or ''}, L_spread + CE head, batch {args.batch_size} x 2 views, "
          f"{device}, {torch.get_num_threads()} threads, {args.rounds} rounds of {args.epochs} epochs "
          f"(first epoch of each not counted)\n")
    first = next(iter(mean.values()))
    print("| loop | settings | images/s | x first row |\n|---|---|---|---|")
    for name, (words, _) in measures.items():
        print(f"| {name} | {words} | {mean[name]:.0f} | {mean[name] / first:.2f} |")
    pairs = [("spreadcon.train", "bare, foreach"), ("spreadcon.train, channels_last", "bare, channels_last"),
             ("spreadcon.train, compile", "bare, compile"), ("spreadcon.train", "bare PyTorch")]
    for t, b in pairs:
        if t in mean and b in mean:
            print(f"\ntrainer / bare loop at the same settings ({t}): {mean[t] / mean[b]:.2f}")


if __name__ == "__main__":
    main()
