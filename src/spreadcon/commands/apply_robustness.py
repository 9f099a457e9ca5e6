"""`spreadcon apply robustness RUN_DIR`: strata recovery + Group DRO on a trained run (Section 5.2).

    spreadcon apply robustness runs/spread                         # writes runs/spread/robustness/
    spreadcon apply robustness runs/spread --init run              # end models start from the run's encoder
    spreadcon apply robustness runs/spread --end-model linear-frozen   # the fast option (seconds)
    spreadcon apply robustness runs/spread --overcluster          # GEORGE's overclustering

Recovers pseudo-strata per class on the train split (pseudo_groups.npz), then trains three end
models: ERM, Group DRO on the recovered groups, Group DRO on the true groups (upper bound). By
default they train the network with the trainer (objective group_dro, C = 2, group-balanced
sampling, selection by the worst validation group; run folders in OUT/end_models); with
--end-model linear-frozen they are linear layers on the frozen embeddings. Reports worst-group,
per-group and training-weighted average accuracy on the test split's true groups. The experiment over losses and seeds (Figure 5, left) is
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
    dro = parser.add_argument_group("Group DRO end models (ERM, recovered groups, true groups)")
    dro.add_argument("--end-model", choices=["network", "linear-frozen"], default="network",
                     help="network: train the run's network under Group DRO with the trainer (GEORGE's and "
                          "Sagawa's pipeline; default); linear-frozen: a linear layer on the frozen "
                          "embeddings (the fast option, seconds)")
    dro.add_argument("--init", choices=["scratch", "run"], default="scratch",
                     help="network end models start from scratch (default) or from the run's encoder")
    dro.add_argument("--eta", type=float, default=0.01, help="step size of the group weights, in (0, 10] (default 0.01)")
    dro.add_argument("--adjustment", type=float, default=None,
                     help="group-size adjustment C (default: 2 for network, as Sagawa on Waterbirds; 0 for linear-frozen)")
    dro.add_argument("--reweight-groups", action=argparse.BooleanOptionalAction, default=None,
                     help="group-balanced minibatches, Sagawa's --reweight_groups (default: on for network, off for linear-frozen)")
    dro.add_argument("--gdro-epochs", type=int, default=None, help="epochs of the end models (default 15 network, 50 linear-frozen)")
    dro.add_argument("--lr", type=float, default=3e-3, help="learning rate of the network end models (default 3e-3)")
    dro.add_argument("--weight-decay", type=float, default=None, help="L2 of the end models (default 0.1 network, 1e-3 linear-frozen)")
    parser.set_defaults(func=run)


def estimators(args: argparse.Namespace) -> tuple:
    """(StrataRecovery, GroupDRO or NetworkGroupDRO) templates from the options."""
    from spreadcon.apps.gdro import GroupDRO
    from spreadcon.apps.gdro_network import NetworkGroupDRO
    from spreadcon.apps.strata import StrataRecovery

    if len(args.k_range) != 2:
        raise UserError(f"--k-range takes two integers, k_min,k_max (e.g. 2,10), got {args.k_range}")
    recovery = StrataRecovery(reducer=None if args.reducer == "none" else "umap", clusterer=args.clusterer,
                              k_range=tuple(args.k_range), overcluster=args.overcluster,
                              overcluster_factor=args.overcluster_factor, random_state=args.seed)
    network = args.end_model == "network"

    def pick(value, if_network, if_linear):
        return value if value is not None else (if_network if network else if_linear)

    options = {"eta": args.eta, "adjustment": pick(args.adjustment, 2.0, 0.0),
               "epochs": pick(args.gdro_epochs, 15, 50), "weight_decay": pick(args.weight_decay, 0.1, 1e-3)}
    try:
        if network:
            end_model = NetworkGroupDRO(**options, lr=args.lr, init=args.init,
                                        group_sampling=pick(args.reweight_groups, True, False))
        else:
            end_model = GroupDRO(**options, reweight_groups=pick(args.reweight_groups, True, False),
                                 random_state=args.seed)
    except ValueError as err:
        raise UserError(str(err)) from None
    return recovery, end_model


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from spreadcon.apps.robustness import apply_to_run

    recovery, end_model = estimators(args)
    out = Path(args.out) if args.out else Path(args.run_dir) / "robustness"
    result = apply_to_run(args.run_dir, recovery=recovery, end_model=end_model, checkpoint=args.checkpoint,
                          out_dir=out, pictures=args.pictures)
    print(f"end models: {args.end_model}")
    print(f"recovered clusters per class: {result['n_clusters']}; "
          f"recovery F1 {result['recovery_train']['f1']:.3f}, ARI {result['recovery_train']['ari']:.3f}")
    for name, m in result["methods"].items():
        print(f"{name:12s} worst-group acc {m['worst_group_accuracy']:.3f}  average acc {m['average_accuracy']:.3f}")
    print(f"wrote {out / 'robustness.json'}")
    return 0
