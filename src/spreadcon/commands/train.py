"""`spreadcon train`: train one model and write its run folder."""

from __future__ import annotations

import argparse
import json
import os
import textwrap
from pathlib import Path

from spreadcon.config import TrainConfig
from spreadcon.recipes import RECIPES
from spreadcon.errors import UserError

DEFAULTS = TrainConfig()

# option -> (config key, type, help)
OPTIONS = {
    "--dataset": ("dataset", str, "dataset name (see `spreadcon list`)"),
    "--encoder": ("encoder", str, "encoder name (see `spreadcon list`)"),
    "--loss": ("loss", str, "contrastive loss: spread, supcon, simclr, attract, repel (unused by --protocol ce)"),
    "--protocol": ("protocol", str, "joint (contrastive + CE head, the paper's ViT protocol), "
                                    "contrastive_then_probe (contrastive alone, then a linear probe: "
                                    "the paper's ResNet protocol) or ce (cross-entropy alone)"),
    "--embedding": ("embedding", str, "paper (the loss, the CE head and the probes read one embedding, as in "
                                      "the paper) or projection (h -> MLP -> z: the loss reads z, the probes h)"),
    "--alpha": ("alpha", float, "L_spread = alpha * L_attract + (1 - alpha) * L_repel"),
    "--temperature": ("temperature", float, "temperature tau of the contrastive loss"),
    "--epochs": ("epochs", int, "training epochs"),
    "--batch-size": ("batch_size", int, "images per step (each seen in `views` augmented views)"),
    "--lr": ("lr", float, "AdamW learning rate (cosine schedule with linear warm-up)"),
    "--freeze-backbone-epochs": ("freeze_backbone_epochs", int, "fine-tuning: train the heads only for the "
                                                                "first k epochs"),
    "--backbone-lr-mult": ("backbone_lr_mult", float, "fine-tuning: the backbone's learning rate is lr * this"),
    "--seed": ("seed", int, "seed of model init, data order, augmentations and data transforms"),
    "--device": ("device", str, "auto, cpu, cuda or cuda:N"),
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train an encoder with a contrastive loss (and a CE head); writes a run folder",
        description="Train one model and write its run folder: config.json, run.json (seed, git\n"
                    "revision), metrics.jsonl (one line per epoch), checkpoint.pt (every epoch,\n"
                    "atomic), best.pt (best validation accuracy on the training labels) and\n"
                    "embeddings/. Ctrl-C saves a checkpoint; continue with --resume.",
        epilog="Examples:\n"
               "  spreadcon train --dataset mnist5k-coarse --loss spread --alpha 0.5 --out runs/spread\n"
               "  spreadcon train --dataset digits --encoder cnn-test --set encoder_options.out_dim=8 "
               "--set keep_checkpoints=[1,3]\n"
               "  spreadcon train --out runs/spread --resume\n"
               "Every config key can be set with --set KEY=VALUE (values are JSON where they parse;\n"
               "KEY.SUB=VALUE sets one entry of a dict key):\n"
               + textwrap.fill(", ".join(TrainConfig.__dataclass_fields__), 88, initial_indent="  ",
                               subsequent_indent="  "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for flag, (key, kind, text) in OPTIONS.items():
        parser.add_argument(flag, dest=key, type=kind, default=argparse.SUPPRESS,
                            help=f"{text} (default: {getattr(DEFAULTS, key)})")
    parser.add_argument("--weights", type=Path, default=None, metavar="FILE",
                        help="a local state_dict (timm's or torchvision's format) for a timm:NAME or "
                             "torchvision:NAME backbone, loaded strictly (sets encoder_options.weights)")
    parser.add_argument("--pretrained", action="store_true",
                        help="download the backbone's pretrained weights through timm / torchvision "
                             "(needs the network; sets encoder_options.pretrained)")
    parser.add_argument("--recipe", default="auto", metavar="NAME",
                        help="the training recipe the options apply over: auto (picked by the images' "
                             "size and channels; see docs/recipes.md), a name (" + ", ".join(RECIPES)
                             + ") or none (TrainConfig's bare defaults); not with --config or --resume "
                             "(default: auto)")
    parser.add_argument("--out", dest="out_dir", default=argparse.SUPPRESS,
                        help=f"run folder to write (default: {DEFAULTS.out_dir})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="set any config key, e.g. --set weight_decay=0.05, --set "
                             "dataset_options.test_fraction=0.3, --set keep_checkpoints=[5,10]; repeatable")
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help="start from this config.json (e.g. another run's) instead of the defaults")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its last checkpoint; the config is read "
                             "from the run, and options that differ from it are refused")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run in --out (its checkpoints, metrics, embeddings and derived "
                             "outputs) instead of refusing to write into an existing run folder")
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=argparse.SUPPRESS,
                        help="no progress bar")
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, str | None]:
    """(config, a line naming the recipe used or None). The config: --config, or the run's saved
    config when resuming, or the recipe (--recipe; picked by the images when auto) over
    TrainConfig's defaults; then the options, then --set."""
    from spreadcon.config import apply_overrides, read_config

    explicit = {key: getattr(args, key) for key, *_ in OPTIONS.values() if hasattr(args, key)}
    for key in ("out_dir", "progress"):
        if hasattr(args, key):
            explicit[key] = getattr(args, key)
    backbone = [f"encoder_options.weights={json.dumps(str(args.weights.expanduser().resolve()))}"] if args.weights else []
    backbone += ["encoder_options.pretrained=true"] if args.pretrained else []
    sets = [*backbone, *args.overrides]
    recipe_name = getattr(args, "recipe", "auto")
    if args.config is not None or args.resume:
        if recipe_name != "auto":
            raise UserError("--recipe chooses the starting config, as --config and --resume do; pass one of them")
        base = TrainConfig()
        saved = Path(explicit.get("out_dir", DEFAULTS.out_dir)) / "config.json"
        if args.config is not None:
            base = read_config(args.config)
        elif saved.exists():
            base = read_config(saved)
        return apply_overrides(TrainConfig.from_dict({**base.to_dict(), **explicit}), sets), None
    plain = apply_overrides(TrainConfig.from_dict({**DEFAULTS.to_dict(), **explicit}), sets)
    if recipe_name == "none":
        return plain, "recipe none: TrainConfig's defaults under the options"
    from spreadcon.build import with_recipe

    chosen = set(explicit) | {o.split("=", 1)[0].split(".", 1)[0] for o in sets}
    config, _, line = with_recipe(plain, chosen, recipe_name)
    return config, line + "; --recipe NAME picks another, --recipe none keeps TrainConfig's defaults"


