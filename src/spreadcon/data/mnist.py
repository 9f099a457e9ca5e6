"""`mnist`, `mnist-coarse` from the IDX files in torchvision's layout (ROOT/MNIST/raw/).

The IDX format: 2 zero bytes, a type byte (0x08 = unsigned byte), the number of dimensions n,
then n big-endian uint32 sizes, then the data. `.gz` copies are read as well. No validation
split exists: 10% of train is held out, seeded and stratified by digit.

    x [70000, 1, 28, 28] uint8; coarse: label = digit >= 5, stratum = digit
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from spreadcon.data.base import StrataDataset
from spreadcon.data.coarse import DIGIT_COARSE, DIGIT_COARSE_NAMES, assemble
from spreadcon.data.embedded import DIGIT_NAMES
from spreadcon.data.paths import corrupt, find_dir, require
from spreadcon.data.splits import check_fraction, hold_out

LAYOUT = """  ROOT/MNIST/raw/train-images-idx3-ubyte   (or ROOT/raw/..., or ROOT/...; .gz copies also work)
  ROOT/MNIST/raw/train-labels-idx1-ubyte
  ROOT/MNIST/raw/t10k-images-idx3-ubyte
  ROOT/MNIST/raw/t10k-labels-idx1-ubyte
(torchvision.datasets.MNIST(ROOT, download=True) writes exactly this; or pass download=True)"""
FILES = {"train": "train", "test": "t10k"}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes -> uint8 array of the shape its header states."""
    try:
        data = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as err:
        raise corrupt(path, str(err)) from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise corrupt(path, "it does not start with an IDX header of unsigned bytes (00 00 08 ndim)")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim]) if len(data) >= 4 + 4 * ndim else None
    expected = 4 + 4 * ndim + int(np.prod(dims)) if dims else -1
    if len(data) != expected:
        raise corrupt(path, f"{len(data)} bytes where its header promises {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def idx_file(folder: Path, stem: str) -> Path:
    plain = folder / stem
    return plain if plain.exists() or not (folder / f"{stem}.gz").exists() else folder / f"{stem}.gz"


def mnist(root: Path, seed: int = 0, *, coarse: bool = False, val_fraction: float = 0.1,
          download: bool = False) -> StrataDataset:
    check_fraction("val_fraction", val_fraction, allow_zero=True)
    if download:
        import torchvision

        for train in (True, False):
            torchvision.datasets.MNIST(root, train=train, download=True)
    marker = "train-images-idx3-ubyte"
    folder = find_dir(root, (marker, f"{marker}.gz"), ("MNIST/raw", "raw", ""), LAYOUT)
    images, labels, split = [], [], []
    for index, (name, prefix) in enumerate(FILES.items()):
        x_path = require(idx_file(folder, f"{prefix}-images-idx3-ubyte"), LAYOUT)
        y_path = require(idx_file(folder, f"{prefix}-labels-idx1-ubyte"), LAYOUT)
        x, y = read_idx(x_path), read_idx(y_path)
        if x.ndim != 3 or y.shape != (len(x),):
            raise ValueError(f"{x_path} holds images {x.shape} and {y_path} labels {y.shape}; expected "
                             f"[N, H, W] and [N] (one label per image)")
        if y.max(initial=0) > 9:
            raise corrupt(y_path, f"label {int(y.max())} is not a digit 0..9")
        if images and x.shape[1:] != images[0].shape[1:]:
            raise ValueError(f"{x_path} holds {x.shape[1]}x{x.shape[2]} images but the training images are "
                             f"{images[0].shape[1]}x{images[0].shape[2]}; both files must hold the same size")
        images.append(x)
        labels.append(y.astype(np.int64))
        split.append(np.full(len(y), 2 * index, dtype=np.int64))  # train 0, test 2
    fine = torch.from_numpy(np.concatenate(labels))
    split_t = hold_out(torch.from_numpy(np.concatenate(split)), fine, val_fraction, seed)
    return assemble("mnist-coarse" if coarse else "mnist", torch.from_numpy(np.concatenate(images)).unsqueeze(1),
                    fine, split_t, DIGIT_NAMES, fine_to_coarse=DIGIT_COARSE if coarse else None,
                    coarse_names=DIGIT_COARSE_NAMES if coarse else None)
