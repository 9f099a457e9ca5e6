"""`spreadcon eval RUN_DIR`: the paper's evaluations of one trained run (spreadcon.evaluation).

The numbers are `spreadcon.evaluation.evaluate`'s on the test and val splits, with its
diagnostics, per-stratum rows (Figure 3) and pictures. Outputs are stamped with the checkpoint;
an eval/ whose stamp no longer matches the run (resumed, retrained) is replaced, and `--check`
reports it stale. An unfinished run is evaluated and reported as such ("1 of 3 epochs: unfinished").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


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


def check(run_dir: Path, out: Path) -> int:
    """`--check`: is OUT current for the run? 0 if it is, a UserError (exit 2) naming why not."""
    from spreadcon.checkpoint import stale_reason
    from spreadcon.errors import UserError
    from spreadcon.runs import run_status

    if not (out / "metrics.json").exists():
        raise UserError(f"{out} holds no evaluation yet; run `spreadcon eval {run_dir}`")
    reason = stale_reason(out / "metrics.json", run_dir)
    if reason is not None:
        raise UserError(f"stale: {reason}; run `spreadcon eval {run_dir}` again")
    print(f"{out} is current ({run_status(run_dir)})")
    return 0


def run(args: argparse.Namespace) -> int:
    """User errors go to `spreadcon.cli.main`'s one-line handler."""
    from spreadcon.evaluation import evaluate, markdown

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
