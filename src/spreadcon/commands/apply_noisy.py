"""`spreadcon apply noisy RUN_DIR --rate R`: detect and correct noisy labels geometrically (Section 5.2).

    spreadcon apply noisy runs/spread --rate 0.2               # writes runs/spread/noisy/
    spreadcon apply noisy runs/spread --rate 0.2 --batch-size 256   # score in training-size batches

Scores every point of one split by the embedding geometry, marks the round(rate * N) lowest and
relabels them to the nearest class centre. Writes <split>_corrected.csv, <split>_scores.npy and
summary.json (with detection precision/recall when the run was trained on noisy labels). The
Figure 5 (centre) experiment is `spreadcon reproduce fig5-noise`.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "noisy", help="noisy-label detection and correction on a trained run's embeddings",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run folder from `spreadcon train`")
    parser.add_argument("--rate", type=float, required=True, help="expected noise rate in [0, 1), e.g. 0.2")
    parser.add_argument("--split", default="train", choices=["train", "val", "test"], help="split to correct (default train)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="score in random batches of this size, as in training (default: one batch)")
    parser.add_argument("--checkpoint", default="best", help="best (default), last or an epoch kept by the run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the batches (default 0)")
    parser.add_argument("--out", default=None, help="output folder (default: RUN_DIR/noisy)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from spreadcon.apps.noisy import NoisyLabelCorrector, apply_to_run

    corrector = NoisyLabelCorrector(args.rate, batch_size=args.batch_size, random_state=args.seed)
    summary = apply_to_run(args.run_dir, corrector=corrector, split=args.split, checkpoint=args.checkpoint,
                           out_dir=args.out)
    print(json.dumps({k: v for k, v in summary.items() if k != "stamp"}, indent=2))
    return 0
