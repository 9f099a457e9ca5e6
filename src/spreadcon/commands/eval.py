"""`spreadcon eval RUN_DIR`: the paper's evaluations of one trained run.

    result = evaluate("runs/spread")     # also writes runs/spread/eval/{eval.json, eval.md, metrics.json, *.png}

The numbers are `spreadcon.evaluate.run.evaluate_run`'s (the project's one evaluation and its
metric vocabulary, METRICS), on the test and val splits, plus three diagnostics of the test
embeddings that only this command reports: cosine_to_class_centre, alignment and uniformity
(Wang & Isola 2020, on two augmented views of each test image), and per-stratum rows (Figure 3).

Outputs are stamped (metrics.json: the checkpoint's file, epoch and sha256); an eval/ whose
stamp no longer matches the run (resumed, retrained) is replaced, and `--check` reports it
stale. An unfinished run is evaluated and reported as such ("1 of 3 epochs: unfinished").
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


def _diagnostics(run, te: dict, *, seed: int) -> dict[str, Any]:
    """cosine_to_class_centre, uniformity, and alignment on two augmented views of each test image."""
    import torch

    from spreadcon.evaluate import geometry
    from spreadcon.evaluate.embed import embed

    z, y = te.get("features", te["embedding"]), te["label"]  # h where the run has a projection head
    method = "forward_features" if "features" in te else "forward"
    pairs = run.views()(run.dataset.x[te["index"]], 2, torch.Generator().manual_seed(seed))  # [N, 2, ...]
    a, b = (embed(run.model.encoder, pairs[:, v], method=method) for v in (0, 1))
    return {"cosine_to_class_centre": float(geometry.cosine_to_class_centre(z, y).mean()),
            "uniformity": geometry.uniformity(z), "alignment": geometry.alignment(a, b)}


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


def evaluate(run_dir: str | Path, out_dir: str | Path | None = None, *, checkpoint: str = "best",
             probe_epochs: int = 100, pictures: bool | str = True, device: str = "cpu",
             seed: int = 0) -> dict[str, Any]:
    """Evaluate a run folder; write out_dir/eval.json, eval.md, metrics.json (stamped with the
    checkpoint's epoch and sha256) and PNGs; return the result.
    pictures: True (Figures 2 and 3), "fig2" (Figure 2 only) or False."""
    import torch

    from spreadcon.evaluate.run import evaluate_run, strata_rows
    from spreadcon.evaluate.stamp import checkpoint_stamp
    from spreadcon.runs import load_run

    status = run_status(run_dir)
    stamp = checkpoint_stamp(run_dir, checkpoint)
    run = load_run(run_dir, checkpoint=checkpoint, device=device)
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "eval"
    out.mkdir(parents=True, exist_ok=True)
    stale = replace_stale(out, Path(run_dir))
    metrics = {**evaluate_run(run, "test", checkpoint, probe_epochs=probe_epochs, seed=seed),
               **evaluate_run(run, "val", checkpoint, probe_epochs=probe_epochs, seed=seed, geometry=False)}
    te = {k: torch.from_numpy(v) for k, v in run.embeddings("test").items()}
    described = {k: v for k, v in status.items() if k != "config"}
    result = {**_describe(run, run_dir, checkpoint), "stamp": stamp, **described, "metrics": metrics, **metrics, **_diagnostics(run, te, seed=seed),
              "strata": strata_rows(run, "test", checkpoint)}
    if stale:
        result["replaced_stale_eval"] = stale
    if pictures:
        title = f"{result['loss']} on {run.config.dataset} (test split)"
        result["pictures"] = _pictures(run, te, out, title, which=pictures, seed=seed)
    (out / "metrics.json").write_text(json.dumps({"stamp": stamp, "status": status["status"], "metrics": metrics},
                                                 indent=2) + "\n")
    (out / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "eval.md").write_text(markdown(result))
    return result


def _describe(run, run_dir: str | Path, checkpoint: str) -> dict[str, Any]:
    import torch

    config = run.config
    return {"run_dir": str(run_dir), "checkpoint": checkpoint, "dataset": config.dataset,
            "encoder": config.encoder, "protocol": config.protocol,
            "loss": "ce" if config.protocol == "ce" else config.loss, "alpha": config.alpha,
            "temperature": config.temperature, "seed": config.seed,
            "num_classes": run.dataset.num_classes, "num_strata": run.dataset.num_strata,
            "probed_layer": ("encoder output (what the loss and the CE head read)"
                             if isinstance(run.model.encoder.proj, torch.nn.Identity) else
                             "backbone output h, before the projection head (*_z metrics: its output z, "
                             "what the loss and the CE head read)")}


def markdown(result: dict[str, Any]) -> str:
    keys = [*result["metrics"], "cosine_to_class_centre", "alignment", "uniformity"]
    lines = [f"# Evaluation of `{result['run_dir']}` ({result['checkpoint']} checkpoint)", "",
             f"{result['loss']} (protocol {result['protocol']}, alpha {result['alpha']}, tau "
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
    result = evaluate(args.run_dir, args.out, checkpoint=args.checkpoint, probe_epochs=args.probe_epochs,
                          pictures=args.pictures, device=args.device, seed=args.seed)
    print(markdown(result))
    if result.get("replaced_stale_eval"):
        print(f"replaced a stale evaluation: {result['replaced_stale_eval']}", file=sys.stderr)
    if not result["finished"]:
        print(f"note: {args.run_dir} is {result['status']}; resume it with `spreadcon train --out {args.run_dir} "
              f"--resume`", file=sys.stderr)
    print(f"wrote {out / 'eval.json'}, {out / 'eval.md'} and {out / 'metrics.json'}")
    return 0
