"""Recipe search for mnist5k-coarse (issues 16, 26), on the VALIDATION split only, through the public API.

    python scripts/recipe_search.py run A B-x      # train + evaluate stage A's runs, then run B-x (skips done ones)
    python scripts/recipe_search.py paper [P|PM]   # the paper protocol's coordinate search (2 workers): stage P
                                                   # (mnist5k-coarse) or PM (CIFAR-10-Coarse, medium)
    python scripts/recipe_search.py tables [P]     # regenerate the tables in docs/recipes.md from the results
    python scripts/recipe_search.py test NAME ...  # the one test-split check of the chosen recipe's runs

Each finished run's validation numbers are also kept in docs/recipe_runs.json (committed), so the
tables regenerate in a fresh clone; a stage none of whose runs is known keeps its table as it is.

Every run lives in runs/recipes/<name>/ (a normal run folder) with recipe_eval.json beside it.
Evaluation (validation split): the end model's CE head on the coarse labels; coarse-to-fine
transfer = `probes.fit_linear` (the authors' probe: AdamW 1e-3, 100 epochs) on the frozen
backbone output h of the train split, fit on the digits, scored on the val digits; intra-class
cosine of the val points at h (and at z, what the loss reads, when there is a projection head).
Floors (`spreadcon.evaluate.floors`) for each encoder architecture, on the same split.
Run with one thread: OMP_NUM_THREADS=1 nice -n 5 python scripts/recipe_search.py run A.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from spreadcon.config import TrainConfig
from spreadcon.data import default_views
from spreadcon.evaluate import geometry, metrics, probes
from spreadcon.evaluate.embed import embed
from spreadcon.evaluate.floors import floors
from spreadcon.io import read_json, save_json, save_text
from spreadcon.runs import load_run, read_metrics
from spreadcon.train import train

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "recipes"
DOC = ROOT / "docs" / "recipes.md"

DEMO = dict(dataset="mnist5k-coarse", encoder="cnn", encoder_options={"widths": [16, 32, 64]}, protocol="joint",
            temperature=0.5, epochs=30, batch_size=128, lr=3e-4, weight_decay=0.01, warmup_epochs=1.0,
            loss="spread", alpha=0.25)
SMALL = {"widths": [16, 32], "flatten": True, "out_dim": 256}     # cnn-digits at half width
DIGITS = {"widths": [32, 64], "flatten": True, "out_dim": 256}    # cnn-digits (the 60-line script's net)
STRONG = dict(DEMO, encoder_options=SMALL, batch_size=256, lr=1e-3, weight_decay=0.0)  # Adam = AdamW, wd 0
PROJ = {"proj_dim": 128, "proj_hidden": 256}                      # standard protocol: h -> MLP -> z


def _with(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = dict(base, **changes)
    if "encoder_options" in changes:
        out["encoder_options"] = dict(changes["encoder_options"])
    return out


# stage -> [(run name, full config overrides, what changed)]
STAGES: dict[str, list[tuple[str, dict[str, Any], str]]] = {
    "A": [  # net and optimiser, paper protocol, L_spread alpha 0.25
        ("A0-demo", DEMO, "the demo's recipe today"),
        ("A1-small-adam", STRONG, "cnn 16/32 flatten 256-d h, Adam 1e-3, batch 256"),
        ("A2-digits-adam-e20", _with(STRONG, encoder_options=DIGITS, epochs=20), "cnn 32/64 flatten 256, 20 epochs"),
        ("A3-small-lr3e-3", _with(STRONG, lr=3e-3), "A1 with lr 3e-3"),
        ("A4-small-adamw", _with(STRONG, weight_decay=0.05), "A1 with AdamW weight decay 0.05"),
    ],
}


def add_protocol_stage() -> None:
    """Stage B: loss x protocol on the best net of stage A (STRONG unless changed below)."""
    rows = []
    for proto, extra in (("paper", {}), ("proj", PROJ)):
        for loss, alpha in (("supcon", 0.5), ("spread", 0.16), ("spread", 0.25), ("spread", 0.33), ("spread", 0.5)):
            name = f"B-{proto}-{loss}" + (f"-{alpha}" if loss == "spread" else "")
            if proto == "paper" and loss == "spread" and alpha == 0.25:
                name = "A1-small-adam"  # the same config: one run
            cfg = _with(STRONG, loss=loss, alpha=alpha, encoder_options={**SMALL, **extra})
            rows.append((name, cfg, f"{proto} protocol, {loss}" + (f" alpha {alpha}" if loss == "spread" else "")))
    STAGES["B"] = rows


add_protocol_stage()
STAGES["B"].append(("B-proj-simclr", _with(STRONG, loss="simclr", encoder_options={**SMALL, **PROJ}),
                    "proj protocol, simclr (the demo's third loss)"))
PROJ_SPREAD = _with(STRONG, alpha=0.25, encoder_options={**SMALL, **PROJ})
STAGES["C"] = [  # around the chosen recipe (standard protocol, L_spread)
    ("C-proj-spread-ce2", _with(PROJ_SPREAD, ce_weight=2.0), "B-proj-spread-0.25 with CE weight 2"),
    ("C-proj-spread-e20", _with(PROJ_SPREAD, epochs=20), "B-proj-spread-0.25 with 20 epochs"),
    ("C-proj-spread-b128", _with(PROJ_SPREAD, batch_size=128), "B-proj-spread-0.25 with batch 128"),
    ("C-proj-spread-e40", _with(PROJ_SPREAD, epochs=40), "B-proj-spread-0.25 with 40 epochs"),
    ("C-proj-supcon-e40", _with(PROJ_SPREAD, loss="supcon", alpha=0.5, epochs=40), "B-proj-supcon with 40 epochs"),
    ("C-proj-spread-0.16-e40", _with(PROJ_SPREAD, alpha=0.16, epochs=40), "B-proj-spread-0.16 with 40 epochs"),
    ("C-proj-spread-digits-e20", _with(PROJ_SPREAD, epochs=20, encoder_options={**DIGITS, **PROJ}),
     "cnn 32/64 (the 60-line net), 20 epochs"),
    ("C-proj-supcon-digits-e20", _with(PROJ_SPREAD, loss="supcon", alpha=0.5, epochs=20,
                                       encoder_options={**DIGITS, **PROJ}), "C-proj-spread-digits-e20 with L_SC"),
]


STAGES["H"] = [  # the fully standard protocol: the CE head reads h too (TrainConfig.head_input)
    (f"H-proj-{loss}-ce-on-h", _with(PROJ_SPREAD, loss=loss, alpha=alpha, head_input="h"),
     f"B-proj-{loss}{'-' + str(alpha) if loss == 'spread' else ''} with the CE head on h")
    for loss, alpha in (("spread", 0.16), ("supcon", 0.5), ("simclr", 0.5))
]


# Stage P (issue 26): the paper's protocol (one embedding: the loss, the CE head and the probes read
# it; no projection head), tuned by coordinate search. The rule, fixed before any run (docs/recipes.md,
# "The paper protocol"): a recipe scores the mean validation coarse accuracy (CE head) of L_SS,
# L_SC and L_spread (alpha 0.25), one seed each; the factors are tried in the order below, each
# from the best recipe so far, and a change is kept only when it raises that mean by at least
# MARGIN (else the earlier, simpler recipe stays). Never the test split, never the fine labels.
PAPER_BASE = dict(STRONG, embedding="paper", channels_last=True)
PAPER_LOSSES = (("simclr", 0.5), ("supcon", 0.5), ("spread", 0.25))
DEEP = {"widths": [16, 32], "flatten": True, "hidden": [256], "out_dim": 128}  # a ReLU layer before the embedding
PAPER_FACTORS: list[tuple[str, list[tuple[str, dict[str, Any]]]]] = [
    ("depth", [("hidden256", {"encoder_options": DEEP})]),
    ("CE weight", [("ce0.5", {"ce_weight": 0.5}), ("ce2", {"ce_weight": 2.0})]),
    ("learning rate", [("lr3e-4", {"lr": 3e-4}), ("lr3e-3", {"lr": 3e-3})]),
    ("epochs", [("e60", {"epochs": 60})]),
    ("weight decay", [("wd0.01", {"weight_decay": 0.01}), ("wd0.05", {"weight_decay": 0.05})]),
    ("temperature", [("tau0.1", {"temperature": 0.1}), ("tau0.3", {"temperature": 0.3})]),
]
MARGIN = 0.002
LEDGER = ROOT / "docs" / "recipe_runs.json"


@dataclass(frozen=True)
class Search:
    """A paper-protocol coordinate search: run names start with `prefix`, from `base`, by `factors`."""
    stage: str
    prefix: str
    base: dict[str, Any]
    factors: list[tuple[str, list[tuple[str, dict[str, Any]]]]]
    first: str  # what the base recipe is, in words


def paper_runs(search: Search, labels: list[str], changes: dict[str, Any]) -> list[tuple[str, dict[str, Any], str]]:
    """The three runs (one per loss) of the search's recipe named by `labels`."""
    stem = search.prefix + ("-".join(labels) or "base")
    what = " + ".join(labels) or search.first
    return [(f"{stem}-{loss}", _with(_with(search.base, **changes), loss=loss, alpha=alpha), what)
            for loss, alpha in PAPER_LOSSES]


