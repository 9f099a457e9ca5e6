"""The demo: SupCon, SimCLR and L_spread on MNIST-Coarse, and the alpha selection behind it.

    spreadcon demo --out runs/demo              (= spreadcon reproduce demo, into runs/demo)
    spreadcon reproduce demo-alpha [--seeds 1]  (the sweep's alpha stage, demo protocol)

Three runs that differ only in the contrastive loss: same data (mnist5k-coarse: label digit < 5
vs >= 5, the digit is the hidden stratum), encoder, budget and seed, each optimised jointly with a
cross-entropy head on the same encoder output, as the paper does for MNIST (its ViT protocol,
Section 5 / Appendix E), tau = 0.5. Each run is evaluated (`spreadcon.evaluate.run.evaluate_run`):
end-model accuracy on the coarse task, coarse-to-fine transfer (a linear probe on the frozen
encoder output trained on the digits), intra-class cosine similarity, and a t-SNE picture.
The recipe and L_spread's alpha were chosen on the validation split (docs/recipes.md);
`demo-alpha` is the sweep's alpha stage (alpha in {0.16, 0.25, 0.33, 0.5, 0.67} at tau 0.5) with
criterion validation coarse-to-fine transfer, then validation coarse accuracy, then the smaller alpha.
Expected (the paper, Figure 4): coarse accuracy alike for the three losses; coarse-to-fine
transfer highest for L_spread, lowest intra-class cosine for L_spread.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from spreadcon.experiments import common, sweep
from spreadcon.experiments.paper import SWEEP_ALPHAS
from spreadcon.experiments.runner import Context, Experiment, RunSpec

# The recipe, chosen on the validation split (docs/recipes.md, stages A-C; issue 16): the standard
# protocol since SimCLR/SupCon (backbone h -> 2-layer MLP projection -> z for the loss; the CE head
# reads z, the probes read h), the `cnn-digits` net (two conv-BN stages 16/32, the 7x7 map flattened
# into a 256-d h), Adam lr 1e-3 (AdamW with weight decay 0), batch 256, 30 epochs, tau 0.5. The
# paper's protocol (no projection head) stalled at 95.5-96.5% validation coarse accuracy. It is the
# small scale's recipe (common.SMALL_TRAIN).
TRAIN: dict[str, Any] = {"dataset": "mnist5k-coarse", **common.SMALL_TRAIN, "protocol": "joint", "temperature": 0.5}
SMOKE_TRAIN: dict[str, Any] = {"dataset": "digits-coarse", "encoder": "cnn-test", "encoder_options": {},
                               "epochs": 1, "batch_size": 256, "lr": 3e-3}
LOSSES = ("supcon", "simclr", "spread")
RECIPE = "docs/recipes.md"  # the validation search that chose TRAIN and alpha
SELECTED_ALPHA = common.VALIDATED_ALPHA[TRAIN["dataset"]]  # chosen on validation (common.VALIDATED_ALPHA)
# The paper's MNIST-Coarse numbers (Figure 4): end model and coarse-to-fine, in percent.
PAPER = {"simclr": (99.1, 97.1), "supcon": (99.4, 98.8), "spread": (99.4, 99.0)}
NAMES = {"simclr": "L_SS (SimCLR)", "supcon": "L_SC (SupCon)", "spread": "L_spread",
         "raw-pixels": "floor: linear probe on the raw pixels", "random-init": "floor: random-init encoder, same net"}

config: dict[str, Any] = {"seeds": 1, "train": TRAIN, "losses": LOSSES, "alpha": SELECTED_ALPHA, "tsne_points": 2000}


def plan(cfg: dict[str, Any], seeds: Sequence[int], rows: list) -> list[RunSpec]:
    specs = []
    for loss in cfg["losses"]:
        train = common.merge(cfg["train"], {"loss": loss}, {"alpha": cfg["alpha"]} if loss == "spread" else None)
        labels = {"dataset": train["dataset"], "loss": loss, "alpha": cfg["alpha"] if loss == "spread" else None,
                  "temperature": train["temperature"], "epochs": train["epochs"]}
        specs += [common.train_spec(f"demo/{loss}", train, s, labels, evals=("transfer", "geometry", "val"))
                  for s in seeds]
    floor_labels = {"dataset": cfg["train"]["dataset"], "alpha": None, "temperature": None, "epochs": None}
    return specs + common.floor_specs("demo", cfg["train"], seeds, floor_labels)


def execute(spec: RunSpec, ctx: Context) -> dict[str, Any]:
    row = common.train_and_evaluate(spec, ctx)
    if "floor" in spec.params:
        return row
    return {**row, "train_seconds": round(training_seconds(Path(row["run_dir"])), 1),
            "picture": f"tsne_{spec.labels['dataset']}_{spec.labels['loss']}.png"}


def training_seconds(run_dir: Path) -> float:
    """Seconds the run's training steps took, from its metrics (so also for resumed runs)."""
    from spreadcon.runs import read_metrics

    n_train = json.loads((run_dir / "run.json").read_text())["dataset"]["splits"]["train"]
    return sum(n_train / r["images_per_s"] for r in read_metrics(run_dir))


