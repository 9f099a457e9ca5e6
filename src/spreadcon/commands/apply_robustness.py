"""`spreadcon apply robustness`: strata recovery + Group DRO (paper Section 5.2, Figure 5 left).

    spreadcon apply robustness RUN_DIR                        # on a trained run: RUN_DIR/robustness/
    spreadcon apply robustness --out results/fig5-robustness  # the experiment: trains L_CE, L_SC, L_spread
    spreadcon apply robustness --smoke --out /tmp/robust      # the same, shrunk to seconds
    spreadcon apply robustness --dataset waterbirds --root DATA --out results/fig5-waterbirds
"""

from __future__ import annotations

import argparse

from spreadcon.commands._args import ints, strs


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "robustness", help="recover hidden strata by clustering, then Group DRO on them (Figure 5 left)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dir", nargs="?", help="a trained run (omit to run the experiment)")
    parser.add_argument("--out", default=None,
                        help="output folder (run: RUN_DIR/robustness; experiment: results/fig5-robustness)")
    recovery = parser.add_argument_group("recovery and Group DRO")
    recovery.add_argument("--reducer", choices=["umap", "none"], help="per-class reduction (default umap)")
    recovery.add_argument("--clusterer", choices=["gmm", "kmeans"], help="default gmm")
    recovery.add_argument("--k-range", type=ints, help="k_min,k_max searched by silhouette (default 2,10)")
    recovery.add_argument("--eta", type=float, help="Group DRO step size (default 0.01)")
    recovery.add_argument("--adjustment", type=float, help="group-size adjustment C (default 0)")
    recovery.add_argument("--gdro-epochs", type=int, help="epochs of the linear end models (default 50)")
    recovery.add_argument("--weight-decay", type=float, help="L2 of the end models (default 1e-3)")
    recovery.add_argument("--checkpoint", help="best, last or an epoch kept by the run "
                          "(run mode default best; the experiment uses last)")
    recovery.add_argument("--seed", type=int, help="seed of recovery and end models (run mode; default 0)")
    experiment = parser.add_argument_group("experiment (no RUN_DIR)")
    experiment.add_argument("--dataset", help="spurious-mnist (default), waterbirds or isic")
    experiment.add_argument("--root", help="data root for waterbirds / isic")
    experiment.add_argument("--losses", type=strs, help="e.g. ce,supcon,spread (default)")
    experiment.add_argument("--seeds", type=ints, help="e.g. 0,1,2 (default)")
    experiment.add_argument("--encoder", help="encoder name (default from the dataset preset)")
    experiment.add_argument("--epochs", type=int, help="training epochs (default from the dataset preset)")
    experiment.add_argument("--device", help="auto, cpu, cuda (default cpu)")
    experiment.add_argument("--smoke", action="store_true", help="a seconds-long version of the experiment")
    parser.set_defaults(func=run)


def _robustness_config(args: argparse.Namespace, base):
    from dataclasses import replace

    changes = {"clusterer": args.clusterer, "k_range": args.k_range, "eta": args.eta,
               "adjustment": args.adjustment, "epochs": args.gdro_epochs, "weight_decay": args.weight_decay,
               "seed": args.seed}
    changes = {k: v for k, v in changes.items() if v is not None}
    if args.reducer is not None:
        changes["reducer"] = None if args.reducer == "none" else "umap"
    if "k_range" in changes and len(changes["k_range"]) != 2:
        raise SystemExit("--k-range takes two integers, k_min,k_max (e.g. 2,10)")
    return replace(base, **changes)


def run(args: argparse.Namespace) -> int:
    import torch

    from spreadcon.apps.robustness import RobustnessConfig, RobustnessExperiment, apply_to_run, run_experiment

    torch.set_num_threads(1)
    if args.run_dir is not None:
        result = apply_to_run(args.run_dir, _robustness_config(args, RobustnessConfig()), out_dir=args.out,
                              checkpoint=args.checkpoint or "best")
        methods = result["methods"]
        print(f"recovered clusters per class: {result['n_clusters']}; "
              f"recovery F1 {result['recovery_train']['f1']:.3f}, ARI {result['recovery_train']['ari']:.3f}")
        for name, m in methods.items():
            print(f"{name:12s} worst-group acc {m['worst_group_accuracy']:.3f}  "
                  f"average acc {m['average_accuracy']:.3f}")
        print(f"wrote {args.out or args.run_dir + '/robustness'}/robustness.json")
        return 0

    exp = RobustnessExperiment.smoke() if args.smoke else RobustnessExperiment()
    changes = {"dataset": args.dataset, "root": args.root, "losses": args.losses, "seeds": args.seeds,
               "encoder": args.encoder, "epochs": args.epochs, "device": args.device,
               "checkpoint": args.checkpoint}
    for key, value in changes.items():
        if value is not None:
            setattr(exp, key, value)
    if args.encoder is not None:
        exp.encoder_options = {}
    exp.robustness = _robustness_config(args, exp.robustness)
    out = args.out or "results/fig5-robustness"
    results = run_experiment(exp, out)
    print(open(f"{out}/table.md").read())
    print(f"wrote {out}/table.md, results.json, pictures/ ({len(results['runs'])} runs)")
    return 0
