"""The demo: SupCon, SimCLR and L_spread on MNIST-Coarse under both protocols, and the alpha behind it.

    spreadcon demo --out runs/demo              (= spreadcon reproduce demo, which writes results/demo)
    spreadcon reproduce demo-alpha [--seeds 1]  (the sweep's alpha stage, projection protocol)

Runs that differ only in the contrastive loss: same data (mnist5k-coarse: label digit < 5 vs
>= 5, the digit is the hidden stratum), budget and seed, each optimised jointly with a
cross-entropy head, as the paper does for MNIST (Section 5 / Appendix E), tau = 0.5. Two
protocols (TrainConfig.embedding), the paper's first:
  paper       no projection head: the loss, the CE head and the probes read one embedding
              (recipes.PAPER_TRAIN, chosen on validation coarse accuracy by stage P);
  projection  h -> MLP -> z: the loss and the CE head read z, the probes read h, and transfer and
              intra-class cosine are also measured at z (recipes.SMALL_TRAIN, docs/recipes.md).
Each run is evaluated (`spreadcon.evaluation.evaluate_run`): end-model accuracy on the coarse
task, coarse-to-fine transfer (a linear probe on the frozen embedding trained on the digits),
intra-class cosine, and a t-SNE picture; the two floors are run on each protocol's net.
`demo-alpha` is the sweep's alpha stage on the projection recipe (alpha in {0.16, 0.25, 0.33,
0.5, 0.67} at tau 0.5), criterion validation transfer, then validation coarse accuracy, then the
smaller alpha. Expected (the paper, Figure 4): coarse accuracy alike for the three losses;
under the paper protocol, coarse-to-fine transfer highest and intra-class cosine lowest for
L_spread; under the projection protocol the same at z, while the head absorbs the collapse at h.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from spreadcon.config import TrainConfig
from spreadcon.experiments import charts, common, sweep
from spreadcon.experiments.claims import Claim, winner_claims
from spreadcon.experiments.paper import SWEEP_ALPHAS
from spreadcon.experiments.recipes import PAPER_ALPHA, PAPER_TRAIN, PROBE, SMALL_TRAIN, VALIDATED_ALPHA, merge
from spreadcon.experiments.runner import Context, Experiment, RunSpec
from spreadcon.io import read_json
from spreadcon.runs import read_metrics

# The projection recipe, chosen on the validation split (docs/recipes.md, stages A-C; issue 16): the
# `cnn-digits` net (two conv-BN stages 16/32, the 7x7 map flattened into a 256-d h) with a 2-layer
# MLP head to a 128-d z, Adam lr 1e-3 (AdamW with weight decay 0), batch 256, 30 epochs, tau 0.5.
TRAIN: dict[str, Any] = {"dataset": "mnist5k-coarse", **SMALL_TRAIN, "protocol": "joint", "temperature": 0.5}
# The paper protocol's recipe (recipes.PAPER_TRAIN, stage P), same data, budget and temperature.
PAPER: dict[str, Any] = {"dataset": "mnist5k-coarse", **PAPER_TRAIN, "protocol": "joint", "temperature": 0.5}
SMOKE_TRAIN: dict[str, Any] = {"dataset": "digits-coarse", "encoder": "cnn-test", "encoder_options": {},
                               "embedding": "paper", "epochs": 1, "batch_size": 256, "lr": 3e-3}
SMOKE_HEAD: dict[str, Any] = {"embedding": "projection", "encoder_options": {"proj_dim": 8, "proj_hidden": 16}}
LOSSES = ("supcon", "simclr", "spread")
RECIPE = "docs/recipes.md"  # the validation searches that chose both recipes and the projection alpha
SELECTED_ALPHA = VALIDATED_ALPHA[TRAIN["dataset"]]  # projection: chosen on validation (recipes.VALIDATED_ALPHA)
PAPER_PROTOCOL_ALPHA = PAPER_ALPHA[PAPER["dataset"]]  # paper protocol: E.2 under PAPER_TRAIN (sweep-paper)
# The paper's MNIST-Coarse numbers (Figure 4): end model and coarse-to-fine, in percent.
PAPER_NUMBERS = {"simclr": (99.1, 97.1), "supcon": (99.4, 98.8), "spread": (99.4, 99.0)}
NAMES = {"simclr": "L_SS (SimCLR)", "supcon": "L_SC (SupCon)", "spread": "L_spread",
         "raw-pixels": "floor: linear probe on the raw pixels", "random-init": "floor: random-init encoder, same net"}

config: dict[str, Any] = {"seeds": 1, "embeddings": {"paper": PAPER, "projection": TRAIN}, "train": {},
                          "losses": LOSSES, "alphas": {"paper": PAPER_PROTOCOL_ALPHA, "projection": SELECTED_ALPHA},
                          "tsne_points": 2000}


def protocol_train(cfg: dict[str, Any], embedding: str, loss: str | None = None) -> dict[str, Any]:
    """Train overrides of one run: the protocol's recipe < cfg["train"] (e.g. --epochs) < the loss
    (and L_spread's alpha under that protocol); without `loss`, the floors' train config."""
    train = merge(cfg["embeddings"][embedding], cfg.get("train"))
    if loss is None:
        return train
    return merge(train, {"loss": loss}, {"alpha": cfg["alphas"][embedding]} if loss == "spread" else None)


def plan(cfg: dict[str, Any], seeds: Sequence[int], rows: list) -> list[RunSpec]:
    """Per protocol (paper first): each loss, then the two floors on that protocol's net."""
    specs = []
    for emb in cfg["embeddings"]:
        stem = common.cell_name("demo", emb)
        for loss in cfg["losses"]:
            train = protocol_train(cfg, emb, loss)
            labels = {"dataset": train["dataset"], "embedding": emb, "loss": loss, "alpha": train.get("alpha")
                      if loss == "spread" else None, "temperature": train["temperature"], "epochs": train["epochs"]}
            specs += [common.train_spec(f"{stem}/{loss}", train, s, labels, evals=("transfer", "geometry", "val"))
                      for s in seeds]
        floors = protocol_train(cfg, emb)
        labels = {"dataset": floors["dataset"], "embedding": emb, "alpha": None, "temperature": None, "epochs": None}
        specs += common.floor_specs(stem, floors, seeds, labels)
    return specs


def execute(spec: RunSpec, ctx: Context) -> dict[str, Any]:
    row = common.train_and_evaluate(spec, ctx)
    if "floor" in spec.params:
        return row
    run = Path(row["run_dir"])
    return {**row, "train_seconds": round(training_seconds(run), 1), "n_test": n_test_points(run),
            "picture": f"tsne_{spec.labels['dataset']}_{spec.labels['embedding']}_{spec.labels['loss']}.png"}


def training_seconds(run_dir: Path) -> float:
    """Seconds the run's training steps took, from its metrics (so also for resumed runs)."""
    n_train = read_json(run_dir / "run.json")["dataset"]["splits"]["train"]
    return sum(n_train / r["images_per_s"] for r in read_metrics(run_dir))


def n_test_points(run_dir: Path) -> int:
    """The number of test points the run's accuracies are measured on."""
    return int(read_json(run_dir / "run.json")["dataset"]["splits"]["test"])


# --- the tables ---------------------------------------------------------------------------------
def _fmt(row: dict[str, Any], key: str, pct: bool) -> str:
    value = row.get(key)
    return "" if value is None else (f"{100 * value:.1f}" if pct else f"{value:.3f}")


def _name(row: dict[str, Any]) -> str:
    return NAMES.get(row["loss"], row["loss"]) + (f" (alpha {row['alpha']})" if row.get("alpha") is not None else "")


def _below(row: dict[str, Any], rows: list[dict[str, Any]], key: str) -> str:
    """" **below the raw-pixel floor**" when a loss's `key` is below its protocol's raw-pixel floor."""
    raw = next((r for r in rows if r["loss"] == "raw-pixels" and key in r), None)
    low = raw is not None and row["loss"] in PAPER_NUMBERS and key in row and row[key] < raw[key]
    return " **below the raw-pixel floor**" if low else ""


def paper_table(rows: list[dict[str, Any]]) -> str:
    """The paper protocol's rows: coarse accuracy, transfer and intra-class cosine of the one embedding."""
    lines = ["| loss | coarse accuracy (end model) | paper | coarse-to-fine transfer | paper | intra-class cosine |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        end, fine = PAPER_NUMBERS.get(r["loss"], ("", ""))
        cells = [_name(r), _fmt(r, "coarse_accuracy", True), end,
                 _fmt(r, "fine_transfer_accuracy", True) + _below(r, rows, "fine_transfer_accuracy"), fine,
                 _fmt(r, "intra_class_cosine", False)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def projection_table(rows: list[dict[str, Any]]) -> str:
    """The projection protocol's rows: coarse accuracy, then transfer and intra-class cosine at h and at z."""
    lines = ["| loss | coarse accuracy (end model) | transfer at h | intra-class cosine at h | transfer at z "
             "| intra-class cosine at z |", "|---|---|---|---|---|---|"]
    for r in rows:
        cells = [_name(r), _fmt(r, "coarse_accuracy", True),
                 _fmt(r, "fine_transfer_accuracy", True) + _below(r, rows, "fine_transfer_accuracy"),
                 _fmt(r, "intra_class_cosine", False), _fmt(r, "fine_transfer_z_accuracy", True),
                 _fmt(r, "intra_class_z_cosine", False)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def of(rows: list[dict[str, Any]], embedding: str) -> list[dict[str, Any]]:
    """The rows of one protocol (rows written before `embedding` was recorded: the projection's)."""
    return [r for r in rows if r.get("embedding", "projection") == embedding]


# --- what the tables say (numbers computed, never typed) ----------------------------------------
def _gap(rows: list[dict[str, Any]], key: str, a: str = "spread", b: str = "supcon") -> float | None:
    """100 * (row a's `key` - row b's), in points; None when either is missing."""
    r = {row["loss"]: row for row in rows}
    if a not in r or b not in r or key not in r[a] or key not in r[b]:
        return None
    return 100 * (r[a][key] - r[b][key])


def _cosines(rows: list[dict[str, Any]], key: str) -> str:
    r = {row["loss"]: row for row in rows if key in row}
    return ", ".join(f"{NAMES[loss].split(' ')[0]} {r[loss][key]:.2f}" for loss in LOSSES if loss in r)


def paper_findings(rows: list[dict[str, Any]]) -> str:
    """The paper protocol's sentence: L_spread against L_SC and L_SS on transfer, cosine, coarse accuracy."""
    gap, ss = _gap(rows, "fine_transfer_accuracy"), _gap(rows, "fine_transfer_accuracy", b="simclr")
    end = _gap(rows, "coarse_accuracy")
    if gap is None or ss is None or end is None:
        return ""
    return (f"Under the paper's protocol L_spread's coarse-to-fine transfer is {gap:+.1f} points against "
            f"L_SC's and {ss:+.1f} against L_SS's, and its coarse accuracy {end:+.1f} against L_SC's; "
            f"intra-class cosine: {_cosines(rows, 'intra_class_cosine')}.")


def projection_findings(rows: list[dict[str, Any]]) -> str:
    """The projection protocol's sentence: L_spread against L_SC at h and at z."""
    h, z = _gap(rows, "fine_transfer_accuracy"), _gap(rows, "fine_transfer_z_accuracy")
    if h is None or z is None:
        return ""
    return (f"With a projection head, L_spread's transfer is {h:+.1f} points against L_SC's at h and {z:+.1f} "
            f"at z, where the loss acts; intra-class cosine at z: {_cosines(rows, 'intra_class_z_cosine')}; "
            f"at h: {_cosines(rows, 'intra_class_cosine')}. A projection head absorbs collapse: the layer "
            "the loss shapes can collapse while the layer before it keeps what the labels do not say "
            "(Xue et al., ICLR 2024, \"Investigating the benefits of projection head for representation "
            "learning\"; on dimensional collapse and the projector, Jing et al., ICLR 2022, and Gupta et al. "
            "2022), so the paper's comparison is the one without a head.")


def noise(rows: list[dict[str, Any]]) -> str:
    """How much one seed's numbers move between machines and seeds, from the rows' own numbers:
    the binomial standard error of an accuracy p at n test points, sqrt(p (1 - p) / n)."""
    runs = [r for r in rows if "n_test" in r and "fine_transfer_accuracy" in r]
    if not runs:
        return ""
    n = runs[0]["n_test"]
    p = min((r["fine_transfer_accuracy"] for r in runs), key=lambda v: abs(v - 0.5))
    se = 100 * (p * (1 - p) / n) ** 0.5
    return (f"One seed and {n} test points: the same command on another machine (other CPU kernels or "
            f"thread counts change the arithmetic) or another seed moves an accuracy near {100 * p:.1f} by "
            f"about {se:.1f} points (its binomial standard error, sqrt(p(1-p)/n)), and a difference of two "
            f"runs by about {2 ** 0.5 * se:.1f}; differences below about {2 * 2 ** 0.5 * se:.1f} points "
            "(two standard errors of a difference) are not evidence either way; with one seed every claim "
            "checked on these runs is \"not distinguishable\" (no interval).")


def floor_findings(rows: list[dict[str, Any]]) -> str:
    """How far the losses sit above the better floor, per protocol (the random-init floor is each
    protocol's own net)."""
    parts = []
    for emb in ("paper", "projection"):
        mine = of(rows, emb)
        floor = max((r["fine_transfer_accuracy"] for r in mine if r["loss"] in ("raw-pixels", "random-init")),
                    default=None)
        losses = [100 * (r["fine_transfer_accuracy"] - floor) for r in mine
                  if floor is not None and r["loss"] in PAPER_NUMBERS and "fine_transfer_accuracy" in r]
        if losses:
            parts.append(f"{emb} protocol {min(losses):+.1f} to {max(losses):+.1f} points against its better "
                         f"floor ({100 * floor:.1f})")
    return ("Coarse-to-fine transfer of the three losses: " + "; ".join(parts) + ".") if parts else ""


def summary(rows: list[dict[str, Any]]) -> str:
    """The demo's tables and what they say: the paper protocol first, the projection head second.
    Also the README's demo section (scripts/readme_numbers.py)."""
    paper, proj = of(rows, "paper"), of(rows, "projection")
    seconds = sum(r.get("train_seconds", 0) for r in rows)
    parts = [f"Training steps took {seconds:.0f} s on the machine that wrote this (one seed, test split, percent)."]
    if paper:
        parts += ["### The paper's protocol (one embedding: the loss, the CE head and the probe read it)",
                  paper_table(paper), paper_findings(paper)]
    if proj:
        parts += ["### Second finding: with a projection head (h -> MLP -> z), at h and at z",
                  projection_table(proj), projection_findings(proj)]
    parts += [floor_findings(rows), noise(rows)]
    return "\n\n".join(p for p in parts if p) + "\n"


MEANING = """## What the numbers mean
- **coarse accuracy**: the model's own cross-entropy head on the task it was trained for (< 5 vs >= 5).
  All three losses should do well here; the paper's point is not this column.
- **coarse-to-fine transfer**: freeze the encoder, train a linear layer on the *digit* (10 classes)
  using the embedding, report digit accuracy. An encoder that collapsed each coarse class to a
  point can only guess among the 5 digits of a class (about 20%); one that kept the strata apart
  transfers well. The paper's claim: L_spread > L_SC here, because L_SC pushes every class towards
  one point (class collapse) while L_spread's repel term keeps each image apart from the rest of its
  class; SimCLR keeps strata but ignores the coarse labels.
- **intra-class cosine**: mean cosine similarity of two test embeddings of the same coarse class;
  1 means the class collapsed to a point. Lower means more spread within a class.
- **h and z** (projection protocol only): h is the backbone output the probes read, z the head's
  output the loss and the CE head read. The paper has no head: its one embedding is both.
"""


def protocol(cfg: dict[str, Any]) -> str:
    """The recipes of both protocols, as run."""
    p = TrainConfig.from_dict(protocol_train(cfg, "paper", "spread"))
    c = TrainConfig.from_dict(protocol_train(cfg, "projection", "spread"))
    return f"""## Protocols (chosen on the validation split: {RECIPE})
- Both: the CE head is optimised jointly (weights 1 and 1); tau = {c.temperature}, {c.views} views,
  AdamW lr {c.lr}, weight decay {c.weight_decay}, batch {c.batch_size} images, cosine schedule with
  {c.warmup_epochs:g} warm-up epoch, {p.epochs} epochs (paper) and {c.epochs} (projection), each chosen on
  validation; model selection by validation accuracy on the
  coarse labels (10% of train held out). Probes: AdamW lr 1e-3, {merge(PROBE, cfg.get("probe"))["epochs"]}
  epochs (the authors' transfer recipe), in eval mode. Floors: the same probe on the raw pixels, and
  on each protocol's net at random init (`spreadcon.evaluate.floors`).
- **Paper protocol**: `{p.encoder}` with options {p.encoder_options}: no projection head; the loss,
  the CE head and the probes read one embedding (stage P of {RECIPE}, chosen on validation coarse
  accuracy). L_spread's alpha = {cfg["alphas"]["paper"]}: Appendix E.2's alpha stage under this recipe
  (`spreadcon reproduce sweep-paper`: validation coarse accuracy, 3 seeds; the paper's own MNIST-Coarse
  choice; every alpha from 0.16 to 0.67 lies within 0.33 points there).
- **Projection protocol**: `{c.encoder}` with options {c.encoder_options}: the backbone output h feeds
  a 2-layer MLP head whose output z the loss and the CE head read; the probes read h, and
  `fine_transfer_z_accuracy` is the same probe at z. L_spread's alpha = {cfg["alphas"]["projection"]}:
  the validation search's stage B ({RECIPE}; 0.16 and 0.25 tie, the tie goes to the smaller alpha);
  `spreadcon reproduce demo-alpha` reruns that alpha stage.
- Small CNNs for {p.epochs} and {c.epochs} epochs instead of the paper's 3.2M-parameter ViT for 600, so that
  the six runs fit in under 10 minutes of 2 CPU cores (the time they took is above).
"""


def report(rows: list[dict[str, Any]], cfg: dict[str, Any], out: Path) -> str:
    # pictures named tsne_<dataset>_<embedding>_<loss>.png (the row's "picture")
    charts.tsne_pictures([{**r, "dataset": f"{r['dataset']}_{r['embedding']}"} for r in rows], out,
                         max_points=cfg["tsne_points"], names=NAMES)
    smoke = any(t["encoder"].endswith("-test") for t in cfg["embeddings"].values())
    warning = ("\n**Smoke mode: 8x8 digits, a test-size encoder, 1 epoch. These numbers check the pipeline "
               "and mean nothing.**\n" if smoke else "")
    pictures = "\n".join(f"- {r['embedding']}, {NAMES[r['loss']]}: ![{r['loss']}]({r['picture']})"
                         for r in rows if "picture" in r)
    dataset = next(iter(cfg["embeddings"].values()))["dataset"]
    return (f"## Class collapse on MNIST-Coarse\n{warning}\nEncoders trained on {dataset} (MNIST digits "
            "labelled only *digit < 5* vs *digit >= 5*; the digit itself is a hidden stratum the training "
            "never sees), identical within a protocol except for the contrastive loss; the paper's columns: "
            f"Figure 4, MNIST-Coarse, its own ViT and 600-epoch budget.\n\n{summary(rows)}\n{MEANING}\n"
            f"{protocol(cfg)}\n## Pictures\nt-SNE of the test embeddings the loss reads (z under the projection "
            f"protocol), coloured by coarse class (left) and by digit (right):\n\n{pictures}\n")


def claims(rows: list[dict[str, Any]], cfg: dict[str, Any]) -> list[Claim]:
    """Per protocol, paired over seeds (one seed: "not distinguishable", no interval)."""
    cell = ("dataset", "embedding")
    return (winner_claims(rows, group=cell, metric="fine_transfer_accuracy", winner="spread",
                          against=("supcon", "simclr"), what="transfers best to the digits")
            + winner_claims(rows, group=cell, metric="fine_transfer_z_accuracy", winner="spread",
                            against=("supcon",), what="transfers better than L_SC at z")
            + winner_claims(of(rows, "paper"), group=cell, metric="intra_class_cosine", winner="spread",
                            against=("supcon",), what="has the lower intra-class cosine", higher=False, scale=1.0)
            + winner_claims(rows, group=cell, metric="intra_class_z_cosine", winner="spread", against=("supcon",),
                            what="has the lower intra-class cosine at z", higher=False, scale=1.0))


def smoke(cfg: dict[str, Any]) -> dict[str, Any]:
    """8x8 digits, the test encoder, 1 epoch, under both protocols (the recipes' keys replaced, not
    merged: the test encoder takes no widths)."""
    recipes = {e: {**t, **SMOKE_TRAIN, **(SMOKE_HEAD if e == "projection" else {})}
               for e, t in cfg["embeddings"].items()}
    return {**cfg, "seeds": 1, "embeddings": recipes, "probe": {"epochs": 5}, "tsne_points": 500}


DEMO = Experiment(
    name="demo", summary="The demo: SupCon vs SimCLR vs L_spread on MNIST-Coarse, paper and projection protocols",
    cpu_minutes=10, module=__name__, config=lambda scale: merge(config), smoke=smoke, plan=plan,
    execute=execute, report=report, validate=common.validate_train_spec, claims=claims,
)
# The demo's alpha: the sweep's alpha stage on the projection recipe, selected on validation transfer.
ALPHA = Experiment(
    name="demo-alpha", summary="The demo's alpha: L_spread alpha sweep at tau 0.5, selected on validation transfer",
    cpu_minutes=17, module=__name__, smoke=sweep.smoke, plan=sweep.plan, execute=common.train_and_evaluate,
    config=lambda scale: {**merge(sweep.small), "seeds": 1, "dataset": TRAIN["dataset"], "alphas": SWEEP_ALPHAS,
                          "taus": (), "baselines": (), "train": merge(TRAIN), "per_dataset": {},
                          "criterion": ("fine_transfer_val_accuracy", "coarse_val_accuracy")},
    report=sweep.report, validate=common.validate_train_spec, claims=sweep.claims,
)
EXPERIMENTS = [DEMO, ALPHA]
