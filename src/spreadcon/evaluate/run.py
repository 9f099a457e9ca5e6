"""The one evaluation of a trained run: the metric vocabulary and `evaluate_run`.

    metrics = evaluate_run("runs/spread")                    # test split, best checkpoint
    val = evaluate_run(run, split="val", geometry=False)     # {"coarse_val_accuracy": ..., ...}

Everything reads the run's embeddings (`spreadcon.runs.load_run(...).embeddings(split)`: the
encoder output in eval mode on un-augmented images, the layer both the contrastive loss and the
CE head read). Probes follow SPEC.md (the authors' recipe: AdamW lr 1e-3, 100 epochs, fit on the
train split). Every experiment, the demo and `spreadcon eval` name their numbers from METRICS.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

# The metric vocabulary (fractions in [0, 1]; cosines in [-1, 1]). On a split other than test,
# each name carries the split (see `metric_name`): coarse_val_accuracy, fine_transfer_val_accuracy.
METRICS: dict[str, str] = {
    "coarse_accuracy": "end model (the CE head, or the probe of protocol contrastive_then_probe) on the "
                       "training labels (Figure 4 left)",
    "auroc": "binary tasks only: AUROC of the end model (the paper's ISIC metric)",
    "worst_group_accuracy": "datasets with groups only: the end model's lowest per-group accuracy",
    "fine_transfer_accuracy": "coarse-to-fine transfer: a linear probe on frozen train embeddings fit to the "
                              "strata (fine labels); only where the strata are finer than the classes (Figure 4 right)",
    "intra_class_cosine": "mean cosine of two distinct points of one class; 1 = the class collapsed (Figure 2)",
    "common_centre_cosine": "cosine with the class centre of the points of each class's largest training "
                            "stratum, averaged over classes (Figure 2)",
    "rare_centre_cosine": "the same for each class's smallest training stratum (Figure 2)",
    # runs with a projection head (the standard protocol): the numbers above read the backbone output h
    # (where SimCLR/SupCon probe); these read z, the projection head's output the loss sees (where the
    # paper, which has no projection head, probes)
    "fine_transfer_z_accuracy": "fine_transfer_accuracy probed at z (runs with a projection head only)",
    "intra_class_z_cosine": "intra_class_cosine at z (runs with a projection head only)",
    "common_centre_z_cosine": "common_centre_cosine at z (runs with a projection head only)",
    "rare_centre_z_cosine": "rare_centre_cosine at z (runs with a projection head only)",
}
PROBE_EPOCHS, PROBE_LR = 100, 1e-3  # SPEC.md: the authors' coarse-to-fine probe


def metric_name(name: str, split: str) -> str:
    """The vocabulary name of `name` measured on `split`: coarse_accuracy on val is coarse_val_accuracy."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; the vocabulary is {sorted(METRICS)}")
    if split == "test":
        return name
    return name.replace("_accuracy", f"_{split}_accuracy") if name.endswith("_accuracy") else f"{name}_{split}"


def _load(run: Any, checkpoint: str) -> Any:
    from spreadcon.runs import Run, load_run

    if isinstance(run, Run):
        return run
    if not Path(run).is_dir():
        raise FileNotFoundError(f"no run folder {str(run)!r}; train one with `spreadcon train`")
    return load_run(run, checkpoint=checkpoint)


def _arrays(run: Any, split: str, checkpoint: str) -> dict[str, torch.Tensor]:
    """The split's embedding [N, D], logits [N, K], label, stratum (and group) [N] as tensors, from
    `Run.embeddings` (the cache for the best checkpoint, computed afresh for any other)."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split={split!r}; choose train, val or test")
    if str(run.checkpoint) != str(checkpoint):
        raise ValueError(f"the run was loaded at checkpoint {run.checkpoint!r}, not {checkpoint!r}")
    return {k: torch.from_numpy(v) for k, v in run.embeddings(split).items()}


def train_strata_sizes(run: Any) -> dict[int, int]:
    """{stratum: number of training points} of the run's dataset as trained."""
    values, counts = np.unique(run.dataset.get_split("train").stratum.numpy(), return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}


def evaluate_run(run: Any, split: str = "test", checkpoint: str = "best", *, transfer: bool = True,
                 geometry: bool = True, probe_epochs: int = PROBE_EPOCHS, probe_lr: float = PROBE_LR,
                 seed: int | None = None) -> dict[str, float]:
    """The METRICS of a run folder (or a loaded `spreadcon.runs.Run`) on `split`, named by
    `metric_name`. transfer: fit the coarse-to-fine probe (seeded by `seed`, default the run's
    seed); geometry: intra-class and centre cosines. Reads the embedding cache for "best"."""
    from spreadcon.evaluate import metrics

    run = _load(run, checkpoint)
    data = _arrays(run, split, checkpoint)
    y, logits = data["label"], data["logits"]
    out = {"coarse_accuracy": metrics.accuracy(logits, y)}
    if logits.shape[1] == 2 and len(torch.unique(y)) == 2:
        out["auroc"] = metrics.auroc(logits, y)
    if "group" in data:
        out["worst_group_accuracy"] = metrics.worst_group_accuracy(logits, y, data["group"])
    ds, seed = run.dataset, run.config.seed if seed is None else seed
    layers = {"": "features" if "features" in data else "embedding"}  # h where the run has a projection head
    if "features" in data:
        layers["_z"] = "embedding"
    for suffix, layer in layers.items():
        if transfer and ds.num_strata > ds.num_classes:
            out[f"fine_transfer{suffix}_accuracy"] = _transfer(run, data, checkpoint, layer=layer, epochs=probe_epochs,
                                                               lr=probe_lr, seed=seed)
        if geometry:  # intra_class_cosine, ... at h; intra_class_z_cosine, ... at z
            out.update(_at_layer(_centre_cosines(data[layer], y, data["stratum"], train_strata_sizes(run)), suffix))
    return {metric_name(k, split): float(v) for k, v in out.items()}