def recipe_score(rows: list[tuple[str, dict[str, Any], str]]) -> float | None:
    """Mean validation coarse accuracy of a recipe's runs (None until all have finished)."""
    results = [known_result(name) for name, _, _ in rows]
    return None if any(r is None for r in results) else sum(r["coarse_accuracy"] for r in results) / len(results)


CIFAR_ROOT = "/tmp/recipes-data"  # python /work/shared/data/materialize.py /tmp/recipes-data --only cifar10
MEDIUM = dict(STRONG, dataset="cifar10-coarse", data_root=CIFAR_ROOT, subsample_fraction=0.2, epochs=5,
              encoder_options={"widths": [16, 32, 64], "flatten": True, "out_dim": 256, **PROJ})
STAGES["M"] = [  # medium CIFAR-10-Coarse: 9,000 class-balanced train images, ~1 full-CIFAR epoch of budget
    ("M1-cifar-spread", MEDIUM, "cnn 16/32/64 flatten 256 + proj 128, Adam 1e-3, batch 256, 5 epochs, L_spread 0.25"),
    ("M2-cifar-spread-avgpool", _with(MEDIUM, encoder_options={"widths": [32, 64, 128], "out_dim": 256, **PROJ}),
     "cnn 32/64/128 global average pool, 256-d h"),
    ("M3-cifar-supcon", _with(MEDIUM, loss="supcon", alpha=0.5), "M1 with L_SC"),
]


