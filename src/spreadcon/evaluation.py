"""Evaluating a run folder: the metric vocabulary, `evaluate_run`, and the eval/ outputs.

    metrics = evaluate_run("runs/spread")                    # test split, best checkpoint
    val = evaluate_run(run, split="val", geometry=False)     # {"coarse_val_accuracy": ..., ...}
    result = evaluate("runs/spread")     # also writes runs/spread/eval/{eval.json, eval.md, metrics.json, *.png}

Everything reads the run's embeddings (`spreadcon.runs.load_run(...).embeddings(split)`: the
encoder output in eval mode on un-augmented images). Probes follow SPEC.md (the authors' recipe:
AdamW lr 1e-3, 100 epochs, fit on the train split). Every experiment, the demo and `spreadcon
eval` name their numbers from METRICS. `evaluate` adds three diagnostics of the test embeddings
that only `spreadcon eval` reports (cosine_to_class_centre, alignment and uniformity, Wang & Isola
2020, on two augmented views of each test image), per-stratum rows (Figure 3) and pictures; its
outputs are stamped with the checkpoint (spreadcon.checkpoint.checkpoint_stamp), and an eval/
whose stamp no longer matches the run is replaced.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from spreadcon import progress
from spreadcon.checkpoint import checkpoint_stamp, stale_reason
from spreadcon.data import default_views
from spreadcon.evaluate import geometry, metrics, plots, probes, retrieval
from spreadcon.evaluate.embed import embed
from spreadcon.io import save_json, save_text
from spreadcon.runs import Run, check_owned, load_run

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


def _load(run: Run | str | Path, checkpoint: str) -> Run:
    return run if isinstance(run, Run) else load_run(run, checkpoint=checkpoint)


def _arrays(run: Run, split: str, checkpoint: str) -> dict[str, torch.Tensor]:
    """The split's embedding [N, D], logits [N, K], label, stratum (and group) [N] as tensors, from
    `Run.embeddings` (the cache for the best checkpoint, computed afresh for any other)."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split={split!r}; choose train, val or test")
    if str(run.checkpoint) != str(checkpoint):
        raise ValueError(f"the run was loaded at checkpoint {run.checkpoint!r}, not {checkpoint!r}")
    return {k: torch.from_numpy(v) for k, v in run.embeddings(split).items()}


def train_strata_sizes(run: Run) -> dict[int, int]:
    """{stratum: number of training points} of the run's dataset as trained."""
    values, counts = np.unique(run.dataset.get_split("train").stratum.numpy(), return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}


def layer_keys(data: dict[str, Any]) -> dict[str, str]:
    """The layers a run reports, suffix -> key of its embedding arrays: "" -> h (the backbone output
    "features" where the run has a projection head, else the one "embedding"); "_z" -> z, only with a
    projection head."""
    return {"": "features", "_z": "embedding"} if "features" in data else {"": "embedding"}


def evaluate_run(run: Run, split: str = "test", checkpoint: str = "best", *, transfer: bool = True,
                 geometry: bool = True, probe_epochs: int = PROBE_EPOCHS, probe_lr: float = PROBE_LR,
                 seed: int | None = None) -> dict[str, float]:
    """The METRICS of a run folder (or a loaded `spreadcon.runs.Run`) on `split`, named by
    `metric_name`. transfer: fit the coarse-to-fine probe (seeded by `seed`, default the run's
    seed); geometry: intra-class and centre cosines. Reads the embedding cache for "best"."""
    run = _load(run, checkpoint)
    data = _arrays(run, split, checkpoint)
    y, logits = data["label"], data["logits"]
    out = {"coarse_accuracy": metrics.accuracy(logits, y)}
    if logits.shape[1] == 2 and len(torch.unique(y)) == 2:
        out["auroc"] = metrics.auroc(logits, y)
    if "group" in data:
        out["worst_group_accuracy"] = metrics.worst_group_accuracy(logits, y, data["group"])
    ds, seed = run.dataset, run.config.seed if seed is None else seed
    for suffix, layer in layer_keys(data).items():
        if transfer and ds.num_strata > ds.num_classes:
            out[f"fine_transfer{suffix}_accuracy"] = _transfer(run, data, checkpoint, layer=layer, epochs=probe_epochs,
                                                               lr=probe_lr, seed=seed)
        if geometry:  # intra_class_cosine, ... at h; intra_class_z_cosine, ... at z
            out.update(_at_layer(_centre_cosines(data[layer], y, data["stratum"], train_strata_sizes(run)), suffix))
    return {metric_name(k, split): float(v) for k, v in out.items()}


def _transfer(run: Run, data: dict[str, torch.Tensor], checkpoint: str, *, layer: str, epochs: int, lr: float,
              seed: int) -> float:
    train = _arrays(run, "train", checkpoint)
    result = probes.coarse_to_fine(train[layer], train["stratum"], data[layer], data["stratum"],
                            epochs=epochs, lr=lr, seed=seed, num_classes=run.dataset.num_strata)
    return float(result["fine_accuracy"])