def train_options(args: argparse.Namespace) -> dict[str, bool]:
    """The keywords of `train()` for --resume / --overwrite."""
    if args.resume and args.overwrite:
        raise UserError("--resume continues the run in --out and --overwrite replaces it; pass one of them")
    return {"resume": args.resume, "overwrite": args.overwrite}


def run(args: argparse.Namespace) -> int:
    """User errors (ValueError, OSError) go to `spreadcon.cli.main`'s one-line handler."""
    from spreadcon.runs import read_metrics, run_status
    from spreadcon.train import train

    config, recipe_line = config_from_args(args)
    if recipe_line and os.environ.get("RANK", "0") == "0":
        print(recipe_line, flush=True)
    done_before = args.resume and run_status(config.out_dir).finished
    run_dir = train(config, **train_options(args))
    if os.environ.get("RANK", "0") == "0":  # under torchrun, only rank 0 reports
        print(final_line(run_dir, read_metrics(run_dir), str(run_status(run_dir)), done_before))
    return 0


def final_line(run_dir: Path, rows: list[dict], status: str, done_before: bool) -> str:
    """The run's outcome in one line: its status, the best epoch's validation accuracy, the last loss."""
    best = max((r for r in rows if r.get("best")), key=lambda r: r["epoch"], default=None)
    parts = [f"run folder: {run_dir} ({status}" + ("; it had already finished: nothing to resume)" if done_before
                                                   else ")")]
    if best is not None and isinstance(best.get("val_acc"), (int, float)):
        parts.append(f"best epoch {best['epoch']}: val_acc {best['val_acc']:.4f}")
    if rows:
        parts.append(f"last epoch {rows[-1]['epoch']}: loss {rows[-1].get('loss', float('nan')):.4f}")
    return "; ".join(parts)
