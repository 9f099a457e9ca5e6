"""`spreadcon apply noisy`: detect and correct noisy labels geometrically (paper Section 5.2).

    spreadcon apply noisy RUN_DIR --rate 0.2          # offline, on a trained run's train embeddings
    spreadcon apply noisy --out results/fig5-noise    # the Figure 5 (centre) experiment, small scale
    spreadcon apply noisy --smoke --out /tmp/noise    # the same, shrunk to seconds
"""

from __future__ import annotations

import argparse

from spreadcon.commands._args import floats, ints, strs


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "noisy", help="noisy-label detection and correction (offline on a run, or the Figure 5 experiment)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dir", nargs="?", help="a trained run: correct its train labels offline")
    parser.add_argument("--rate", type=float, help="expected noise rate in [0, 1) (offline mode)")
    parser.add_argument("--split", default="train", help="split of the run to correct (offline mode)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="score in random batches of this size, as in training (default: one batch)")
    parser.add_argument("--out", default=None,
                        help="output folder (offline default: RUN_DIR/noisy; experiment: results/fig5-noise)")
    parser.add_argument("--dataset", help="experiment dataset (default digits)")
    parser.add_argument("--encoder", help="experiment encoder (default cnn)")
    parser.add_argument("--rates", type=floats, help="noise rates, e.g. 0,0.1,0.2,0.5")
    parser.add_argument("--fractions", type=floats, help="CE-head labelled fractions, e.g. 0.2,0.5")
    parser.add_argument("--methods", type=strs, help="supcon,supcon+fix,spread+fix,spread,debiased")
    parser.add_argument("--seeds", type=ints, help="e.g. 0,1,2")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--device", help="auto, cpu, cuda")
    parser.add_argument("--smoke", action="store_true", help="a seconds-long version of the experiment")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.run_dir is not None:
        return run_offline(args)
    import torch

    from spreadcon.apps.noisy_experiment import NoiseExperiment, run_experiment

    torch.set_num_threads(1)
    exp = NoiseExperiment.smoke() if args.smoke else NoiseExperiment()
    changes = {"dataset": args.dataset, "encoder": args.encoder, "noise_rates": args.rates,
               "labelled_fractions": args.fractions, "methods": args.methods, "seeds": args.seeds,
               "epochs": args.epochs, "device": args.device}
    for key, value in changes.items():
        if value is not None:
            setattr(exp, key, value)
    if args.encoder is not None and args.encoder != "cnn":
        exp.encoder_options = {}
    out = args.out or "results/fig5-noise"
    run_experiment(exp, out)
    print(f"wrote {out}/table.md, results.json, fig5_noise.png")
    return 0


def run_offline(args: argparse.Namespace) -> int:
    """Correct one split of a trained run: corrected labels, scores and (when the run had noise)
    detection precision/recall against the clean labels."""
    import json
    from pathlib import Path

    import numpy as np

    from spreadcon.apps.noisy import NoisyLabelCorrector, detection_quality
    from spreadcon.runs import load_run

    if args.rate is None:
        raise SystemExit("give the expected noise rate with --rate (e.g. --rate 0.2)")
    run = load_run(args.run_dir)
    emb = run.embeddings(args.split)
    fit = NoisyLabelCorrector(args.rate, batch_size=args.batch_size, random_state=run.config.seed).fit(
        emb["embedding"], emb["label"])
    out = Path(args.out or Path(args.run_dir) / "noisy")
    out.mkdir(parents=True, exist_ok=True)
    table = np.stack([emb["index"], emb["label"], fit.labels_, fit.noisy_mask_.astype(int)], 1)
    np.savetxt(out / f"{args.split}_corrected.csv", table, fmt="%d", delimiter=",",
               header="index,label,corrected_label,marked_noisy", comments="")
    np.save(out / f"{args.split}_scores.npy", fit.scores_)
    summary = {"run": str(args.run_dir), "split": args.split, "rate": args.rate,
               "marked": int(fit.noisy_mask_.sum()), "changed": int((fit.labels_ != emb["label"]).sum())}
    if "clean_label" in emb:
        noisy = emb["label"] != emb["clean_label"]
        summary.update({k: v for k, v in detection_quality(fit.noisy_mask_, noisy).items()})
        summary["accuracy_before"] = float((emb["label"] == emb["clean_label"]).mean())
        summary["accuracy_after"] = float((fit.labels_ == emb["clean_label"]).mean())
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0