def _transfer(run: Any, data: dict[str, torch.Tensor], checkpoint: str, *, layer: str, epochs: int, lr: float,
              seed: int) -> float:
    from spreadcon.evaluate.probes import coarse_to_fine

    train = _arrays(run, "train", checkpoint)
    result = coarse_to_fine(train[layer], train["stratum"], data[layer], data["stratum"],
                            epochs=epochs, lr=lr, seed=seed, num_classes=run.dataset.num_strata)
    return float(result["fine_accuracy"])


def _centre_cosines(z: torch.Tensor, y: torch.Tensor, s: torch.Tensor, sizes: dict[int, int]) -> dict[str, float]:
    """intra_class_cosine, and per class the mean cosine with the class centre of the points of its
    largest ("common") and smallest ("rare") training stratum, averaged over the classes where
    those differ in size."""
    from spreadcon.evaluate.geometry import cosine_to_class_centre, intra_class_cosine

    cos = cosine_to_class_centre(z, y)
    common, rare = [], []
    for c in torch.unique(y):
        strata = [int(v) for v in torch.unique(s[y == c]) if int(v) in sizes]
        if len({sizes[v] for v in strata}) < 2:
            continue  # no common-vs-rare contrast inside this class
        big, small = max(strata, key=sizes.__getitem__), min(strata, key=sizes.__getitem__)
        common.append(float(cos[(s == big) & (y == c)].mean()))
        rare.append(float(cos[(s == small) & (y == c)].mean()))
    out = {"intra_class_cosine": float(intra_class_cosine(z, y))}
    if common:
        out.update(common_centre_cosine=float(np.mean(common)), rare_centre_cosine=float(np.mean(rare)))
    return out


def strata_rows(run: Any, split: str = "test", checkpoint: str = "best") -> list[dict[str, float]]:
    """Per stratum of `split` (Figure 3): its training size, its points' mean cosine with their class
    centre and with their own stratum centre (tightness), and its centre's distance to the class centre;
    read at h, and with a "_z" suffix (class_centre_z_cosine, ...) at z where the run has a projection head."""
    run = _load(run, checkpoint)
    data, sizes = _arrays(run, split, checkpoint), train_strata_sizes(run)
    y, s = data["label"], data["stratum"]
    layers = {"": data.get("features", data["embedding"])}
    if "features" in data:
        layers["_z"] = data["embedding"]
    per_layer = {suffix: _strata_geometry(z, y, s) for suffix, z in layers.items()}
    rows = []
    for v, at_h in per_layer[""].items():
        row = {"stratum": v, "class": at_h["class"], "train_size": sizes.get(v, 0)}
        for suffix, geo in per_layer.items():
            row.update(_at_layer({k: x for k, x in geo[v].items() if k != "class"}, suffix))
        rows.append(row)
    return rows


def _at_layer(metrics: dict[str, float], suffix: str) -> dict[str, float]:
    """The names of geometry measured at a layer: suffix "" (h) keeps them, "_z" makes
    intra_class_cosine intra_class_z_cosine and centre_distance centre_z_distance."""
    return {k.replace("_cosine", f"{suffix}_cosine").replace("_distance", f"{suffix}_distance"): v
            for k, v in metrics.items()}


def _strata_geometry(z: torch.Tensor, y: torch.Tensor, s: torch.Tensor) -> dict[int, dict[str, float]]:
    """stratum -> its class, class_centre_cosine, stratum_centre_cosine, centre_distance on embeddings z."""
    from spreadcon.evaluate.geometry import class_centres, cosine_to_class_centre

    to_class, to_stratum = cosine_to_class_centre(z, y), cosine_to_class_centre(z, s)
    class_ids, class_c = class_centres(z, y)
    strata_ids, strata_c = class_centres(z, s)
    out = {}
    for k, v in enumerate(strata_ids.tolist()):
        members = s == v
        c = int(torch.mode(y[members]).values)
        distance = torch.linalg.vector_norm(strata_c[k] - class_c[class_ids.tolist().index(c)])
        out[v] = {"class": c, "class_centre_cosine": float(to_class[members].mean()),
                  "stratum_centre_cosine": float(to_stratum[members].mean()), "centre_distance": float(distance)}
    return out
