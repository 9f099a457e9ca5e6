"""`spreadcon demo --out DIR`: the main job. SupCon, SimCLR and L_spread on MNIST-Coarse.

Three runs that differ only in the contrastive loss: same data (mnist5k-coarse: label digit < 5
vs >= 5, the digit is the hidden stratum), encoder, budget and seed, each optimised jointly with a
cross-entropy head on the same encoder output, as the paper does for MNIST (its ViT protocol,
Section 5 / Appendix E), tau = 0.5. Each run is evaluated (`spreadcon eval`): end-model accuracy
on the coarse task, coarse-to-fine transfer (a linear probe on the frozen encoder output trained
on the digits), intra-class cosine similarity, and a t-SNE picture. L_spread's alpha is the
value the paper's selection procedure picked on this dataset: results/alpha_selection_mnist5k-coarse.md
(`python -m spreadcon.experiments.alpha_selection`, see ALPHA_SELECTION below).

Writes DIR/results.json (rows: loss, coarse_accuracy, fine_transfer_accuracy, intra_class_cosine,
seed, ...), DIR/report.md, DIR/<loss>/ (each run folder, with eval/tsne.png) and prints the table.
Re-running resumes finished or interrupted runs instead of training again.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

# The protocol, chosen from the paper's description (not from the results):
# - joint contrastive + CE head on the same encoder output, weights 1 and 1 (paper's MNIST/ViT
#   protocol; authors' code), tau 0.5, 2 views, AdamW lr 3e-4, weight decay 0.01, batch 128,
#   cosine schedule with 1 warm-up epoch; model selection on validation accuracy (coarse labels);
# - probes read the encoder output, the layer both heads read (the paper has no projection head);
# - the encoder is the small CNN instead of the paper's 3.2M-parameter ViT, and the epoch count
#   is what fits 3 runs in 10 CPU minutes (the paper trains 600 epochs on a GPU).
DATASET = "mnist5k-coarse"
ENCODER = "cnn"
ENCODER_OPTIONS = {"widths": [16, 32, 64]}  # a narrower cnn: more epochs fit the CPU budget
EPOCHS = 30
TEMPERATURE = 0.5
LOSSES = ("supcon", "simclr", "spread")
# Selected by results/alpha_selection_mnist5k-coarse.md (best validation coarse-to-fine transfer
# over alpha in {0.16, 0.25, 0.33, 0.5, 0.67} at tau 0.5, this protocol); a test checks the two agree.
ALPHA_SELECTION = "results/alpha_selection_mnist5k-coarse.md"
SELECTED_ALPHA = 0.25

ALPHAS = (0.16, 0.25, 0.33, 0.5, 0.67)  # the paper's sweep (Appendix E.2)

# The paper's MNIST-Coarse numbers (Figure 4): end model and coarse-to-fine, in percent.
PAPER = {"simclr": (99.1, 97.1), "supcon": (99.4, 98.8), "spread": (99.4, 99.0)}
NAMES = {"simclr": "L_SS (SimCLR)", "supcon": "L_SC (SupCon)", "spread": "L_spread"}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="the main job: SupCon vs SimCLR vs L_spread on MNIST-Coarse, trained, evaluated, reported",
        description="Train SupCon, SimCLR and L_spread on mnist5k-coarse (digit < 5 vs >= 5; the digit "
                    "is the hidden stratum) with the same encoder, budget and seed, each jointly with a "
                    f"cross-entropy head (the paper's MNIST protocol), tau {TEMPERATURE}, L_spread's alpha "
                    f"{SELECTED_ALPHA} as selected in {ALPHA_SELECTION}. Evaluates each (end-model coarse "
                    "accuracy, coarse-to-fine transfer, intra-class cosine, t-SNE) and writes "
                    "DIR/results.json, DIR/report.md and the pictures; prints the table. About 10 minutes "
                    "on 2 CPU cores. Re-running continues finished or interrupted runs.",
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the runs and the report")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help=f"training epochs per run (default: {EPOCHS})")
    parser.add_argument("--seed", type=int, default=0, help="seed shared by the three runs (default: 0)")
    parser.add_argument("--device", default="auto", help="auto (default: cuda if available), cpu, cuda")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--smoke", action="store_true",
                        help="a seconds-long check of the whole pipeline on 8x8 digits-coarse with a "
                             "test-size encoder (numbers meaningless)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    parser.add_argument("--select-alpha", action="store_true",
                        help="instead of the demo, run the paper's alpha selection for L_spread with the "
                             f"demo's protocol: alpha in {list(ALPHAS)} at tau {TEMPERATURE}, selected by "
                             "validation coarse-to-fine transfer; runs go to DIR/alpha_<a>, the table to "
                             "--table-dir")
    parser.add_argument("--table-dir", type=Path, default=None,
                        help="with --select-alpha: where alpha_selection_mnist5k-coarse.{json,md} go "
                             "(default: DIR; the checked-in table is in results/)")
    parser.set_defaults(func=run)


def demo_configs(out: Path, *, epochs: int, seed: int, device: str, smoke: bool, progress: bool) -> list:
    from spreadcon.config import TrainConfig

    common: dict[str, Any] = dict(
        dataset=DATASET, encoder=ENCODER, encoder_options=dict(ENCODER_OPTIONS), protocol="joint", temperature=TEMPERATURE, epochs=epochs,
        batch_size=128, lr=3e-4, weight_decay=0.01, warmup_epochs=1.0, ce_weight=1.0,
        contrastive_weight=1.0, views=2, seed=seed, device=device, progress=progress)
    if smoke:
        common.update(dataset="digits-coarse", encoder="cnn-test", encoder_options={}, epochs=1, batch_size=256,
                      lr=3e-3)
    return [TrainConfig(**common, loss=loss, alpha=SELECTED_ALPHA if loss == "spread" else 0.5,
                        out_dir=str(out / loss)) for loss in LOSSES]


def run_demo(out: Path, *, epochs: int = EPOCHS, seed: int = 0, device: str = "auto", smoke: bool = False,
             progress: bool = True) -> list[dict[str, Any]]:
    """Train and evaluate the three runs; write results.json and report.md; return the rows."""
    from spreadcon.commands.eval import evaluate_run
    from spreadcon.train import train

    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for config in demo_configs(out, epochs=epochs, seed=seed, device=device, smoke=smoke, progress=progress):
        run_dir = Path(config.out_dir)
        start = time.perf_counter()
        resume = (run_dir / "checkpoint.pt").exists()
        print(f"== {NAMES[config.loss]}: {'continuing' if resume else 'training'} {config.epochs} epochs "
              f"-> {run_dir}", flush=True)
        train(config, resume=resume)
        trained = time.perf_counter()
        result = evaluate_run(run_dir, probe_epochs=5 if smoke else 100, pictures="fig2", seed=seed)
        eval_seconds = time.perf_counter() - trained
        rows.append({
            "loss": config.loss, "coarse_accuracy": result["end_model_accuracy"],
            "fine_transfer_accuracy": result["fine_transfer_accuracy"],
            "intra_class_cosine": result["intra_class_cosine"], "seed": config.seed,
            "alpha": config.alpha if config.loss == "spread" else None, "temperature": config.temperature,
            "epochs": config.epochs,
            "linear_probe_accuracy": result["linear_probe_accuracy"],
            "fine_transfer_val_accuracy": result["fine_transfer_val_accuracy"],
            "end_model_auroc": result.get("end_model_auroc"),
            "train_seconds": round(training_seconds(run_dir), 1), "eval_seconds": round(eval_seconds, 1),
            "wall_seconds_this_invocation": round(time.perf_counter() - start, 1),
            "run_dir": str(run_dir), "picture": str(Path(config.loss) / "eval" / "tsne.png"),
        })
    (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    (out / "report.md").write_text(report(rows, demo_configs(out, epochs=epochs, seed=seed, device=device,
                                                             smoke=smoke, progress=progress)[0], smoke))
    return rows


def select_alpha(out: Path, table_dir: Path | None = None, *, epochs: int = EPOCHS, seed: int = 0,
                 device: str = "auto", smoke: bool = False, progress: bool = True) -> dict[str, Any]:
    """The paper's alpha selection (Appendix E.2) with the demo's protocol: one L_spread run per
    alpha in ALPHAS at tau 0.5; the selected alpha has the best validation coarse-to-fine transfer
    (ties: best validation coarse accuracy, then the smaller alpha). Test numbers are recorded
    but never used. Writes alpha_selection_<dataset>.{json,md} to table_dir (default: out)."""
    from dataclasses import replace

    from spreadcon.commands.eval import evaluate_run
    from spreadcon.train import train

    base = demo_configs(out, epochs=epochs, seed=seed, device=device, smoke=smoke, progress=progress)[-1]
    rows = []
    for alpha in ALPHAS:
        config = replace(base, alpha=alpha, out_dir=str(out / f"alpha_{alpha}"))
        print(f"== L_spread alpha {alpha}: training {config.epochs} epochs -> {config.out_dir}", flush=True)
        train(config, resume=(Path(config.out_dir) / "checkpoint.pt").exists())
        result = evaluate_run(config.out_dir, probe_epochs=5 if smoke else 100, pictures=False, seed=seed)
        rows.append({"alpha": alpha, "fine_transfer_val_accuracy": result["fine_transfer_val_accuracy"],
                     "coarse_val_accuracy": result["end_model_val_accuracy"],
                     "fine_transfer_test_accuracy": result["fine_transfer_accuracy"],
                     "coarse_test_accuracy": result["end_model_accuracy"],
                     "intra_class_cosine_test": result["intra_class_cosine"],
                     "train_seconds": round(training_seconds(Path(config.out_dir)), 1)})
    best = max(rows, key=lambda r: (r["fine_transfer_val_accuracy"], r["coarse_val_accuracy"], -r["alpha"]))
    summary = {"dataset": base.dataset, "selected_alpha": best["alpha"], "temperature": base.temperature,
               "criterion": "validation coarse-to-fine transfer accuracy (ties: validation coarse accuracy, "
                            "then smaller alpha)",
               "command": f"spreadcon demo --select-alpha --out {out}"
                          + (f" --table-dir {table_dir}" if table_dir is not None else "") + (" --smoke" if smoke else "")
                          + (f" --epochs {epochs}" if epochs != EPOCHS else "") + (f" --seed {seed}" if seed else ""),
               "config": {k: v for k, v in base.to_dict().items() if k not in ("out_dir", "alpha", "progress")},
               "rows": rows}
    table_dir = Path(table_dir) if table_dir is not None else out
    table_dir.mkdir(parents=True, exist_ok=True)
    stem = f"alpha_selection_{base.dataset}"
    lines = [f"# L_spread alpha selection on {base.dataset}", "",
             "The paper's procedure (Appendix E.2): tau fixed at 0.5, alpha swept over "
             f"{{{', '.join(map(str, ALPHAS))}}}; for coarse-to-fine transfer the paper selects on transfer, so "
             "the criterion here is **validation coarse-to-fine transfer accuracy** (a linear probe on the "
             "frozen encoder output, trained on the train split's digits, scored on the validation split). "
             "Test columns are for information only.", "",
             f"Protocol: the demo's (`spreadcon demo`): {base.encoder} {base.encoder_options}, joint CE head, {base.epochs} epochs, "
             f"batch {base.batch_size}, lr {base.lr}, seed {base.seed}. Produced by `{summary['command']}`.", "",
             "| alpha | val fine transfer | val coarse acc | test fine transfer | test coarse acc | intra-class cos (test) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        mark = " **selected**" if r is best else ""
        lines.append(f"| {r['alpha']}{mark} | {100 * r['fine_transfer_val_accuracy']:.1f} | "
                     f"{100 * r['coarse_val_accuracy']:.1f} | {100 * r['fine_transfer_test_accuracy']:.1f} | "
                     f"{100 * r['coarse_test_accuracy']:.1f} | {r['intra_class_cosine_test']:.3f} |")
    n_val = json.loads((out / f"alpha_{best['alpha']}" / "run.json").read_text())["dataset"]["splits"]["val"]
    p = best["fine_transfer_val_accuracy"]
    se = 100 * (p * (1 - p) / n_val) ** 0.5
    lines += ["", f"Selected alpha: **{best['alpha']}** (the paper selected 0.5 for MNIST-Coarse). One seed; the "
              f"validation split has {n_val} points, so the binomial standard error of the selected transfer "
              f"accuracy is about {se:.1f} points: smaller differences between rows are noise."]
    summary["n_val"], summary["standard_error_points"] = n_val, round(se, 2)
    (table_dir / f"{stem}.json").write_text(json.dumps(summary, indent=2) + "\n")
    (table_dir / f"{stem}.md").write_text("\n".join(lines) + "\n")
    return summary


def training_seconds(run_dir: Path) -> float:
    """Seconds the run's training steps took, from its metrics (so also for resumed runs)."""
    from spreadcon.runs import read_metrics

    n_train = json.loads((run_dir / "run.json").read_text())["dataset"]["splits"]["train"]
    return sum(n_train / r["images_per_s"] for r in read_metrics(run_dir))


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| loss | coarse accuracy (end model) | paper | coarse-to-fine transfer | paper | intra-class cosine |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        end, fine = PAPER[r["loss"]]
        name = NAMES[r["loss"]] + (f" (alpha {r['alpha']})" if r["alpha"] is not None else "")
        lines.append(f"| {name} | {100 * r['coarse_accuracy']:.1f} | {end} | "
                     f"{100 * r['fine_transfer_accuracy']:.1f} | {fine} | {r['intra_class_cosine']:.3f} |")
    return "\n".join(lines)


