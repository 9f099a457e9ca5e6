"""`spreadcon apply coreset RUN_DIR [RUN_DIR ...] --size F`: a minimal coreset from trained runs (Section 5.3).

    spreadcon apply coreset runs/sub10-s0 runs/sub20-s0 runs/sub50-s0 --size 0.3   # the paper's rule
    spreadcon apply coreset runs/ce-s0 runs/ce-s1 --size 0.5 --score forgetting    # Toneva et al.
    spreadcon apply coreset runs/ce-s0 --size 0.5 --score grand --checkpoint 3     # Paul et al.
    spreadcon apply coreset runs/spread --size 0.5 --score el2n                    # EL2N baseline
    spreadcon apply coreset runs/spread --size 0.5 --method random                 # random baseline

Scores of the training points of the first run's dataset: difficulty (how many runs' models
classify a point right; the strata rule keeps a class-proportional coreset levelled across
difficulty buckets), forgetting (correct -> wrong changes over the epochs, summed over runs;
needs runs trained with `--set track_examples=true`), EL2N and GraNd (the error norm and the
per-example norm of the cross-entropy gradient of the runs' models at --checkpoint, averaged;
Paul et al. score early in training: train with `--set keep_checkpoints=[3]`, pass
`--checkpoint 3`). The baselines keep their highest scores per class (--method top_score).
Writes OUT/coreset.{npy,csv} (rows of the dataset as trained), OUT/SCORE.npy (the per-point
scores) and OUT/coreset.json. The Figure 5 (right) experiment, with fresh models trained on each
coreset, is `spreadcon reproduce fig5-coreset`.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "coreset", help="select a coreset of a run's training points from one or more trained runs",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders of one dataset")
    parser.add_argument("--size", type=float, required=True, help="fraction of the training points kept, in (0, 1]")
    parser.add_argument("--method", default=None, choices=["strata", "top_score", "random"],
                        help="selection rule (default strata for --score difficulty, else top_score)")
    parser.add_argument("--score", default="difficulty", choices=["difficulty", "forgetting", "el2n", "grand"],
                        help="per-point score (default difficulty: runs that classify the point right)")
    parser.add_argument("--checkpoint", default="last",
                        help="the models scored: last (default, the final models), best or a kept epoch")
    parser.add_argument("--seed", type=int, default=0, help="seed of the order inside buckets (default 0)")
    parser.add_argument("--out", default=None, help="output folder (default: FIRST_RUN/coreset)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from spreadcon.apps.coreset import CoresetSelector, apply_to_run, coreset_size

    coreset_size(args.size, 1)  # a bad --size fails before any model is loaded
    method = args.method or ("strata" if args.score == "difficulty" else "top_score")
    selector = CoresetSelector(args.size, method=method, random_state=args.seed)
    summary = apply_to_run(args.run_dirs, selector=selector, score=args.score, checkpoint=args.checkpoint,
                           out_dir=args.out)
    print(f"kept {summary['n_kept']} of {summary['n_train']} training points; wrote {summary['indices'][0]}")
    return 0
