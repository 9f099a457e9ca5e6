"""`spreadcon eval RUN_DIR`: the paper's evaluations of one trained run.

    metrics = evaluate_run("runs/spread")     # also writes runs/spread/eval/{eval.json, eval.md, *.png}

Outputs are stamped (metrics.json: the checkpoint's file, epoch and sha256); an eval/ whose
stamp no longer matches the run (resumed, retrained) is replaced, and `--check` reports it
stale. An unfinished run is evaluated and reported as such ("1 of 3 epochs: unfinished").

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
    parser.add_argument("--check", action="store_true",
                        help="compute nothing: say whether OUT is current for the run's checkpoint (exit 2 if stale)")
    parser.set_defaults(func=run)


def run_status(run_dir: str | Path) -> dict[str, Any]:
    """What the run folder says about itself, read before any model is built: its config (errors
    name config.json and the key), the epochs trained (metrics.jsonl, errors name the line) and
    a status line: "3 of 3 epochs" or "1 of 3 epochs: unfinished"."""
    from spreadcon.commands._args import read_config, read_jsonl

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(2, "no such run folder; train one with `spreadcon train`", str(run_dir))
    if not (run_dir / "config.json").exists():
        raise ValueError(f"{run_dir} is not a run folder (no config.json); train one with `spreadcon train`")
    config = read_config(run_dir / "config.json")
    rows = read_jsonl(run_dir / "metrics.jsonl")
    epochs_done = max((int(r["epoch"]) for r in rows if isinstance(r.get("epoch"), int)), default=0)
    finished = epochs_done >= config.epochs
    status = f"{epochs_done} of {config.epochs} epochs" + ("" if finished else ": unfinished")
    return {"config": config, "epochs_trained": epochs_done, "epochs": config.epochs, "finished": finished,
            "status": status}


def _splits(run, checkpoint: str, device: str) -> dict[str, dict[str, Any]]:
    """Per split {"embedding", "logits", "label", "stratum", "index"} as tensors."""
    import torch

    if checkpoint == "best":
        emb = {s: run.embeddings(s) for s in ("train", "val", "test")}
    else:  # the cache holds the best model only: embed afresh
        from spreadcon.runs import predict

        ds, views, emb = run.dataset, run.views(), {}
        for s, code in (("train", 0), ("val", 1), ("test", 2)):
            rows = torch.nonzero(ds.split == code).squeeze(1)
            e, lg = predict(run.model, views.prepare, ds.x[rows], run.config.eval_batch_size, torch.device(device))
            emb[s] = {"embedding": e.numpy(), "logits": lg.numpy(), "label": ds.label[rows].numpy(),
                      "stratum": ds.stratum[rows].numpy(), "index": rows.numpy()}
    return {s: {k: torch.from_numpy(v) for k, v in d.items()} for s, d in emb.items()}


def shared_evaluate_run():
    """`spreadcon.evaluate.run.evaluate_run`, the project's one evaluation, where this tree has it."""
    try:
        from spreadcon.evaluate.run import evaluate_run as shared
    except ImportError:
        return None
    return shared


def _probe_metrics(run, t: dict, checkpoint: str, *, probe_epochs: int, seed: int) -> dict[str, Any]:
    """End model, linear probe and coarse-to-fine numbers; the vocabulary of
    `spreadcon.evaluate.run` beside them (under "metrics") where it is importable."""
    import torch

    from spreadcon.evaluate import metrics, probes

    tr, va, te = t["train"], t["val"], t["test"]
    ds = run.dataset
    out: dict[str, Any] = {"end_model_accuracy": metrics.accuracy(te["logits"], te["label"]),
                           "end_model_val_accuracy": metrics.accuracy(va["logits"], va["label"])}
    if ds.num_classes == 2:
        out["end_model_auroc"] = metrics.auroc(te["logits"], te["label"])

    def probe(target: str, k: int) -> tuple[float, float]:
        layer = probes.fit_linear(tr["embedding"], tr[target], k, epochs=probe_epochs, seed=seed)
        with torch.no_grad():
            return (metrics.accuracy(layer(va["embedding"]), va[target]),
                    metrics.accuracy(layer(te["embedding"]), te[target]))

    out["linear_probe_val_accuracy"], out["linear_probe_accuracy"] = probe("label", ds.num_classes)
    shared = shared_evaluate_run()
    if shared is not None:
        vocab = {**shared(run, "test", checkpoint, probe_epochs=probe_epochs, seed=seed),
                 **shared(run, "val", checkpoint, probe_epochs=probe_epochs, seed=seed, geometry=False)}
        out["metrics"] = vocab
        for key in ("fine_transfer_accuracy", "fine_transfer_val_accuracy"):
            if key in vocab:
                out[key] = vocab[key]
    elif ds.num_strata > ds.num_classes:
        out["fine_transfer_val_accuracy"], out["fine_transfer_accuracy"] = probe("stratum", ds.num_strata)
    return out