def findings(rows: list[dict[str, Any]]) -> str:
    """Sentences that read the table (numbers computed, not typed)."""
    r = {row["loss"]: row for row in rows}
    if not {"supcon", "spread", "simclr"} <= set(r):
        return ""
    gap = 100 * (r["spread"]["fine_transfer_accuracy"] - r["supcon"]["fine_transfer_accuracy"])
    ss = 100 * (r["spread"]["fine_transfer_accuracy"] - r["simclr"]["fine_transfer_accuracy"])
    end = 100 * (r["spread"]["coarse_accuracy"] - r["supcon"]["coarse_accuracy"])
    n = len_test(rows)
    p = r["spread"]["fine_transfer_accuracy"]
    noise = 2 * 100 * (2 * p * (1 - p) / n) ** 0.5
    return (f"In these runs L_spread's coarse-to-fine transfer is {gap:+.1f} points against L_SC's and "
            f"{ss:+.1f} against L_SS's; its intra-class cosine is {r['spread']['intra_class_cosine']:.2f} "
            f"against {r['supcon']['intra_class_cosine']:.2f} for L_SC (L_SS: "
            f"{r['simclr']['intra_class_cosine']:.2f}). On the coarse task L_spread is {end:+.1f} points against "
            f"L_SC. One seed and {n} test points: differences below about {noise:.1f} points (two binomial "
            f"standard errors of a difference) are not evidence either way. The end-model "
            f"accuracies sit below the paper's because the budget is {rows[0].get('epochs', EPOCHS)} epochs "
            f"of a small CNN, not 600 of a ViT.")


