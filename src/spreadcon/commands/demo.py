"""`spreadcon demo --out DIR`: the main job, the `demo` experiment (spreadcon.experiments.demo)
run by the experiment runner into DIR: DIR/results.json, DIR/table.md, the t-SNE pictures and
the three runs under DIR/runs. Re-running reuses finished runs and resumes interrupted ones."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="the main job: SupCon vs SimCLR vs L_spread on MNIST-Coarse, trained, evaluated, reported",
        description="Train SupCon, SimCLR and L_spread on mnist5k-coarse (digit < 5 vs >= 5; the digit "
                    "is the hidden stratum) with the same budget and seed, each jointly with a "
                    "cross-entropy head, under both protocols: the paper's (one embedding for the loss, "
                    "the CE head and the probes) and the projection head's (h -> MLP -> z), beside two "
                    "floors. Evaluates each (end-model coarse accuracy, coarse-to-fine transfer, "
                    "intra-class cosine, t-SNE), writes DIR/results.json (with each run's seconds), "
                    "DIR/table.md and the pictures, and prints the report. Planned to take under 10 "
                    "minutes on 2 idle CPU cores. The same as `spreadcon reproduce demo`, written into DIR.",
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the runs and the report")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs per run (default: the demo's 30)")
    parser.add_argument("--seed", type=int, default=0, help="seed shared by the runs (default: 0)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--smoke", action="store_true",
                        help="a seconds-long check of the whole pipeline on 8x8 digits-coarse with a "
                             "test-size encoder (numbers meaningless)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from spreadcon.experiments.demo import DEMO
    from spreadcon.experiments.runner import Context, run_experiment

    overrides = {"train": {"epochs": args.epochs}} if args.epochs is not None else None
    try:
        ctx = Context(out=args.out, exp_dir=args.out, device=args.device, smoke=args.smoke, overrides=overrides,
                      progress=args.progress)
        run_experiment(DEMO, ctx, seeds=[args.seed])
    except ValueError as err:
        print(f"spreadcon demo: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nspreadcon demo: interrupted; run the same command again to continue", file=sys.stderr)
        return 130
    return 0