def table(rows: list[dict[str, Any]]) -> str:
    """The demo's table; with a projection head, transfer and intra-class cosine also at z (the
    paper's probe location: where the loss acts, and where SupCon's class collapse shows)."""
    at_z = any("fine_transfer_z_accuracy" in r for r in rows)
    head = ("| loss | coarse accuracy (end model) | paper | coarse-to-fine transfer (h) | paper | intra-class cosine (h) |"
            + (" transfer at z | intra-class cosine at z |" if at_z else ""))
    lines = [head, "|---" * (6 + 2 * at_z) + "|"]
    raw = next((r for r in rows if r["loss"] == "raw-pixels"), None)
    fmt = lambda r, k, pct: "-" if r.get(k) is None else (f"{100 * r[k]:.1f}" if pct else f"{r[k]:.3f}")  # noqa: E731
    for r in rows:
        end, fine = PAPER.get(r["loss"], ("-", "-"))
        name = NAMES[r["loss"]] + (f" (alpha {r['alpha']})" if r.get("alpha") is not None else "")
        below = raw is not None and r["loss"] in PAPER and r["fine_transfer_accuracy"] < raw["fine_transfer_accuracy"]
        cells = [name, fmt(r, "coarse_accuracy", True), end,
                 fmt(r, "fine_transfer_accuracy", True) + (" **below the raw-pixel floor**" if below else ""), fine,
                 fmt(r, "intra_class_cosine", False)]
        if at_z:
            cells += [fmt(r, "fine_transfer_z_accuracy", True), fmt(r, "intra_class_z_cosine", False)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def findings(rows: list[dict[str, Any]]) -> str:
    """Sentences that read the table (numbers computed, not typed)."""
    r = {row["loss"]: row for row in rows}
    if not {"supcon", "spread", "simclr"} <= set(r):
        return ""
    gap = 100 * (r["spread"]["fine_transfer_accuracy"] - r["supcon"]["fine_transfer_accuracy"])
    ss = 100 * (r["spread"]["fine_transfer_accuracy"] - r["simclr"]["fine_transfer_accuracy"])
    end = 100 * (r["spread"]["coarse_accuracy"] - r["supcon"]["coarse_accuracy"])
    n = json.loads((Path(r["spread"]["run_dir"]) / "run.json").read_text())["dataset"]["splits"]["test"]
    p = r["spread"]["fine_transfer_accuracy"]
    noise = 2 * 100 * (2 * p * (1 - p) / n) ** 0.5
    floor = max((x["fine_transfer_accuracy"] for x in rows if x["loss"] not in PAPER), default=None)
    floor_text = ("" if floor is None else f" The better floor transfers at {100 * floor:.1f}: L_spread is "
                  f"{100 * (p - floor):+.1f} points above it, L_SC "
                  f"{100 * (r['supcon']['fine_transfer_accuracy'] - floor):+.1f}.")
    return (f"In these runs L_spread's coarse-to-fine transfer is {gap:+.1f} points against L_SC's and "
            f"{ss:+.1f} against L_SS's; its intra-class cosine is {r['spread']['intra_class_cosine']:.2f} "
            f"against {r['supcon']['intra_class_cosine']:.2f} for L_SC (L_SS: "
            f"{r['simclr']['intra_class_cosine']:.2f}). On the coarse task L_spread is {end:+.1f} points against "
            f"L_SC. One seed and {n} test points: differences below about {noise:.1f} points (two binomial "
            f"standard errors of a difference) are not evidence either way. The end-model "
            f"accuracies sit below the paper's because the budget is {r['spread']['epochs']} epochs "
            f"of a small CNN, not 600 of a ViT.{floor_text}")


MEANING = """## What the numbers mean
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
"""


def protocol(cfg: dict[str, Any]) -> str:
    from spreadcon.config import TrainConfig

    c = TrainConfig.from_dict(common.merge(cfg["train"], {"loss": "spread"}))
    return f"""## Protocol (chosen on the validation split: {RECIPE})
- The standard protocol since SimCLR/SupCon: the backbone output h feeds a 2-layer MLP projection
  head whose output z the contrastive loss reads; the cross-entropy head is optimised jointly
  (weights 1 and 1) and reads z; the probes read h. The paper's own protocol (no projection head:
  loss, CE head and probes on one output) stalled at 95.5-96.5% validation coarse accuracy here.
- tau = {c.temperature}, {c.views} views, AdamW lr {c.lr}, weight decay {c.weight_decay}, batch {c.batch_size}
  images, cosine schedule with {c.warmup_epochs:g} warm-up epoch, {c.epochs} epochs; model selection by
  validation accuracy on the coarse labels (10% of train held out).
- Encoder: `{c.encoder}` with options {c.encoder_options} (two conv-BN stages and a 256-d h) instead
  of the paper's 3.2M-parameter ViT, and {c.epochs} epochs instead of 600, so that the three runs fit
  in about 10 CPU minutes.
- Probes (coarse-to-fine) read h; AdamW lr 1e-3, {common.merge(common.PROBE, cfg.get("probe"))["epochs"]}
  epochs (the authors' transfer recipe), in eval mode. `fine_transfer_z_accuracy` in results.json
  is the same probe at z, the paper's probe location.
- Floors: the same probe on the raw pixels, and on this net at random init (`spreadcon.evaluate.floors`).
- L_spread's alpha = {cfg["alpha"]}: the validation search's stage B ({RECIPE}; 0.16 and 0.25 tie,
  the tie goes to the smaller alpha). `spreadcon reproduce demo-alpha` reruns that alpha stage.
"""


def report(rows: list[dict[str, Any]], cfg: dict[str, Any], out: Path) -> str:
    common.tsne_pictures(rows, out, max_points=cfg["tsne_points"], names=NAMES)
    smoke = cfg["train"]["encoder"].endswith("-test")
    warning = ("\n**Smoke mode: 8x8 digits, a test-size encoder, 1 epoch. These numbers check the pipeline "
               "and mean nothing.**\n" if smoke else "")
    pictures = "\n".join(f"- {NAMES[r['loss']]}: ![{r['loss']}]({r['picture']})" for r in rows if "picture" in r)
    return (f"## Class collapse on MNIST-Coarse\n{warning}\nThree encoders trained on {cfg['train']['dataset']} "
            "(MNIST digits labelled only *digit < 5* vs *digit >= 5*; the digit itself is a hidden stratum the "
            f"training never sees), identical except for the contrastive loss. Training steps took "
            f"{sum(r.get('train_seconds', 0) for r in rows):.0f} s on the machine that wrote this.\n\n{table(rows)}\n\n"
            "Percent accuracy on the test split (the paper's columns: Figure 4, MNIST-Coarse, its own ViT and "
            f"600-epoch budget).\n\n{findings(rows)}\n\n{MEANING}\n{protocol(cfg)}\n## Pictures\nt-SNE of the "
            f"test embeddings, coloured by coarse class (left) and by digit (right):\n\n{pictures}\n")


def claims(rows: list[dict[str, Any]], cfg: dict[str, Any]) -> list[tuple[str, str]]:
    return common.winner_claims(rows, group="dataset", metric="fine_transfer_accuracy", winner="spread",
                                against=("supcon", "simclr"), what="transfers best to the digits")


def smoke(cfg: dict[str, Any]) -> dict[str, Any]:
    # the train dict is replaced key by key, not merged (the test encoder takes no widths)
    return {**cfg, "seeds": 1, "train": {**cfg["train"], **SMOKE_TRAIN}, "probe": {"epochs": 5}, "tsne_points": 500}


DEMO = Experiment(
    name="demo", summary="The demo: SupCon vs SimCLR vs L_spread on MNIST-Coarse (coarse accuracy, transfer, geometry)",
    cpu_minutes=10, module=__name__, config=lambda scale: common.merge(config), smoke=smoke, plan=plan,
    execute=execute, report=report, validate=common.validate_train_spec, claims=claims,
)
# The demo's alpha: the sweep's alpha stage on the demo's protocol, selected on validation transfer.
ALPHA = Experiment(
    name="demo-alpha", summary="The demo's alpha: L_spread alpha sweep at tau 0.5, selected on validation transfer",
    cpu_minutes=17, module=__name__, smoke=sweep.smoke, plan=sweep.plan, execute=common.train_and_evaluate,
    config=lambda scale: {**common.merge(sweep.small), "seeds": 1, "dataset": TRAIN["dataset"], "alphas": SWEEP_ALPHAS,
                          "taus": (), "baselines": (), "train": common.merge(TRAIN), "per_dataset": {},
                          "criterion": ("fine_transfer_val_accuracy", "coarse_val_accuracy")},
    report=sweep.report, validate=common.validate_train_spec, claims=sweep.claims,
)
EXPERIMENTS = [DEMO, ALPHA]
