"""Real data: materialise ../shared/data into the standard layouts users have, then load it.

Skips cleanly when the shared data folder is absent (it is optional; CI has it).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch

from spreadcon.data import load


def test_materialised_mnist_cifar10_cifar100(shared_data, tmp_path):
    subprocess.run([sys.executable, str(shared_data / "materialize.py"), str(tmp_path)], check=True,
                   capture_output=True)

    # the coarse variants carry everything: stratum = the fine class (the fine loaders share the code)
    mnist = load("mnist-coarse", root=tmp_path)
    pool, test = mnist.split != 2, mnist.split == 2
    assert (int(pool.sum()), int(test.sum()), int((mnist.split == 1).sum())) == (60000, 10000, 6000)
    reference = np.load(shared_data / "mnist_train.npz")["labels"]
    assert torch.bincount(mnist.stratum[pool]).tolist() == np.bincount(reference).tolist()
    assert torch.equal(mnist.x[test][:, 0], torch.from_numpy(np.load(shared_data / "mnist_test.npz")["images"]))
    assert abs(mnist.meta["mean"][0] - 0.1307) < 0.002 and abs(mnist.meta["std"][0] - 0.3081) < 0.002
    assert torch.equal(mnist.label, (mnist.stratum >= 5).long())

    cifar = load("cifar10-coarse", root=tmp_path)
    pool, test = cifar.split != 2, cifar.split == 2
    assert (int(pool.sum()), int(test.sum())) == (50000, 10000)
    assert torch.bincount(cifar.stratum[pool]).tolist() == [5000] * 10
    assert torch.bincount(cifar.stratum[test]).tolist() == [1000] * 10
    assert torch.bincount(cifar.stratum[cifar.split == 1]).tolist() == [500] * 10
    # the standard CIFAR-10 channel means: a swapped plane order would swap R and B
    assert np.allclose(cifar.meta["mean"], [0.4914, 0.4822, 0.4465], atol=0.01)
    animals = {"bird", "cat", "deer", "dog", "frog", "horse"}
    expected = torch.tensor([int(n in animals) for n in cifar.stratum_names])
    assert torch.equal(cifar.label, expected[cifar.stratum]) and cifar.stratum_names[0] == "airplane"
    assert torch.bincount(cifar.label[pool]).tolist() == [20000, 30000]

    c100 = load("cifar100-coarse", root=tmp_path)
    mini = np.load(shared_data / "cifar100_mini.npz")
    assert (int((c100.split != 2).sum()), int((c100.split == 2).sum())) == (100, 20)
    fine_to_coarse = np.load(shared_data / "cifar100_fine_to_coarse.npy")
    assert c100.meta["fine_to_coarse"] == fine_to_coarse.tolist()
    assert torch.equal(c100.label, torch.from_numpy(fine_to_coarse)[c100.stratum])
    assert c100.class_names == [str(n) for n in mini["coarse_names"]]
    test_x = c100.x[c100.split == 2].permute(0, 2, 3, 1)
    assert torch.equal(test_x, torch.from_numpy(mini["test_images"]))  # lossless rows survive the pickles
