"""The npz row of `spreadcon reproduce defaults` (issue 24): data a user brings, not a dataset
spreadcon ships. 7,500 MNIST test digits (10 classes, 28x28 grayscale) with a coarse label that
splits the classes another way than mnist5k-coarse does: even vs odd. The npz loader's own seeded
split makes 5,400 of them training images (600 val, 1,500 test).

    python scripts/make_npz_example.py MNIST_TEST_NPZ OUT.npz
    spreadcon reproduce defaults --dataset npz --data-root OUT.npz

MNIST_TEST_NPZ: any .npz with arrays images [N, 28, 28] uint8 and labels [N] (the MNIST test set).
"""

from __future__ import annotations

import sys

import numpy as np

N = 7500


def main(source: str, out: str) -> None:
    with np.load(source) as d:
        images, labels = d["images"][:N], d["labels"][:N]
    names = np.array(["even", "odd"])
    np.savez(out, images=images, labels=labels, coarse=labels % 2, class_names=names,
             stratum_names=np.array([str(i) for i in range(10)]))
    print(f"wrote {out}: {len(labels)} digits, coarse = parity")


if __name__ == "__main__":
    main(*sys.argv[1:3])