SEARCH_P = Search("P", "P-", PAPER_BASE, PAPER_FACTORS, "base (stage A1's net and optimiser)")
# Stage PM (issue 26): the same search and rule on CIFAR-10-Coarse at medium scale (the 20% train
# subset of fig4's medium runs, 9,000 images; the full 5,000-image val split), from the medium net
# of stage M without its projection head (flattened 16/32/64 conv map -> a 256-d Linear embedding),
# Adam 1e-3, batch 256, 30 epochs; the factors of stage P (the depth factor adds a 256-unit ReLU
# layer ahead of a 128-d embedding). About 10 minutes of one core per 30-epoch run.
MEDIUM_PAPER_BASE = dict(MEDIUM, embedding="paper", epochs=30,
                         encoder_options={"widths": [16, 32, 64], "flatten": True, "out_dim": 256})
MEDIUM_DEEP = {"widths": [16, 32, 64], "flatten": True, "hidden": [256], "out_dim": 128}
SEARCH_PM = Search("PM", "PM-", MEDIUM_PAPER_BASE,
                   [("depth", [("hidden256", {"encoder_options": MEDIUM_DEEP})]), *PAPER_FACTORS[1:]],
                   "base (stage M1's net without its projection head, 30 epochs)")
SEARCHES = {s.stage: s for s in (SEARCH_P, SEARCH_PM)}


def config_for(name: str, overrides: dict[str, Any]) -> TrainConfig:
    embedding = "projection" if "proj_dim" in overrides.get("encoder_options", {}) else "paper"
    return TrainConfig(**{"embedding": embedding, **overrides}, out_dir=str(RUNS / name), progress=False,
                       tensorboard=False)