def len_test(rows: list[dict[str, Any]]) -> int:
    run_dir = Path(rows[0]["run_dir"])
    return json.loads((run_dir / "run.json").read_text())["dataset"]["splits"]["test"]


def report(rows: list[dict[str, Any]], config, smoke: bool) -> str:
    seconds = sum(r["train_seconds"] + r["eval_seconds"] for r in rows)
    warning = ("\n**Smoke mode: 8x8 digits, a test-size encoder, 1 epoch. These numbers check the pipeline "
               "and mean nothing.**\n" if smoke else "")
    return f"""# spreadcon demo: class collapse on MNIST-Coarse
{warning}
Three encoders trained on {config.dataset} (MNIST digits labelled only *digit < 5* vs *digit >= 5*;
the digit itself is a hidden stratum the training never sees), identical except for the
contrastive loss. Seed {config.seed}. Wall time on the machine that wrote this report: training steps
{sum(r['train_seconds'] for r in rows):.0f} s, training plus evaluation {seconds:.0f} s (more than the
demo's 10-minute budget when that machine is shared with other jobs).

{table(rows)}

Percent accuracy on the test split (the paper's columns: Figure 4, MNIST-Coarse, its own ViT and
600-epoch budget).

{findings(rows)}

## What the numbers mean
- **coarse accuracy**: the model's own cross-entropy head on the task it was trained for (< 5 vs >= 5).
  All three losses should do well here; the paper's point is not this column.
- **coarse-to-fine transfer**: freeze the encoder, train a linear layer on the *digit* (10 classes)
  using the encoder output, report digit accuracy. An encoder that collapsed each coarse class to a
  point can only guess among the 5 digits of a class (about 20%); one that kept the strata apart
  transfers well. The paper's claim: L_spread > L_SC here, because L_SC pushes every class towards
  one point (class collapse) while L_spread's repel term keeps each image apart from the rest of its
  class; SimCLR keeps strata but ignores the coarse labels.
- **intra-class cosine**: mean cosine similarity of two test embeddings of the same coarse class;
  1 means the class collapsed to a point. Lower means more spread within a class.

## Protocol (chosen from the paper's description, before looking at results)
- Contrastive loss optimised jointly with a cross-entropy head on the same encoder output (the
  paper's protocol for MNIST and CIFAR; weights 1 and 1 as in the authors' code); no projection head.
- tau = {config.temperature}, {config.views} views, AdamW lr {config.lr}, weight decay {config.weight_decay},
  batch {config.batch_size} images, cosine schedule with {config.warmup_epochs:g} warm-up epoch, {config.epochs} epochs;
  model selection by validation accuracy on the coarse labels (10% of train held out).
- Encoder: `{config.encoder}` with options {config.encoder_options} (a small CNN, 128-d output) instead of the paper's 3.2M-parameter ViT, and
  {config.epochs} epochs instead of 600, so that the three runs fit in about 10 CPU minutes.
- Probes (coarse-to-fine, linear probe) read the encoder output, the layer both heads read; AdamW
  lr 1e-3, 100 epochs (the authors' transfer recipe), in eval mode.
- L_spread's alpha = {SELECTED_ALPHA}: selected by the paper's procedure (Appendix E.2: alpha in
  {{0.16, 0.25, 0.33, 0.5, 0.67}} at tau 0.5, best validation coarse-to-fine transfer, since this is a
  coarse-to-fine experiment) on this dataset with this protocol: see `{ALPHA_SELECTION}`.

## Pictures
t-SNE of the test embeddings, coloured by coarse class (left) and by digit (right):

""" + "\n".join(f"- {NAMES[r['loss']]}: ![{r['loss']}]({r['picture']})" for r in rows) + "\n"


def run(args: argparse.Namespace) -> int:
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    try:
        if args.select_alpha:
            summary = select_alpha(args.out, args.table_dir, epochs=args.epochs, seed=args.seed, device=args.device,
                                   smoke=args.smoke, progress=args.progress)
            print(f"selected alpha: {summary['selected_alpha']} "
                  f"(table in {args.table_dir or args.out}/alpha_selection_{summary['dataset']}.md)")
            return 0
        rows = run_demo(args.out, epochs=args.epochs, seed=args.seed, device=args.device, smoke=args.smoke,
                        progress=args.progress)
    except ValueError as err:
        print(f"spreadcon demo: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nspreadcon demo: interrupted; run the same command again to continue", file=sys.stderr)
        return 130
    print()
    print(table(rows))
    print(f"\nwrote {args.out / 'results.json'}, {args.out / 'report.md'} and pictures under {args.out}")
    return 0
