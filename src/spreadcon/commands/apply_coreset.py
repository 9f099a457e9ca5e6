"""`spreadcon apply coreset`: minimal coresets from strata difficulty (paper Section 5.3).

    spreadcon apply coreset --out results/fig5-coreset                    # Figure 5 (right), small scale
    spreadcon apply coreset --methods strata --sizes 0.3 --no-evaluate    # just select and save indices
    spreadcon apply coreset --smoke --out /tmp/coreset                    # seconds

Writes OUT/scores/<method>.npy (per training point), OUT/indices/<method>_<size>_s<seed>.{npy,csv}
(rows of the dataset's train split), and with evaluation OUT/results.json, table.md and
fig5_coreset.png. Training runs are kept under OUT/runs and reused when the command is repeated.
"""

from __future__ import annotations

import argparse

from spreadcon.commands._args import floats, ints, strs


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "coreset", help="coresets from L_spread difficulty vs random, forgetting, EL2N, GraNd",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dataset", help="dataset (default digits)")
    parser.add_argument("--encoder", help="encoder (default cnn)")
    parser.add_argument("--methods", type=strs, help="strata,random,forgetting,el2n,grand")
    parser.add_argument("--sizes", type=floats, help="coreset fractions in (0, 1], e.g. 0.3,0.5,0.7,0.9")
    parser.add_argument("--subsamples", type=floats, help="difficulty subsample fractions, e.g. 0.1,0.2,0.5")
    parser.add_argument("--difficulty-seeds", type=ints, help="seeds per subsample fraction, e.g. 0,1,2")
    parser.add_argument("--labelled-fraction", type=float, help="CE-head labels of the difficulty runs (0.01)")
    parser.add_argument("--seeds", type=ints, help="seeds of the fresh models trained on each coreset")
    parser.add_argument("--epochs", type=int, help="epochs of every training run")
    parser.add_argument("--no-evaluate", action="store_true", help="only score and select; train nothing fresh")
    parser.add_argument("--device", help="auto, cpu, cuda")
    parser.add_argument("--out", default="results/fig5-coreset", help="output folder")
    parser.add_argument("--smoke", action="store_true", help="a seconds-long version of the experiment")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from spreadcon.apps.coreset_experiment import CoresetExperiment, run_experiment

    torch.set_num_threads(1)
    exp = CoresetExperiment.smoke() if args.smoke else CoresetExperiment()
    changes = {"dataset": args.dataset, "encoder": args.encoder, "methods": args.methods,
               "sizes": args.sizes, "subsample_fractions": args.subsamples,
               "difficulty_seeds": args.difficulty_seeds, "labelled_fraction": args.labelled_fraction,
               "eval_seeds": args.seeds, "device": args.device}
    for key, value in changes.items():
        if value is not None:
            setattr(exp, key, value)
    if args.encoder is not None and args.encoder != "cnn":
        exp.encoder_options = {}
    if args.epochs is not None:
        exp.difficulty_epochs = exp.score_epochs = exp.eval_epochs = args.epochs
        exp.early_epoch = min(exp.early_epoch, args.epochs)
    exp.evaluate = not args.no_evaluate
    run_experiment(exp, args.out)
    print(f"wrote {args.out}/" + ("table.md, results.json, fig5_coreset.png, " if exp.evaluate else "")
          + "scores/, indices/")
    return 0
