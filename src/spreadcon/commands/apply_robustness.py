"""`spreadcon apply robustness RUN_DIR`: strata recovery + Group DRO on a trained run (Section 5.2).

    spreadcon apply robustness runs/spread                         # writes runs/spread/robustness/
    spreadcon apply robustness runs/spread --adjustment 2 --reweight-groups   # Sagawa's Waterbirds settings
    spreadcon apply robustness runs/spread --overcluster          # GEORGE's overclustering

Recovers pseudo-strata per class on the train split, then fits linear end models on the frozen
embeddings (mode linear-frozen): ERM, Group DRO on the recovered groups, Group DRO on the true
groups (upper bound); reports worst-group, per-group and training-weighted average accuracy on
the test split's true groups. The experiment over losses and seeds (Figure 5, left) is
`spreadcon reproduce fig5-robustness`.
"""

from __future__ import annotations

import argparse

from spreadcon.commands._args import ints
from spreadcon.errors import UserError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "robustness", help="recover hidden strata by clustering, then Group DRO on them, on a run",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run folder from `spreadcon train`")
    parser.add_argument("--out", default=None, help="output folder (default: RUN_DIR/robustness)")
    parser.add_argument("--checkpoint", default="best", help="best (default), last or an epoch kept by the run")
    parser.add_argument("--seed", type=int, default=0, help="seed of recovery and end models (default 0)")
    parser.add_argument("--no-pictures", dest="pictures", action="store_false", help="skip the per-class PNGs")
    recovery = parser.add_argument_group("strata recovery (GEORGE)")
    recovery.add_argument("--reducer", choices=["umap", "none"], default="umap", help="per-class reduction (default umap)")
    recovery.add_argument("--clusterer", choices=["gmm", "kmeans"], default="gmm", help="default gmm")
    recovery.add_argument("--k-range", type=ints, default=(2, 10), help="k_min,k_max searched per class (default 2,10)")
    recovery.add_argument("--overcluster", action="store_true", help="GEORGE's overclustering")
    recovery.add_argument("--overcluster-factor", type=int, default=5, help="sub-clusters per cluster (default 5)")
    dro = parser.add_argument_group("Group DRO end model (linear on frozen embeddings)")
    dro.add_argument("--eta", type=float, default=0.01, help="step size of the group weights, in (0, 10] (default 0.01)")
    dro.add_argument("--adjustment", type=float, default=0.0, help="group-size adjustment C (default 0; Sagawa: 2)")
    dro.add_argument("--reweight-groups", action="store_true", help="group-balanced minibatches (Sagawa's --reweight_groups)")
    dro.add_argument("--gdro-epochs", type=int, default=50, help="epochs of the end models (default 50)")
    dro.add_argument("--weight-decay", type=float, default=1e-3, help="L2 of the end models (default 1e-3)")
    parser.set_defaults(func=run)


def estimators(args: argparse.Namespace) -> tuple:
    """(StrataRecovery, GroupDRO) templates from the options."""
    from spreadcon.apps.gdro import GroupDRO
    from spreadcon.apps.strata import StrataRecovery

    if len(args.k_range) != 2:
        raise UserError(f"--k-range takes two integers, k_min,k_max (e.g. 2,10), got {args.k_range}")
    recovery = StrataRecovery(reducer=None if args.reducer == "none" else "umap", clusterer=args.clusterer,
                              k_range=tuple(args.k_range), overcluster=args.overcluster,
                              overcluster_factor=args.overcluster_factor, random_state=args.seed)
    end_model = GroupDRO(eta=args.eta, adjustment=args.adjustment, reweight_groups=args.reweight_groups,
                         epochs=args.gdro_epochs, weight_decay=args.weight_decay, random_state=args.seed)
    return recovery, end_model


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from spreadcon.apps.robustness import apply_to_run

    recovery, end_model = estimators(args)
    out = Path(args.out) if args.out else Path(args.run_dir) / "robustness"
    result = apply_to_run(args.run_dir, recovery=recovery, end_model=end_model, checkpoint=args.checkpoint,
                          out_dir=out, pictures=args.pictures)
    print(f"recovered clusters per class: {result['n_clusters']}; "
          f"recovery F1 {result['recovery_train']['f1']:.3f}, ARI {result['recovery_train']['ari']:.3f}")
    for name, m in result["methods"].items():
        print(f"{name:12s} worst-group acc {m['worst_group_accuracy']:.3f}  average acc {m['average_accuracy']:.3f}")
    print(f"wrote {out / 'robustness.json'}")
    return 0