def _centre_cosines(z: torch.Tensor, y: torch.Tensor, s: torch.Tensor, sizes: dict[int, int]) -> dict[str, float]:
    """intra_class_cosine, and per class the mean cosine with the class centre of the points of its
    largest ("common") and smallest ("rare") training stratum, averaged over the classes where
    those differ in size."""
    cos = geometry.cosine_to_class_centre(z, y)
    common, rare = [], []
    for c in torch.unique(y):
        strata = [int(v) for v in torch.unique(s[y == c]) if int(v) in sizes]
        if len({sizes[v] for v in strata}) < 2:
            continue  # no common-vs-rare contrast inside this class
        big, small = max(strata, key=sizes.__getitem__), min(strata, key=sizes.__getitem__)
        common.append(float(cos[(s == big) & (y == c)].mean()))
        rare.append(float(cos[(s == small) & (y == c)].mean()))
    out = {"intra_class_cosine": float(geometry.intra_class_cosine(z, y))}
    if common:
        out.update(common_centre_cosine=float(np.mean(common)), rare_centre_cosine=float(np.mean(rare)))
    return out


def strata_rows(run: Run, split: str = "test", checkpoint: str = "best") -> list[dict[str, float]]:
    """Per stratum of `split` (Figure 3): its training size, its points' mean cosine with their class
    centre and with their own stratum centre (tightness), and its centre's distance to the class centre;
    read at h, and with a "_z" suffix (class_centre_z_cosine, ...) at z where the run has a projection head."""
    run = _load(run, checkpoint)
    data, sizes = _arrays(run, split, checkpoint), train_strata_sizes(run)
    y, s = data["label"], data["stratum"]
    layers = {suffix: data[key] for suffix, key in layer_keys(data).items()}
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
    to_class, to_stratum = geometry.cosine_to_class_centre(z, y), geometry.cosine_to_class_centre(z, s)
    class_ids, class_c = geometry.class_centres(z, y)
    strata_ids, strata_c = geometry.class_centres(z, s)
    out = {}
    for k, v in enumerate(strata_ids.tolist()):
        members = s == v
        c = int(torch.mode(y[members]).values)
        distance = torch.linalg.vector_norm(strata_c[k] - class_c[class_ids.tolist().index(c)])
        out[v] = {"class": c, "class_centre_cosine": float(to_class[members].mean()),
                  "stratum_centre_cosine": float(to_stratum[members].mean()), "centre_distance": float(distance)}
    return out


# --- eval/: the outputs of `spreadcon eval` ----------------------------------------------------
def neighbour_metrics(run: Run, checkpoint: str = "best") -> dict[str, float]:
    """What pytorch-metric-learning and DINO users read, on the fine labels (the strata), at every
    layer the run reports (h; and z with a "_z" suffix where there is a projection head): a
    weighted kNN probe (k 20, cosine, temperature 0.07: DINO's eval_knn) fit on train, scored on
    test, and retrieval of the test points among the train points (precision@1, MAP@R), by
    pytorch-metric-learning's AccuracyCalculator."""
    train, test = _arrays(run, "train", checkpoint), _arrays(run, "test", checkpoint)
    out = {}
    for suffix, layer in layer_keys(test).items():
        knn = retrieval.knn_probe(train[layer], train["stratum"], test[layer], test["stratum"],
                                  num_classes=run.dataset.num_strata)
        found = retrieval.retrieval_metrics(test[layer], test["stratum"], train[layer], train["stratum"])
        out[f"fine_knn{suffix}_accuracy"] = knn["accuracy"]
        out[f"fine_precision_at_1{suffix}"] = found["precision_at_1"]
        out[f"fine_map_at_r{suffix}"] = found["mean_average_precision_at_r"]
    return out


def _diagnostics(run: Run, te: dict[str, torch.Tensor], *, seed: int) -> dict[str, Any]:
    """cosine_to_class_centre, uniformity, and alignment on two augmented views of each test image."""
    z, y = te.get("features", te["embedding"]), te["label"]  # h where the run has a projection head
    method = "forward_features" if "features" in te else "forward"
    views = default_views(run.dataset)
    # [N, 2, ...] at the data's size; `finish` (resize to a pretrained model's size, normalise) runs per batch
    pairs = views.augmented(run.dataset.x[te["index"]], 2, torch.Generator().manual_seed(seed))
    a, b = (embed(run.model.encoder, pairs[:, v], prepare=views.finish, method=method) for v in (0, 1))
    return {"cosine_to_class_centre": float(geometry.cosine_to_class_centre(z, y).mean()),
            "uniformity": geometry.uniformity(z), "alignment": geometry.alignment(a, b)}


def _pictures(run: Run, te: dict[str, torch.Tensor], out: Path, title: str, *, which: bool | str, seed: int) -> list[str]:
    z, y, s, ds = te["embedding"], te["label"], te["stratum"], run.dataset
    plots.embedding_picture(z, y, s, out / "tsne.png", seed=seed, class_names=ds.class_names,
                            stratum_names=ds.stratum_names, title=title)
    names = ["tsne.png"]
    if which is True:
        plots.strata_size_scatter(z, y, s, out / "strata_size.png", seed=seed, title=title)
        names.append("strata_size.png")
    return names