def train_seconds(run_dir: Path) -> float:
    info = read_json(run_dir / "run.json")
    n_train = info["dataset"]["splits"]["train"]
    return sum(n_train / r["images_per_s"] for r in read_metrics(run_dir))


def evaluate(run_dir: Path, split: str = "val", seed: int = 0) -> dict[str, Any]:
    """Coarse accuracy (CE head), transfer and intra-class cosine on `split`, probes reading h."""
    run = load_run(run_dir)
    ds, prepare = run.dataset, default_views(run.dataset).prepare
    rows = {s: ds.rows(s) for s in ("train", split)}
    h = {s: embed(run.model.encoder, ds.x[r], prepare=prepare, method="forward_features") for s, r in rows.items()}
    z = embed(run.model.encoder, ds.x[rows[split]], prepare=prepare)
    logits = run.embeddings(split)["logits"]
    out = {"split": split, "coarse_accuracy": metrics.accuracy(torch.from_numpy(logits), ds.label[rows[split]])}
    for key, target, k in (("coarse_probe_accuracy", ds.label, ds.num_classes),
                           ("fine_transfer_accuracy", ds.stratum, ds.num_strata)):
        layer = probes.fit_linear(h["train"], target[rows["train"]], k, seed=seed)
        with torch.no_grad():
            out[key] = metrics.accuracy(layer(h[split]), target[rows[split]])
    # the paper's probe location: z, the output the loss and the CE head read (== h without a head)
    z_train = embed(run.model.encoder, ds.x[rows["train"]], prepare=prepare)
    layer = probes.fit_linear(z_train, ds.stratum[rows["train"]], ds.num_strata, seed=seed)
    with torch.no_grad():
        out["fine_transfer_accuracy_z"] = metrics.accuracy(layer(z), ds.stratum[rows[split]])
    out["intra_class_cosine_h"] = geometry.intra_class_cosine(h[split], ds.label[rows[split]])
    out["intra_class_cosine_z"] = geometry.intra_class_cosine(z, ds.label[rows[split]])
    out["train_seconds"] = round(train_seconds(Path(run_dir)), 1)
    out["best_epoch"] = max(run.metrics, key=lambda r: (r["val_acc"], -r["epoch"]))["epoch"]
    return out


def floor_rows(name: str, overrides: dict[str, Any], split: str = "val") -> list[dict[str, Any]]:
    """Floors for this run's encoder architecture on its dataset as trained, cached."""
    options = {k: v for k, v in overrides["encoder_options"].items() if k not in ("proj_dim", "proj_hidden")}
    key = json.dumps([overrides["dataset"], overrides.get("subsample_fraction", 1.0), overrides["encoder"], options,
                      split], sort_keys=True)
    cache = RUNS / "floors.json"
    known = read_json(cache) if cache.exists() else {}
    if key not in known:
        ds = load_run(RUNS / name).dataset
        known[key] = floors(ds, encoder=overrides["encoder"], encoder_options=options, seed=0, split=split)
        save_json(known, cache)
    return known[key]


def known_result(name: str) -> dict[str, Any] | None:
    """A run's validation numbers: its recipe_eval.json, else the committed ledger."""
    done = RUNS / name / "recipe_eval.json"
    if done.exists():
        return read_json(done)
    return (read_json(LEDGER) if LEDGER.exists() else {}).get(name)


def run_one(name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    torch.set_num_threads(1)
    known = known_result(name)
    if known is not None:
        return known
    run_dir = RUNS / name
    start = time.time()
    train(config_for(name, overrides), resume=(run_dir / "checkpoint.pt").exists())
    result = evaluate(run_dir)
    result["wall_seconds"] = round(time.time() - start, 1)
    save_json(result, run_dir / "recipe_eval.json")
    return result


def record(results: dict[str, dict[str, Any]]) -> None:
    """Add finished runs' validation numbers to the committed ledger (one writer: the main process)."""
    ledger = read_json(LEDGER) if LEDGER.exists() else {}
    save_json({**ledger, **results}, LEDGER, sort_keys=True)


def run_parallel(rows: list[tuple[str, dict[str, Any], str]], workers: int = 2) -> None:
    """Train and evaluate `rows` in `workers` single-thread processes; record them in the ledger."""
    todo = [(n, o) for n, o, _ in rows if known_result(n) is None]
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(run_one, n, o): n for n, o in todo}
        for future in as_completed(futures):
            name = futures[future]
            record({name: future.result()})
            print(name, json.dumps(known_result(name)), flush=True)
    record({n: known_result(n) for n, _, _ in rows if known_result(n) is not None})


