"""`spreadcon eval RUN_DIR`: the paper's evaluations of one trained run.

    metrics = evaluate_run("runs/spread")     # also writes runs/spread/eval/{eval.json, eval.md, *.png}

Everything is measured on the run's best checkpoint in eval mode, on un-augmented images, from
the encoder output: the embedding the contrastive loss reads (after L2-normalisation) and the CE
head reads (as is). Probes are linear layers on that embedding (spreadcon.evaluate.probes, the
authors' recipe: AdamW lr 1e-3, 100 epochs), fit on the train split and scored on val and test.

Metrics (test split unless named *_val):
  end_model_accuracy       the model's own CE head on the training task (paper Figure 4 left)
  end_model_auroc          the same as AUROC, for binary tasks (the paper's ISIC metric)
  linear_probe_accuracy    a fresh linear probe on the training labels
  fine_transfer_accuracy   coarse-to-fine: a linear probe on the strata (fine labels) of a model
                           trained on coarse labels (Figure 4 right); only when strata are finer
  intra_class_cosine       mean cosine similarity of two points of one class (Figure 2; 1 = collapse)
  cosine_to_class_centre   mean cosine of a point with its class centre
  alignment, uniformity    Wang & Isola (2020), on two augmented views of each test image
  strata_distances         per stratum: size and mean distance to its sibling strata (Figure 3)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="evaluate a trained run: accuracy, probes, coarse-to-fine, geometry, pictures",
        description="Evaluate a run folder written by `spreadcon train`: end-model accuracy (and "
                    "AUROC for binary tasks), linear-probe accuracy, coarse-to-fine transfer on the "
                    "strata, embedding geometry (intra-class cosine, cosine to class centre, strata "
                    "centre distances, alignment, uniformity) and t-SNE pictures coloured by class, "
                    "stratum and stratum size. Writes eval.json, eval.md and PNGs.",
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder from `spreadcon train`")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write eval.json, eval.md and the pictures (default: RUN_DIR/eval)")
    parser.add_argument("--checkpoint", default="best",
                        help="which model: best (default), last, or an epoch kept with keep_checkpoints")
    parser.add_argument("--probe-epochs", type=int, default=100, help="epochs of each linear probe (default: 100)")
    parser.add_argument("--no-pictures", dest="pictures", action="store_false",
                        help="skip the t-SNE pictures (the slowest part)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--seed", type=int, default=0, help="seed of the probes, views and t-SNE (default: 0)")
    parser.set_defaults(func=run)


def evaluate_run(run_dir: str | Path, out_dir: str | Path | None = None, *, checkpoint: str = "best",
                 probe_epochs: int = 100, pictures: bool | str = True, device: str = "cpu",
                 seed: int = 0) -> dict[str, Any]:
    """Evaluate a run folder; write out_dir/eval.json, eval.md (and PNGs); return the metrics.
    pictures: True (Figures 2 and 3), "fig2" (Figure 2 only) or False."""
    import torch

    from spreadcon.evaluate import geometry, metrics, plots, probes
    from spreadcon.runs import load_run

    run = load_run(run_dir, checkpoint=checkpoint, device=device)
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "eval"
    out.mkdir(parents=True, exist_ok=True)
    ds = run.dataset
    emb = {s: run.embeddings(s) if checkpoint == "best" else None for s in ("train", "val", "test")}
    if checkpoint != "best":  # the cache holds the best model only: embed afresh
        from spreadcon.runs import predict

        views = run.views()
        for s, code in (("train", 0), ("val", 1), ("test", 2)):
            rows = torch.nonzero(ds.split == code).squeeze(1)
            e, lg = predict(run.model, views.prepare, ds.x[rows], run.config.eval_batch_size, torch.device(device))
            emb[s] = {"embedding": e.numpy(), "logits": lg.numpy(), "label": ds.label[rows].numpy(),
                      "stratum": ds.stratum[rows].numpy(), "index": rows.numpy()}
    t = {s: {k: torch.from_numpy(v) for k, v in d.items()} for s, d in emb.items()}
    tr, va, te = t["train"], t["val"], t["test"]

    result: dict[str, Any] = {
        "run_dir": str(run_dir), "checkpoint": checkpoint, "dataset": run.config.dataset,
        "encoder": run.config.encoder, "protocol": run.config.protocol,
        "loss": "ce" if run.config.protocol == "ce" else run.config.loss,
        "alpha": run.config.alpha, "temperature": run.config.temperature, "seed": run.config.seed,
        "epochs": run.config.epochs, "num_classes": ds.num_classes, "num_strata": ds.num_strata,
        "probed_layer": "encoder output (what the loss and the CE head read)",
        "end_model_accuracy": metrics.accuracy(te["logits"], te["label"]),
        "end_model_val_accuracy": metrics.accuracy(va["logits"], va["label"]),
    }
    if ds.num_classes == 2:
        result["end_model_auroc"] = metrics.auroc(te["logits"], te["label"])

    def probe(target: str, k: int) -> tuple[float, float]:
        layer = probes.fit_linear(tr["embedding"], tr[target], k, epochs=probe_epochs, seed=seed)
        with torch.no_grad():
            return (metrics.accuracy(layer(va["embedding"]), va[target]),
                    metrics.accuracy(layer(te["embedding"]), te[target]))

    result["linear_probe_val_accuracy"], result["linear_probe_accuracy"] = probe("label", ds.num_classes)
    if ds.num_strata > ds.num_classes:
        result["fine_transfer_val_accuracy"], result["fine_transfer_accuracy"] = probe("stratum", ds.num_strata)

    z, y, s = te["embedding"], te["label"], te["stratum"]
    result["intra_class_cosine"] = geometry.intra_class_cosine(z, y)
    result["cosine_to_class_centre"] = float(geometry.cosine_to_class_centre(z, y).mean())
    result["uniformity"] = geometry.uniformity(z)
    views = run.views()
    gen = torch.Generator().manual_seed(seed)
    x_test = ds.x[te["index"]]
    pairs = views(x_test, 2, gen)  # [N, 2, ...]
    with torch.no_grad():
        from spreadcon.evaluate.embed import embed

        a = embed(run.model.encoder, pairs[:, 0], device=device)
        b = embed(run.model.encoder, pairs[:, 1], device=device)
    result["alignment"] = geometry.alignment(a, b)
    result["strata_distances"] = geometry.strata_centre_distances(z, y, s)

    if pictures:
        title = f"{result['loss']} on {run.config.dataset} (test split)"
        plots.embedding_picture(z, y, s, out / "tsne.png", seed=seed, class_names=ds.class_names,
                                stratum_names=ds.stratum_names, title=title)
        result["pictures"] = ["tsne.png"]
        if pictures is True:
            plots.strata_size_scatter(z, y, s, out / "strata_size.png", seed=seed, title=title)
            result["pictures"].append("strata_size.png")
    (out / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "eval.md").write_text(markdown(result))
    return result


def markdown(result: dict[str, Any]) -> str:
    keys = ["end_model_accuracy", "end_model_auroc", "linear_probe_accuracy", "fine_transfer_accuracy",
            "intra_class_cosine", "cosine_to_class_centre", "alignment", "uniformity",
            "end_model_val_accuracy", "linear_probe_val_accuracy", "fine_transfer_val_accuracy"]
    lines = [f"# Evaluation of `{result['run_dir']}` ({result['checkpoint']} checkpoint)", "",
             f"{result['loss']} (protocol {result['protocol']}, alpha {result['alpha']}, tau "
             f"{result['temperature']}) on {result['dataset']} with {result['encoder']}, seed {result['seed']}, "
             f"{result['epochs']} epochs. Test split unless marked val; probes read the {result['probed_layer']}.",
             "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {result[k]:.4f} |" for k in keys if k in result]
    lines += ["", "Strata (Figure 3): size and mean distance to the other strata centres of the class.", "",
              "| class | stratum | size | mean distance |", "|---|---|---|---|"]
    for r in result["strata_distances"]:
        d = "" if r["mean_distance"] is None else f"{r['mean_distance']:.3f}"
        lines.append(f"| {r['label']} | {r['stratum']} | {r['size']} | {d} |")
    for p in result.get("pictures", []):
        lines += ["", f"![{p}]({p})"]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    try:
        result = evaluate_run(args.run_dir, args.out, checkpoint=args.checkpoint, probe_epochs=args.probe_epochs,
                              pictures=args.pictures, device=args.device, seed=args.seed)
    except ValueError as err:
        print(f"spreadcon eval: error: {err}", file=sys.stderr)
        return 2
    out = args.out or args.run_dir / "eval"
    print(markdown(result))
    print(f"wrote {out / 'eval.json'} and {out / 'eval.md'}")
    return 0