def replace_stale(out: Path, run_dir: Path) -> str | None:
    """Remove an eval/ whose stamp no longer matches the run (a resumed or retrained run); the reason."""
    reason = stale_reason(out / "metrics.json", run_dir)
    if reason is None and (out / "eval.json").exists() and not (out / "metrics.json").exists():
        reason = f"{out} has no checkpoint stamp (written by an older spreadcon)"
    if reason is not None:
        for name in ("metrics.json", "eval.json", "eval.md", "tsne.png", "strata_size.png"):
            (out / name).unlink(missing_ok=True)
    return reason


def evaluate(run_dir: str | Path, out_dir: str | Path | None = None, *, checkpoint: str = "best",
             probe_epochs: int = 100, pictures: bool | str = True, device: str = "cpu",
             seed: int = 0) -> dict[str, Any]:
    """Evaluate a run folder; write out_dir/eval.json, eval.md, metrics.json (stamped with the
    checkpoint's epoch and sha256) and PNGs; return the result.
    pictures: True (Figures 2 and 3), "fig2" (Figure 2 only) or False."""
    run = load_run(run_dir, checkpoint=checkpoint, device=device)
    status, stamp = run.status, checkpoint_stamp(run_dir, checkpoint)
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "eval"
    check_owned(out, run_dir, "eval --out")
    out.mkdir(parents=True, exist_ok=True)
    stale = replace_stale(out, Path(run_dir))
    with progress.stage("embeddings of every split"):
        te = {k: torch.from_numpy(v) for k, v in run.embeddings("test").items()}
    with progress.stage("end model and coarse-to-fine probes (test, val)"):
        metrics = {**evaluate_run(run, "test", checkpoint, probe_epochs=probe_epochs, seed=seed),
                   **evaluate_run(run, "val", checkpoint, probe_epochs=probe_epochs, seed=seed, geometry=False)}
    with progress.stage("geometry, kNN and retrieval"):
        extra = {**_diagnostics(run, te, seed=seed), **neighbour_metrics(run, checkpoint),
                 "strata": strata_rows(run, "test", checkpoint)}
    described = {"epochs_trained": status.epochs_trained, "epochs": status.epochs, "finished": status.finished,
                 "status": str(status)}
    result = {**_describe(run, run_dir, checkpoint), "stamp": stamp, **described, "metrics": metrics, **metrics,
              **extra}
    if stale:
        result["replaced_stale_eval"] = stale
    if pictures:
        title = f"{result['loss']} on {run.config.dataset} (test split)"
        with progress.stage("t-SNE pictures"):
            result["pictures"] = _pictures(run, te, out, title, which=pictures, seed=seed)
    save_json({"stamp": stamp, "status": str(status), "metrics": metrics}, out / "metrics.json")
    save_json(result, out / "eval.json")
    save_text(markdown(result), out / "eval.md")
    return result


def _describe(run: Run, run_dir: str | Path, checkpoint: str) -> dict[str, Any]:
    config = run.config
    return {"run_dir": str(run_dir), "checkpoint": checkpoint, "dataset": config.dataset,
            "encoder": config.encoder, "protocol": config.protocol, "embedding": config.embedding,
            "loss": "ce" if config.protocol == "ce" else config.loss, "alpha": config.alpha,
            "temperature": config.temperature, "seed": config.seed,
            "num_classes": run.dataset.num_classes, "num_strata": run.dataset.num_strata,
            "probed_layer": ("encoder output (what the loss and the CE head read)"
                             if not run.model.has_projection else
                             "backbone output h, before the projection head (*_z metrics: its output z, "
                             "what the loss and the CE head read)")}


def markdown(result: dict[str, Any]) -> str:
    keys = [*result["metrics"], *(k for k in result if k.startswith(("fine_knn", "fine_precision", "fine_map"))),
            "cosine_to_class_centre", "alignment", "uniformity"]
    lines = [f"# Evaluation of `{result['run_dir']}` ({result['checkpoint']} checkpoint)", "",
             f"{result['loss']} (protocol {result['protocol']}, embedding {result['embedding']}, alpha {result['alpha']}, tau "
             f"{result['temperature']}) on {result['dataset']} with {result['encoder']}, seed {result['seed']}, "
             f"{result['status']}. Test split unless marked val; probes read the {result['probed_layer']}.",
             "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {result[k]:.4f} |" for k in keys if k in result]
    lines += ["", "Strata (Figure 3): training size, cosine of the stratum's test points with their class "
              "centre and their stratum centre, distance of the stratum centre to the class centre.", "",
              "| class | stratum | train size | class-centre cos | stratum-centre cos | centre distance |",
              "|---|---|---|---|---|---|"]
    for r in result["strata"]:
        lines.append(f"| {r['class']} | {r['stratum']} | {r['train_size']} | {r['class_centre_cosine']:.3f} | "
                     f"{r['stratum_centre_cosine']:.3f} | {r['centre_distance']:.3f} |")
    for p in result.get("pictures", []):
        lines += ["", f"![{p}]({p})"]
    return "\n".join(lines) + "\n"