def paper_search(search: Search) -> list[tuple[str, dict[str, Any], str]]:
    """A paper-protocol coordinate search (see PAPER_FACTORS); returns every run it planned, in order."""
    labels, changes = [], {}
    planned = paper_runs(search, labels, changes)
    run_parallel(planned)
    best = recipe_score(planned)
    for factor, options in search.factors:
        candidates = [(label, {**changes, **change}) for label, change in options]
        stages = [paper_runs(search, [*labels, label], merged) for label, merged in candidates]
        run_parallel([row for rows in stages for row in rows])
        planned += [row for rows in stages for row in rows]
        scores = [recipe_score(rows) for rows in stages]
        i = max(range(len(scores)), key=scores.__getitem__)
        print(f"[{search.stage}] {factor}: best {best:.4f}, candidates "
              f"{dict(zip([c[0] for c in candidates], scores))}", flush=True)
        if scores[i] >= best + MARGIN:
            labels, changes, best = [*labels, candidates[i][0]], candidates[i][1], scores[i]
    print(f"[{search.stage}] chosen: {labels or ['base']} ({best:.4f})", flush=True)
    STAGES[search.stage] = planned
    return planned


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def stage_table(stage: str) -> str | None:
    """The stage's markdown table from the known results; None when none of its runs is known."""
    if not any(known_result(name) is not None for name, _, _ in STAGES[stage]):
        return None
    lines = [f"### Stage {stage}", "", "| run | what changed | val coarse (CE head) | val coarse (probe on h) | "
             "val transfer (probe on h) | val transfer (probe on z) | intra-class cos h | intra-class cos z | best epoch | "
             "train s |", "|---|---|---|---|---|---|---|---|---|---|"]
    archs = {}
    for name, overrides, what in STAGES[stage]:
        r = known_result(name)
        if r is None:
            lines.append(f"| {name} | {what} | not run | | | | | | | |")
            continue
        lines.append(f"| {name} | {what} | {pct(r['coarse_accuracy'])} | {pct(r['coarse_probe_accuracy'])} | "
                     f"{pct(r['fine_transfer_accuracy'])} | {pct(r.get('fine_transfer_accuracy_z'))} | "
                     f"{r['intra_class_cosine_h']:.3f} | "
                     f"{r['intra_class_cosine_z']:.3f} | {r['best_epoch']} | {r['train_seconds']:.0f} |")
        opts = {k: v for k, v in overrides["encoder_options"].items() if k not in ("proj_dim", "proj_hidden")}
        archs[json.dumps(opts, sort_keys=True)] = (name, overrides)
    for opts, (name, overrides) in archs.items():
        for f in floor_rows(name, overrides) if (RUNS / name).is_dir() else []:
            lines.append(f"| floor: {f['loss']} | {overrides['encoder']} {opts} | - | {pct(f['coarse_accuracy'])} | "
                         f"{pct(f['fine_transfer_accuracy'])} | | | | | |")
    return "\n".join(lines)


def test_table() -> str:
    """The one test-split check (runs/recipes/test_check.json, from the `test` command)."""
    path = RUNS / "test_check.json"
    if not path.exists():
        return "### Test check\n\nnot run"
    data = read_json(path)
    lines = ["### Test check (the chosen recipe, once, test split: 1,000 digits)", "",
             "| run | coarse (CE head) | transfer (probe on h) | transfer (probe on z) | intra-class cos h | "
             "intra-class cos z | train s |", "|---|---|---|---|---|---|---|"]
    for name, r in data.items():
        if name != "floors":
            lines.append(f"| {name} | {pct(r['coarse_accuracy'])} | {pct(r['fine_transfer_accuracy'])} | "
                         f"{pct(r.get('fine_transfer_accuracy_z'))} | {r['intra_class_cosine_h']:.3f} | "
                         f"{r['intra_class_cosine_z']:.3f} | {r['train_seconds']:.0f} |")
    for f in data["floors"]:
        lines.append(f"| floor: {f['loss']} | {pct(f['coarse_accuracy'])} (probe) | {pct(f['fine_transfer_accuracy'])} "
                     f"| | | | |")
    return "\n".join(lines)


