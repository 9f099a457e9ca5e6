"""The two floors every end-model and coarse-to-fine table carries (issue 16).

    rows = floors(ds, encoder="cnn", encoder_options={"widths": [16, 32, 64]}, seed=0)
    # [{"loss": "raw-pixels", "coarse_accuracy": ..., "fine_transfer_accuracy": ...},
    #  {"loss": "random-init", ...}]

A trained encoder that a linear probe on these loses to has learned nothing a linear model could
not read off the inputs (raw-pixels), or less than an untrained net of its own shape gives for
free (random-init: random conv features are a strong baseline on digits). Both rows use the
same probe as the trained encoders (`probes.fit_linear`, the authors' AdamW recipe): fit on the
train split, scored on `split`; coarse_accuracy uses the coarse labels (the end-model task),
fine_transfer_accuracy the strata (coarse-to-fine transfer, Figure 4 right). With a labelled
fraction (`ds.labelled`), the coarse probe sees only the labelled training rows, as the trained
encoders' CE head does (Figure 6: the floor on the same 1% of the labels); the fine probe reads
every training row, as coarse-to-fine transfer does.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from spreadcon.data import SPLITS, StrataDataset, default_views
from spreadcon.evaluate import metrics, probes
from spreadcon.evaluate.embed import embed
from spreadcon.models import build_encoder

FLOORS = ("raw-pixels", "random-init")


def floors(ds: StrataDataset, *, encoder: str, encoder_options: dict[str, Any] | None = None, seed: int = 0,
           probe: dict[str, Any] | None = None, split: str = "test", batch_size: int = 512,
           names: tuple[str, ...] = FLOORS) -> list[dict[str, Any]]:
    """Rows {"loss", "coarse_accuracy", "fine_transfer_accuracy", "split", "seed", "probed"} for
    the raw-pixel floor and the random-init floor of `encoder` (built with `encoder_options`,
    initialised from `seed`, in eval mode; its backbone output h is probed, the layer the
    trained encoders are probed at).

    ds: a StrataDataset (spreadcon.data.load); its views' normalisation (`prepare`) is applied to
    the inputs of both floors. Where ds is fitted to a pretrained model (spreadcon.build's
    build_dataset for a timm:/torchvision: encoder) the encoder sees its resized input, the raw
    pixels stay at the data's size. probe: options for `probes.fit_linear` (epochs, lr, weight_decay,
    batch_size); default the authors' 100 epochs of AdamW lr 1e-3. fine_transfer_accuracy is None
    when the dataset has no strata finer than its classes. The caller's global RNG is left as it
    was (the encoder's init and the probes' layers draw from it inside a fork). names: which of
    FLOORS to compute.
    """
    unknown = sorted(set(names) - set(FLOORS))
    if unknown:
        raise ValueError(f"unknown floor(s) {unknown}; choose from {list(FLOORS)}")
    if split not in SPLITS or split == "train":
        raise ValueError(f"split={split!r}: floors are scored on 'val' or 'test' (the probe is fit on 'train')")
    with torch.random.fork_rng(devices=[]):
        rows = _floors(ds, encoder=encoder, encoder_options=encoder_options, seed=seed, probe=probe, split=split,
                       batch_size=batch_size, names=names)
    return rows


def _floors(ds: StrataDataset, *, encoder: str, encoder_options: dict[str, Any] | None, seed: int,
            probe: dict[str, Any] | None, split: str, batch_size: int, names: tuple[str, ...]) -> list[dict[str, Any]]:
    """floors() without the RNG fork."""
    rows = {s: ds.rows(s) for s in ("train", split)}
    pixels = default_views(ds, model_input=False).prepare  # the data's own pixels, never resized
    prepare = default_views(ds).prepare  # what the encoder sees (a pretrained model's size: ds.meta["model_input"])
    torch.manual_seed(seed)
    net = build_encoder(encoder, tuple(prepare(ds.x[:1]).shape[1:]), **dict(encoder_options or {}))
    features = {
        "raw-pixels": lambda x: pixels(x).flatten(1),
        "random-init": lambda x: embed(net, x, batch_size, prepare=prepare, method="forward_features"),
    }
    out = []
    for name in names:
        tr, te = (features[name](ds.x[rows[s]]) for s in ("train", split))
        out.append({"loss": name, **_probe_both(ds, rows, split, tr, te, probe or {}, seed),
                    "split": split, "seed": seed,
                    "probed": "normalised inputs" if name == "raw-pixels" else f"{encoder} at init, backbone output h"})
    return out


def _probe_both(ds: StrataDataset, rows: dict[str, Tensor], split: str, tr: Tensor, te: Tensor, probe: dict[str, Any],
                seed: int) -> dict[str, float | None]:
    """Coarse and fine accuracy on `split` of linear probes fit on the train features."""
    result: dict[str, float | None] = {}
    everyone = torch.ones(len(rows["train"]), dtype=torch.bool)
    labelled = ds.labelled[rows["train"]] if ds.labelled is not None else everyone
    for key, target, k, fit in (("coarse_accuracy", ds.label, ds.num_classes, labelled),
                                ("fine_transfer_accuracy", ds.stratum, ds.num_strata, everyone)):
        if key == "fine_transfer_accuracy" and ds.num_strata <= ds.num_classes:
            result[key] = None  # no finer labels: nothing to transfer to
            continue
        layer = probes.fit_linear(tr[fit], target[rows["train"]][fit], k, seed=seed, **probe)
        with torch.no_grad():
            result[key] = metrics.accuracy(layer(te.float()), target[rows[split]])
    return result