def _geometry(run, te: dict, *, seed: int, device: str) -> dict[str, Any]:
    """The paper's geometry of the test embeddings, and alignment on two augmented views."""
    import torch

    from spreadcon.evaluate import geometry
    from spreadcon.evaluate.embed import embed

    z, y, s = te["embedding"], te["label"], te["stratum"]
    pairs = run.views()(run.dataset.x[te["index"]], 2, torch.Generator().manual_seed(seed))  # [N, 2, ...]
    a = embed(run.model.encoder, pairs[:, 0], device=device)
    b = embed(run.model.encoder, pairs[:, 1], device=device)
    return {"intra_class_cosine": geometry.intra_class_cosine(z, y),
            "cosine_to_class_centre": float(geometry.cosine_to_class_centre(z, y).mean()),
            "uniformity": geometry.uniformity(z), "alignment": geometry.alignment(a, b),
            "strata_distances": geometry.strata_centre_distances(z, y, s)}


def _pictures(run, te: dict, out: Path, title: str, *, which: bool | str, seed: int) -> list[str]:
    from spreadcon.evaluate import plots

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
    from spreadcon.evaluate.stamp import stale_reason

    reason = stale_reason(out / "metrics.json", run_dir)
    if reason is None and (out / "eval.json").exists() and not (out / "metrics.json").exists():
        reason = f"{out} has no checkpoint stamp (written by an older spreadcon)"
    if reason is not None:
        for name in ("metrics.json", "eval.json", "eval.md", "tsne.png", "strata_size.png"):
            (out / name).unlink(missing_ok=True)
    return reason


def evaluate_run(run_dir: str | Path, out_dir: str | Path | None = None, *, checkpoint: str = "best",
                 probe_epochs: int = 100, pictures: bool | str = True, device: str = "cpu",
                 seed: int = 0) -> dict[str, Any]:
    """Evaluate a run folder; write out_dir/eval.json, eval.md, metrics.json (stamped with the
    checkpoint's epoch and sha256) and PNGs; return the metrics.
    pictures: True (Figures 2 and 3), "fig2" (Figure 2 only) or False."""
    from spreadcon.evaluate.stamp import checkpoint_stamp
    from spreadcon.runs import load_run

    status = run_status(run_dir)
    stamp = checkpoint_stamp(run_dir, checkpoint)
    run = load_run(run_dir, checkpoint=checkpoint, device=device)
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "eval"
    out.mkdir(parents=True, exist_ok=True)
    stale = replace_stale(out, Path(run_dir))
    config = run.config
    result: dict[str, Any] = {
        "run_dir": str(run_dir), "checkpoint": checkpoint, "stamp": stamp, "status": status["status"],
        "finished": status["finished"], "epochs_trained": status["epochs_trained"], "dataset": config.dataset,
        "encoder": config.encoder, "protocol": config.protocol,
        "loss": "ce" if config.protocol == "ce" else config.loss, "alpha": config.alpha,
        "temperature": config.temperature, "seed": config.seed, "epochs": config.epochs,
        "num_classes": run.dataset.num_classes, "num_strata": run.dataset.num_strata,
        "probed_layer": "encoder output (what the loss and the CE head read)",
    }
    if stale:
        result["replaced_stale_eval"] = stale
    t = _splits(run, checkpoint, device)
    result.update(_probe_metrics(run, t, checkpoint, probe_epochs=probe_epochs, seed=seed))
    result.update(_geometry(run, t["test"], seed=seed, device=device))
    if pictures:
        title = f"{result['loss']} on {config.dataset} (test split)"
        result["pictures"] = _pictures(run, t["test"], out, title, which=pictures, seed=seed)
    numbers = {k: v for k, v in result.items() if isinstance(v, float) and k not in ("alpha", "temperature")}
    (out / "metrics.json").write_text(json.dumps({"stamp": stamp, "status": status["status"],
                                                  "metrics": result.get("metrics", numbers)}, indent=2) + "\n")
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
             f"{result['status']}. Test split unless marked val; probes read the {result['probed_layer']}.",
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


def check(run_dir: Path, out: Path) -> int:
    """`--check`: is OUT current for the run? 0 if it is, a UserError (exit 2) naming why not."""
    from spreadcon.errors import UserError
    from spreadcon.evaluate.stamp import stale_reason

    if not (out / "metrics.json").exists():
        raise UserError(f"{out} holds no evaluation yet; run `spreadcon eval {run_dir}`")
    reason = stale_reason(out / "metrics.json", run_dir)
    if reason is not None:
        raise UserError(f"stale: {reason}; run `spreadcon eval {run_dir}` again")
    print(f"{out} is current ({run_status(run_dir)['status']})")
    return 0


def run(args: argparse.Namespace) -> int:
    """User errors go to `spreadcon.cli.main`'s one-line handler."""
    out = args.out or args.run_dir / "eval"
    if args.check:
        return check(args.run_dir, out)
    if args.probe_epochs < 1:
        raise ValueError(f"--probe-epochs must be >= 1, got {args.probe_epochs}")
    result = evaluate_run(args.run_dir, args.out, checkpoint=args.checkpoint, probe_epochs=args.probe_epochs,
                          pictures=args.pictures, device=args.device, seed=args.seed)
    print(markdown(result))
    if result.get("replaced_stale_eval"):
        print(f"replaced a stale evaluation: {result['replaced_stale_eval']}", file=sys.stderr)
    if not result["finished"]:
        print(f"note: {args.run_dir} is {result['status']}; resume it with `spreadcon train --out {args.run_dir} "
              f"--resume`", file=sys.stderr)
    print(f"wrote {out / 'eval.json'}, {out / 'eval.md'} and {out / 'metrics.json'}")
    return 0