OWN_MARKERS = ("H", "P", "PM")  # stages whose table sits between their own markers (written by `tables H`)


def write_tables(stages: list[str]) -> None:
    """Rewrite the tables of `stages` (default: every stage without its own markers, and the test
    check) from the known results; a table none of whose runs is known here (a fresh clone without
    the run folders) is kept as it is, with a warning."""
    for search in SEARCHES.values():
        if search.stage in stages or not stages:
            STAGES[search.stage] = paper_plan(search)
    text = DOC.read_text()
    if not stages:
        tables = [stage_table(s) for s in STAGES if s not in OWN_MARKERS]
        if any(t is None for t in tables) or not (RUNS / "test_check.json").exists():
            print("warning: some stages have no known runs here; docs/recipes.md kept as it is "
                  "(regenerate single stages with `tables NAME`)", file=sys.stderr)
            return
        text = _between(text, "tables", "\n\n".join([*tables, test_table()]))
    for stage in stages:
        table = stage_table(stage)
        if table is None:
            print(f"warning: no run of stage {stage} is known here; its table is kept", file=sys.stderr)
            continue
        text = _between(text, f"tables-{stage}", table)
    save_text(text, DOC)


def paper_plan(search: Search) -> list[tuple[str, dict[str, Any], str]]:
    """A search's runs as far as the known results take it (nothing is trained)."""
    labels, changes = [], {}
    planned = paper_runs(search, labels, changes)
    best = recipe_score(planned)
    for _, options in search.factors:
        stages = [paper_runs(search, [*labels, label], {**changes, **change}) for label, change in options]
        planned += [row for rows in stages for row in rows]
        scores = [recipe_score(rows) for rows in stages]
        if best is None or any(x is None for x in scores):
            break
        i = max(range(len(scores)), key=scores.__getitem__)
        if scores[i] >= best + MARGIN:
            labels, changes, best = [*labels, options[i][0]], {**changes, **options[i][1]}, scores[i]
    return planned


def _between(text: str, marker: str, body: str) -> str:
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    head, rest = text.split(begin)
    return f"{head}{begin}\n{body}\n{end}{rest.split(end)[1]}"


def test_check(names: list[str]) -> None:
    """The one test-split check of the chosen recipe (run once, at the end)."""
    from spreadcon import data

    out = {}
    for name in names:
        out[name] = evaluate(RUNS / name, split="test")
    cfg = dict(next(o for s in STAGES.values() for n, o, _ in s if n == names[0]))
    ds = data.load(cfg["dataset"])
    opts = {k: v for k, v in cfg["encoder_options"].items() if k not in ("proj_dim", "proj_hidden")}
    out["floors"] = floors(ds, encoder=cfg["encoder"], encoder_options=opts, seed=0, split="test")
    save_json(out, RUNS / "test_check.json")
    print(json.dumps(out, indent=1))


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    RUNS.mkdir(parents=True, exist_ok=True)
    if argv[:1] == ["run"]:  # stage names or run names, in the order given
        by_name = {n: o for rows in STAGES.values() for n, o, _ in rows}
        for item in argv[1:]:
            for name in [n for n, _, _ in STAGES[item]] if item in STAGES else [item]:
                print(name, json.dumps(run_one(name, by_name[name])), flush=True)
    elif argv[:1] == ["rescore"]:  # re-evaluate finished runs (validation) after evaluate() gained a column
        for path in sorted(RUNS.glob("*/recipe_eval.json")):
            old = read_json(path)
            if "fine_transfer_accuracy_z" not in old:
                save_json({**old, **evaluate(path.parent)}, path)
                print(path.parent.name, flush=True)
    elif argv[:1] == ["paper"]:  # paper [P | PM]
        paper_search(SEARCHES[argv[1] if len(argv) > 1 else "P"])
    elif argv[:1] == ["tables"]:
        write_tables(argv[1:])
    elif argv[:1] == ["test"]:
        test_check(argv[1:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
