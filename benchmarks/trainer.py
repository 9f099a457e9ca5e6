"""Trainer throughput against a bare PyTorch loop doing the same work, side by side.

    python benchmarks/trainer.py                      # mnist5k-coarse, cnn, L_spread + CE head, 3 epochs
    python benchmarks/trainer.py --encoder cnn-test --dataset digits --epochs 4 --threads 1
    python benchmarks/trainer.py --channels-last      # NHWC layout in both loops

Both loops start from the same weights and draw the same batches and the same augmented views
(same seeded generators), run the same forward (encoder, L2-normalise, L_spread, CE head on every
view), backward and AdamW + cosine step. The bare loop does nothing else; the trainer also does
everything it does in real use: per-step NaN check and progress statistics, per-epoch validation,
metrics.jsonl, atomic checkpoints, best.pt. Throughput is training images per second of wall time
over whole epochs (the first epoch of each is warm-up and not counted); the two alternate for
`--rounds` rounds so that machine load hits both alike. Target: trainer >= 90% of the bare loop.
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from spreadcon import runs
from spreadcon.config import TrainConfig
from spreadcon.data.views import default_views
from spreadcon.train import build_loss, lr_factor, train


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


def bare_throughput(config: TrainConfig) -> float:
    """The same computation in a plain loop."""
    device = runs.resolve_device(config.device)
    ds = runs.build_dataset(config)
    model = runs.build_model(config, ds.input_shape, ds.num_classes).to(device)
    fmt = torch.channels_last if config.channels_last and ds.is_image else torch.contiguous_format
    model = model.to(memory_format=fmt)
    loss_fn = build_loss(config)
    views = default_views(ds)
    rows = torch.nonzero(ds.split == 0).squeeze(1)
    x, y = ds.x[rows].to(device), ds.label[rows].to(device)
    n, b, v = len(rows), config.batch_size, config.views
    steps = math.ceil(n / b)
    total = steps * config.epochs
    warmup = round(config.warmup_epochs * steps)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, foreach=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, warmup, total))
    order = torch.Generator().manual_seed(config.seed)
    gen = torch.Generator(device=device).manual_seed(config.seed + 1)
    model.train()
    ends = []
    for _ in range(config.epochs):
        for idx in torch.randperm(n, generator=order).split(b):
            idx = idx.to(device)
            xv = views(x[idx], v, gen).flatten(0, 1).contiguous(memory_format=fmt)
            emb, logits = model(xv)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist5k-coarse")
    parser.add_argument("--encoder", default="cnn")
    parser.add_argument("--epochs", type=int, default=3, help="per measurement; the first is warm-up")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--channels-last", action="store_true", help="TrainConfig.channels_last in both loops")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(tempfile.mkdtemp(prefix="spreadcon-bench-"))
    config = TrainConfig(dataset=args.dataset, encoder=args.encoder, loss="spread", epochs=args.epochs,
                         batch_size=args.batch_size, device=args.device, out_dir=str(out / "run"),
                         progress=True, tensorboard=False, channels_last=args.channels_last)
    n_train = int((runs.build_dataset(config).split == 0).sum())
    bare, trainer = [], []
    for r in range(args.rounds):
        bare.append(bare_throughput(config))
        trainer.append(trainer_throughput(config, n_train))
        print(f"round {r + 1}: bare {bare[-1]:.0f} img/s, trainer {trainer[-1]:.0f} img/s", flush=True)
    shutil.rmtree(out, ignore_errors=True)
    b, t = sum(bare) / len(bare), sum(trainer) / len(trainer)
    device = runs.resolve_device(args.device)
    print(f"\n{args.dataset}, {args.encoder}, L_spread + CE head, batch {args.batch_size} x 2 views, "
          f"{device}, {torch.get_num_threads()} threads, channels_last={args.channels_last}, {args.rounds} rounds of {args.epochs} epochs "
          f"(first epoch of each not counted)\n")
    print("| loop | images/s | ratio |\n|---|---|---|")
    print(f"| bare PyTorch | {b:.0f} | 1.00 |")
    print(f"| spreadcon.train | {t:.0f} | {t / b:.2f} |")


if __name__ == "__main__":
    main()
