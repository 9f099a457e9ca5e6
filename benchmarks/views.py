"""Throughput of spreadcon's batched views vs torchvision.transforms.v2 applied per image.

    python benchmarks/views.py [--batch 512] [--views 2] [--repeats 3] [--threads 1]

Same images (CIFAR-10's lossless rows from ../shared/data when present, else random bytes),
same recipe: SimCLR-style for 32 px RGB (random resized crop 0.2-1, flip, colour jitter
0.4/0.4/0.4/0.1 p 0.8 in a random order per image, grayscale p 0.2, normalise; also with our
fixed jitter order) and crop/shift for 28 px digits (RandomCrop 28, padding 2). Prints images-views per second for both and their ratio, one table per device.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2 as T

from spreadcon.data import Views

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def cifar_like(n: int) -> torch.Tensor:
    path = Path(os.environ.get("SPREADCON_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    path = path / "cifar10_lossless_subset.npz"
    if path.exists():
        d = np.load(path)
        key = next(k for k in d.files if "image" in k and "train" in k)
        return torch.from_numpy(d[key][:n]).permute(0, 3, 1, 2).contiguous()
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def torchvision_pipeline(kind: str) -> T.Compose:
    if kind == "simclr":
        return T.Compose([T.RandomResizedCrop(32, scale=(0.2, 1.0)), T.RandomHorizontalFlip(),
                          T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), T.RandomGrayscale(0.2),
                          T.ToDtype(torch.float32, scale=True), T.Normalize(MEAN, STD)])
    return T.Compose([T.RandomCrop(28, padding=2), T.ToDtype(torch.float32, scale=True), T.Normalize((0.13,), (0.31,))])


def timed(fn, repeats: int, sync) -> float:
    fn()  # warm-up
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = {"simclr": cifar_like(args.batch),
            "digits": torch.randint(0, 256, (args.batch, 1, 28, 28), dtype=torch.uint8,
                                    generator=torch.Generator().manual_seed(1))}
    data["simclr-fixed-order"] = data["simclr"]
    ours = {"simclr": Views("simclr", mean=MEAN, std=STD),
            "simclr-fixed-order": Views("simclr", mean=MEAN, std=STD, jitter_random_order=False),
            "digits": Views("digits", mean=(0.13,), std=(0.31,), pad=2)}
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    n = args.batch * args.views
    print(f"batch {args.batch} x {args.views} views, torch threads {args.threads}, best of {args.repeats}")
    print("| recipe | device | spreadcon (img/s) | torchvision v2 per image (img/s) | ratio |")
    print("|---|---|---|---|---|")
    for kind in ("simclr", "simclr-fixed-order", "digits"):
        pipe = torchvision_pipeline(kind.split("-")[0])
        for device in devices:
            x = data[kind].to(device)
            sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
            g = torch.Generator(device=device).manual_seed(0)
            t_ours = timed(lambda: ours[kind](x, args.views, g), args.repeats, sync)
            torch.manual_seed(0)
            t_tv = timed(lambda: torch.stack([torch.stack([pipe(img) for _ in range(args.views)]) for img in x]),
                         args.repeats, sync)
            print(f"| {kind} | {device} | {n / t_ours:,.0f} | {n / t_tv:,.0f} | {t_tv / t_ours:.1f}x |")


if __name__ == "__main__":
    main()
