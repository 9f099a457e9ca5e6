"""`spreadcon reproduce NAME`: regenerate one of the paper's tables or figures."""

from __future__ import annotations

import argparse

from spreadcon.experiments import SCALES


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reproduce", help="regenerate a table or figure of the paper (results/<name>/)",
        description="Run the experiment behind one of the paper's tables or figures and write "
                    "OUT/NAME/{results.json,table.md,*.png} (mean ± std over seeds beside the paper's "
                    "numbers). Runs live in OUT/runs/<key>; finished ones are reused, interrupted "
                    "ones resumed (spreadcon.runs.train_or_reuse), every run is evaluated again "
                    "(spreadcon.evaluate.run). `--list` shows every experiment; `demo` is also "
                    "`spreadcon demo --out DIR`.",
    )
    parser.add_argument("name", nargs="?", metavar="NAME", help="experiment name (see --list)")
    parser.add_argument("--list", action="store_true", help="list the experiments and exit")
    parser.add_argument("--index", action="store_true",
                        help="write OUT/README.md, an index of the results under OUT with their checked claims")
    parser.add_argument("--scale", choices=SCALES, default="small",
                        help="small: embedded data, small encoders, CPU (default); medium: real data under "
                             "--data-root, a class-balanced subset and a CPU-sized net (about an hour per "
                             "loss on 2 cores; fig4-transfer only); full: the paper's datasets under "
                             "--data-root, its models and budgets (meant for a GPU)")
    parser.add_argument("--seeds", type=int, default=None, metavar="N",
                        help="number of seeds (default: the experiment's own, usually 3)")
    parser.add_argument("--data-root", default=None, metavar="DIR",
                        help="folder holding the datasets of --scale full (see `spreadcon list`)")
    parser.add_argument("--out", default="results", metavar="DIR", help="output folder (default: results)")
    parser.add_argument("--dataset", default=None, metavar="NAME",
                        help="run the experiment on this dataset instead of its own (e.g. `sweep`)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--smoke", action="store_true",
                        help="shrink the config to run in seconds (a check that it runs, not a result)")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing; write the tables from the runs finished so far (marked partial)")
    parser.add_argument("--rejudge", action="store_true",
                        help="train and evaluate nothing: write table.md and the claims again from the rows "
                             "OUT/NAME/results.json saved (results whose runs are not on this machine)")
    parser.add_argument("--dry-run", action="store_true",
                        help="plan and validate every run (configs, names) without running anything")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from spreadcon.experiments import registry
    from spreadcon.experiments.runner import Context, output_dir, rejudge, run_experiment

    if args.list:
        for name, exp in registry.experiments().items():
            print(f"{name:24s} ~{exp.cpu_minutes:g} min expected (small, 2 CPU cores)  {exp.summary}")
        return 0
    if args.index:
        from spreadcon.experiments.index import write_index

        print(f"wrote {write_index(args.out)}")
        return 0
    if not args.name:
        raise ValueError("give an experiment NAME, or --list to see them")
    exp = registry.get(args.name)
    if args.rejudge:
        print(f"wrote {rejudge(exp, output_dir(Path(args.out), exp.name, args.scale, args.smoke, args.dataset))}")
        return 0
    ctx = Context(out=Path(args.out), data_root=args.data_root, device=args.device, smoke=args.smoke,
                  dataset=args.dataset, train=not args.report_only, dry_run=args.dry_run)
    run_experiment(exp, ctx, scale=args.scale, seeds=args.seeds)
    return 0
