"""Encoder size and CPU training throughput (forward + backward of a [B, 2 views] batch).

    python benchmarks/encoders.py [--threads 1] [--batch 128] [--steps 5]

Prints a markdown table: encoder, input shape, parameters, embedding width, images/s. A timing,
not a test: numbers depend on the machine and on its load.
"""

from __future__ import annotations

import argparse
import time

import torch

from spreadcon.models import build_encoder

CASES = [
    ("cnn", (1, 28, 28)), ("cnn", (1, 8, 8)), ("mlp", (64,)),
    ("vit", (1, 28, 28)), ("vit", (3, 32, 32)),
    ("resnet18", (3, 32, 32)), ("resnet50", (3, 32, 32)),
]


def throughput(name: str, shape: tuple[int, ...], batch: int, steps: int) -> tuple[int, int, float]:
    torch.manual_seed(0)
    enc = build_encoder(name, shape).train()
    x = torch.randn(2 * batch, *shape)  # 2 views of `batch` images
    enc(x[:4]).sum().backward()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        enc.zero_grad(set_to_none=True)
        enc(x).pow(2).mean().backward()
    elapsed = time.perf_counter() - start
    return sum(p.numel() for p in enc.parameters()), enc.embed_dim, 2 * batch * steps / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"| encoder | input | parameters | embed dim | train images/s (CPU, {args.threads} thread) |")
    print("|---|---|---|---|---|")
    for name, shape in CASES:
        n, d, ips = throughput(name, shape, args.batch, args.steps)
        print(f"| {name} | {'x'.join(map(str, shape))} | {n:,} | {d} | {ips:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
