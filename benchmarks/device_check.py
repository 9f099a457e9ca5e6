"""One prepared GPU check: CUDA tests, loss speed and memory, encoder throughput, a short full-scale
run, and the projected wall time of every Figure 4 row at the paper's 600 epochs.

    python benchmarks/device_check.py --out results/device [--data-root DIR]   # one GPU, < 8 min
    python benchmarks/device_check.py --out /tmp/dc --dry-run                   # CPU, tiny, < 2 min

Writes DIR/device_check.json (everything measured, and the error of any step that failed; the
script goes on after a failure) and DIR/device_check.md (the tables). Both are rewritten after
every step, so a run cut short still leaves its finished steps. Steps:

1. tests: `pytest -m cuda` (kernel vs float64 oracle, losses under autocast, views on the GPU).
2. losses (and tiles): forward+backward of L_SC and L_spread, features [N, 2, 128], N in {4096, 16384, 65536}:
   the fused Triton kernel, the dense and lean torch paths (`path=`), and
   pytorch-metric-learning's SupConLoss (L_SC only, where it fits); median time, peak memory,
   ratios to the lean torch path and to pml. Targets (issue 17): fused >= 3x lean at 65,536,
   >= 20x pml wherever pml fits. `tiles`: the kernel alone per tile size, float32 and bfloat16.
3. throughput: training images/s (bf16 autocast, views made on the GPU, L_spread + CE head,
   AdamW), the paper's ViT at 3x32x32 eager and `torch.compile`d, ResNet-50 at 3x224x224 eager
   (channels_last); host synchronisations per step from `torch.cuda.set_sync_debug_mode`.
4. full_scale: the paper's ViT on CIFAR10-Coarse (from --data-root, laid out as
   `cifar-10-batches-py/`, or materialised from the shared data), L_SC and L_spread for the same
   number of epochs (as many as fit the time left): coarse test accuracy, coarse-to-fine
   transfer, intra-class cosine.
5. projection: each Figure 4 row (3 losses x 3 seeds x the paper's epochs) at the measured
   throughput: train images x epochs x runs / (images/s). Sizes are the standard training-set
   sizes (the trainer's validation hold-out makes the real numbers a little smaller).

--dry-run runs every step on the CPU at tiny sizes (the kernel under Triton's interpreter, a
test-size ViT, the embedded MNIST-5k-Coarse, torch.compile with the "eager" backend), so the
script is known to work before a GPU is at hand; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import shutil
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
D = 128
FULL = dict(sizes=(4096, 16384, 65536), repeats=3, tile_n=16384, tiles=((32, 32), (64, 64), (128, 64), (64, 128)), vit=("vit", (3, 32, 32)), resnet=("resnet50", (3, 224, 224)),
            batch=128, steps=20, warmup=5, compile_backend="inductor", budget_s=450,
            run=dict(dataset="cifar10-coarse", encoder="vit", batch_size=128))
DRY = dict(sizes=(24, 48), repeats=1, tile_n=24, tiles=((16, 16), (16, 32)), vit=("vit-test", (3, 32, 32)), resnet=("resnet18-test", (3, 32, 32)),
           batch=8, steps=2, warmup=1, compile_backend="eager", budget_s=100,
           run=dict(dataset="mnist5k-coarse", encoder="vit-test", batch_size=32, subsample_fraction=0.06,
                    eval_batch_size=256))
# standard training-set sizes (images) of the Figure 4 datasets; None: depends on the user's copy
TRAIN_SIZES = {"cifar10": 50_000, "cifar10-coarse": 50_000, "cifar100": 50_000, "cifar100-coarse": 50_000,
               "cifar100-coarse-u": 19_000, "mnist": 60_000, "mnist-coarse": 60_000, "waterbirds": 4_795,
               "isic": None}


# ----------------------------------------------------------------------------- helpers
def _device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _peak_start():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    return 0


def _peak_mib(base: int) -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None  # CPU peaks need a fresh process (benchmarks/losses.py does that)
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


# ----------------------------------------------------------------------------- 1. tests
def step_tests(plan: dict, args) -> dict:
    """`pytest -m cuda` on the device (under --dry-run: the kernel tests, in the interpreter)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x"]
    cmd += ["-k", "literal_loop", "tests/losses/test_kernels.py"] if args.dry_run \
        else ["-m", "cuda", "tests"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    env.pop("TRITON_INTERPRET", None)  # the test file starts its own interpreter worker
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=plan["budget_s"])
    tail = out.stdout.strip().splitlines()[-1:] or [""]
    return {"command": " ".join(cmd[2:]), "returncode": out.returncode, "summary": tail[0],
            "seconds": round(time.perf_counter() - start, 1),
            "output_tail": (out.stdout + out.stderr)[-3000:] if out.returncode else ""}


def step_ddp(plan: dict, args) -> dict:
    """One-process DDP smoke through torchrun: the trainer under the process group (NCCL on the GPU,
    gloo in the dry run) trains an epoch, writes one run folder, and resumes from it."""
    out = Path(args.out) / "ddp-run"
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    base = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1", "-m", "spreadcon",
            "train", "--dataset", "digits-coarse", "--encoder", "cnn-test", "--batch-size", "256", "--no-progress",
            "--set", "tensorboard=false", "--out", str(out)]
    start = time.perf_counter()
    first = subprocess.run([*base, "--epochs", "1"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=plan["budget_s"])
    again = subprocess.run([*base, "--resume"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=plan["budget_s"])
    return {"returncodes": [first.returncode, again.returncode], "seconds": round(time.perf_counter() - start, 1),
            "run_folder": (out / "checkpoint.pt").exists(),
            "output_tail": "" if first.returncode == again.returncode == 0 else (first.stderr + again.stderr)[-3000:]}


# ----------------------------------------------------------------------------- 2. losses
def _loss_fn(method: str, loss: str):
    """f(z [N, 2, D], y [N]) -> scalar, for method fused | dense | lean | pml."""
    from spreadcon import losses

    fn = {"supcon": losses.supcon_loss, "spread": losses.spread_loss}[loss]
    if method == "pml":
        from pytorch_metric_learning.losses import SupConLoss

        pml = SupConLoss(temperature=0.5)
        return lambda z, y: pml(z.reshape(-1, z.shape[-1]), y.repeat_interleave(z.shape[1]))
    if method in ("dense", "lean"):
        return lambda z, y: fn(z, y, temperature=0.5, path=method, backend="torch")
    return lambda z, y: fn(z, y, temperature=0.5, backend="triton")


def _time_loss(fn, z0, y, repeats: int) -> tuple[float, float | None]:
    """Median seconds of forward+backward, and the peak extra memory of one run (MiB)."""
    times, peak = [], None
    for r in range(repeats + 1):  # round 0 warms up (kernel compilation, allocator)
        z = z0.clone().requires_grad_()
        base = _peak_start()
        start = time.perf_counter()
        fn(z, y).backward()
        _sync()
        if r == 0:
            peak = _peak_mib(base)
        else:
            times.append(time.perf_counter() - start)
    return statistics.median(times), peak


def _fits(method: str, n: int) -> bool:
    """Whether a method that materialises 2N x 2N float32 matrices can fit (pml keeps ~4, dense ~2)."""
    import torch

    if method not in ("pml", "dense") or not torch.cuda.is_available():
        return True
    copies = 4 if method == "pml" else 2
    return copies * (2 * n) ** 2 * 4 < 0.8 * torch.cuda.get_device_properties(0).total_memory


def step_losses(plan: dict, args) -> dict:
    import torch

    device, rows = _device(), []
    methods = [("fused", "spread"), ("lean", "spread"), ("dense", "spread"),
               ("fused", "supcon"), ("lean", "supcon"), ("dense", "supcon"), ("pml", "supcon")]
    for n in plan["sizes"]:
        gen = torch.Generator(device=device).manual_seed(0)
        z0 = torch.randn(n, 2, D, device=device, generator=gen)
        y = torch.randint(0, 10, (n,), device=device, generator=gen)
        for method, loss in methods:
            row = {"N": n, "loss": loss, "method": method}
            try:
                if not _fits(method, n):
                    raise MemoryError("skipped: its 2N x 2N float32 matrices would not fit in GPU memory")
                row["seconds"], row["peak_mib"] = _time_loss(_loss_fn(method, loss), z0, y, plan["repeats"])
            except Exception as err:  # noqa: BLE001 - one failed cell must not end the table
                row["error"] = f"{type(err).__name__}: {err}"[:300]
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            rows.append(row)
    for row in rows:  # speed-ups from the same run
        for ref in ("lean", "pml"):
            other = next((r for r in rows if r["N"] == row["N"] and r["method"] == ref
                          and r["loss"] == (row["loss"] if ref == "lean" else "supcon")), None)
            if other and "seconds" in other and "seconds" in row and row["loss"] == other["loss"]:
                row[f"x_{ref}"] = other["seconds"] / row["seconds"]
    return {"features": f"[N, 2, {D}] float32, 10 classes, tau 0.5", "rows": rows}


def step_tiles(plan: dict, args) -> dict:
    """Fused kernel alone (row statistics of L_spread, forward+backward) per tile size and dtype,
    to choose spreadcon.losses.kernels.row_stats.GPU_BLOCK for this GPU."""
    import torch

    from spreadcon.losses.kernels import triton_row_stats
    from spreadcon.losses.core import compact_codes

    device, rows = _device(), []
    n = plan["tile_n"]
    gen = torch.Generator(device=device).manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(2 * n, D, device=device, generator=gen), dim=1)
    codes = compact_codes(torch.randint(0, 10, (n,), device=device, generator=gen).repeat_interleave(2)).int()
    n_pos = torch.bincount(codes, minlength=2 * n)[codes] - 1
    args_ = (codes, codes, torch.arange(2 * n, device=device), n_pos, 2 * n - 1 - n_pos, ("pos", "neg", "sp"))
    for dtype in (torch.float32, torch.bfloat16):
        for block_k, block_m in plan["tiles"]:
            def fn(q, _):
                return triton_row_stats(q / 0.5, q, *args_, block_k=block_k, block_m=block_m).sum()
            row = {"rows": 2 * n, "dtype": str(dtype).replace("torch.", ""), "block_k": block_k, "block_m": block_m}
            try:
                row["seconds"], row["peak_mib"] = _time_loss(fn, z.to(dtype), None, plan["repeats"])
            except Exception as err:  # noqa: BLE001
                row["error"] = f"{type(err).__name__}: {err}"[:300]
            rows.append(row)
    return {"rows": rows}


# ----------------------------------------------------------------------------- 3. throughput
def _train_step_fn(model, views, loss_fn, opt, device):
    import torch
    import torch.nn.functional as F

    def step(x, y, gen):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            xv = views(x, 2, gen).flatten(0, 1)
            if device.type == "cuda" and xv.dim() == 4:
                xv = xv.contiguous(memory_format=torch.channels_last)
            emb, logits = model(xv)
            loss = loss_fn(F.normalize(emb.float(), dim=-1).view(x.shape[0], 2, -1), y) \
                + F.cross_entropy(logits.float(), y.repeat_interleave(2))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def _throughput(plan: dict, name: str, shape, compiled: bool) -> dict:
    """Training images/s (each image in 2 views) and host syncs per step."""
    import torch

    from spreadcon import losses, runs
    from spreadcon.data.views import Views
    from spreadcon.models import build_encoder

    device = _device()
    torch.manual_seed(0)
    model = runs.Classifier(build_encoder(name, shape), 10).to(device)
    if device.type == "cuda" and len(shape) == 3:
        model = model.to(memory_format=torch.channels_last)
    if compiled:
        model = torch.compile(model, backend=plan["compile_backend"])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.01)
    step = _train_step_fn(model, Views(kind="simclr"), losses.SpreadLoss(alpha=0.5, temperature=0.5), opt, device)
    gen = torch.Generator(device=device).manual_seed(1)
    b = plan["batch"]
    x = torch.randint(0, 256, (b, *shape), dtype=torch.uint8, device=device, generator=gen)
    y = torch.randint(0, 10, (b,), device=device, generator=gen)
    start = time.perf_counter()
    for _ in range(plan["warmup"]):
        step(x, y, gen)
    _sync()
    warm_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(plan["steps"]):
        step(x, y, gen)
    _sync()
    out = {"encoder": name, "input": list(shape), "compiled": compiled, "batch": b,
           "images_per_s": b * plan["steps"] / (time.perf_counter() - start), "warmup_s": warm_s}
    if device.type == "cuda":
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                step(x, y, gen)
            finally:
                torch.cuda.set_sync_debug_mode(0)
        out["host_syncs_per_step"] = sum("synchroniz" in str(w.message) for w in caught)
    return out


def step_throughput(plan: dict, args) -> dict:
    rows = []
    for (name, shape), compiled in ((plan["vit"], False), (plan["vit"], True), (plan["resnet"], False)):
        try:
            rows.append(_throughput(plan, name, shape, compiled))
        except Exception as err:  # noqa: BLE001
            rows.append({"encoder": name, "input": list(shape), "compiled": compiled,
                         "error": f"{type(err).__name__}: {err}"[:300]})
    return {"bf16 autocast": _device().type == "cuda", "rows": rows}


# ----------------------------------------------------------------------------- 4. full scale
def _data_root(args) -> str | None:
    """--data-root, else CIFAR-10 materialised from the shared data (../shared/data) under --out."""
    if args.data_root or args.dry_run:
        return args.data_root
    shared = os.environ.get("SPREADCON_SHARED_DATA") or str(ROOT.parent / "shared" / "data")
    for candidate in (shared, str(ROOT / "shared" / "data")):
        if Path(candidate, "materialize.py").exists():
            out = Path(args.out) / "data"
            if not (out / "cifar-10-batches-py").exists():
                subprocess.run([sys.executable, str(Path(candidate) / "materialize.py"), str(out)], check=True)
            return str(out)
    raise FileNotFoundError("no CIFAR-10: pass --data-root DIR holding cifar-10-batches-py/ (see docs/full-scale.md)")


def _evaluate_run(run_dir: Path) -> dict:
    import numpy as np
    import torch

    from spreadcon.evaluate.geometry import intra_class_cosine
    from spreadcon.evaluate.probes import coarse_to_fine

    train, test = (np.load(run_dir / "embeddings" / f"{s}.npz") for s in ("train", "test"))
    t = {k: torch.from_numpy(test[k]) for k in ("embedding", "logits", "label", "stratum")}
    transfer = coarse_to_fine(torch.from_numpy(train["embedding"]), torch.from_numpy(train["stratum"]),
                              t["embedding"], t["stratum"], test_coarse=t["label"])
    return {"coarse_accuracy": float((t["logits"].argmax(1) == t["label"]).float().mean()),
            "transfer_accuracy": transfer["fine_accuracy"],
            "intra_class_cosine": intra_class_cosine(t["embedding"], t["label"])}


def step_full_scale(plan: dict, args, deadline: float, throughput: dict | None) -> dict:
    from spreadcon.config import TrainConfig
    from spreadcon.train import train

    root = _data_root(args)
    ips = next((r.get("images_per_s") for r in (throughput or {}).get("rows", [])
                if r.get("compiled") is False and r["encoder"] == plan["vit"][0]), None)
    n_train = TRAIN_SIZES.get(plan["run"]["dataset"]) or 5000
    epoch_s = 1.5 * n_train / ips + 10 if ips else None  # + validation, checkpoint, embeddings
    left = deadline - time.perf_counter() - 30
    epochs = 1 if args.dry_run or not epoch_s else max(1, int(left / (2 * epoch_s)))
    out = {"dataset": plan["run"]["dataset"], "encoder": plan["run"]["encoder"], "epochs": epochs, "runs": {}}
    for loss, extra in (("supcon", {}), ("spread", {"alpha": 0.16})):  # alpha: the paper's, Appendix E.2
        run_dir = Path(args.out) / "runs" / loss
        start = time.perf_counter()
        cfg = TrainConfig(**plan["run"], loss=loss, epochs=epochs, data_root=root, out_dir=str(run_dir),
                          progress=False, tensorboard=False, warmup_epochs=min(1.0, epochs / 10), **extra)
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        train(cfg)
        out["runs"][loss] = {**_evaluate_run(run_dir), "seconds": time.perf_counter() - start}
    return out


# ----------------------------------------------------------------------------- 5. projection
def step_projection(plan: dict, args, throughput: dict | None) -> dict:
    """Hours to regenerate each Figure 4 row at the paper's epochs, from the measured images/s."""
    from spreadcon.experiments import fig4

    best = {}
    for r in (throughput or {}).get("rows", []):
        if "images_per_s" in r:
            best[r["encoder"]] = max(best.get(r["encoder"], 0.0), r["images_per_s"])
    family = {"vit": plan["vit"][0], "resnet50": plan["resnet"][0]}
    rows = []
    for figure, cfg in (("end-model", fig4.end_full), ("transfer", fig4.transfer_full)):
        for dataset, options in cfg["datasets"].items():
            encoder, epochs = options["encoder"], options["epochs"]
            runs = len(cfg["losses"]) * cfg["seeds"]
            ips, n = best.get(family.get(encoder, encoder)), TRAIN_SIZES.get(dataset)
            hours = n * epochs * runs / ips / 3600 if ips and n else None
            rows.append({"figure": figure, "dataset": dataset, "encoder": encoder, "epochs": epochs, "runs": runs,
                         "train_images": n, "images_per_s": ips, "hours": hours})
    total = sum(r["hours"] for r in rows if r["hours"] is not None)
    return {"rows": rows, "total_hours": total,
            "note": "training only, at the better of eager and compiled; probes and evaluation add minutes; "
                    "MNIST rows use the 3x32x32 ViT rate"}


# ----------------------------------------------------------------------------- report
def _fmt(x, digits=3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) < 1e4 else f"{x:,.0f}"
    return str(x)


def markdown(report: dict) -> str:
    lines = [f"# Device check ({report['device']}{', dry run' if report['dry_run'] else ''})", "",
             f"torch {report['torch']}, triton {report['triton']}, {report['seconds']:.0f} s in all.", ""]
    for name, value in report["steps"].items():
        if "error" in value:
            lines += [f"## {name}: FAILED", "", "```", value["error"], "```", ""]
    t = report["steps"].get("tests", {})
    if "summary" in t:
        lines += ["## CUDA tests", "", f"`{t['command']}`: {t['summary']} (exit {t['returncode']})", ""]
    losses = report["steps"].get("losses", {})
    if "rows" in losses:
        lines += [f"## Loss forward+backward, features {losses['features']}", "",
                  "| N | loss | method | seconds | peak MiB | x lean | x pml | note |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['N']} | {r['loss']} | {r['method']} | {_fmt(r.get('seconds'))} | {_fmt(r.get('peak_mib'))} | "
                  f"{_fmt(r.get('x_lean'))} | {_fmt(r.get('x_pml'))} | {r.get('error', '')} |" for r in losses["rows"]]
        lines.append("")
    ddp = report["steps"].get("ddp", {})
    if "returncodes" in ddp:
        lines += ["## DDP smoke (torchrun, 1 process)", "",
                  f"train, then resume: exit codes {ddp['returncodes']}, run folder written: {ddp['run_folder']}, "
                  f"{ddp['seconds']} s", ""]
    tiles = report["steps"].get("tiles", {})
    if "rows" in tiles:
        lines += ["## Fused kernel tile sizes (L_spread row statistics, forward+backward)", "",
                  "| rows | dtype | block_k | block_m | seconds | peak MiB | note |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['rows']} | {r['dtype']} | {r['block_k']} | {r['block_m']} | {_fmt(r.get('seconds'))} | "
                  f"{_fmt(r.get('peak_mib'))} | {r.get('error', '')} |" for r in tiles["rows"]]
        lines.append("")
    tp = report["steps"].get("throughput", {})
    if "rows" in tp:
        lines += ["## Training throughput (2 views, L_spread + CE head, AdamW)", "",
                  "| encoder | input | compiled | batch | images/s | warm-up s | host syncs/step | note |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['encoder']} | {'x'.join(map(str, r['input']))} | {r['compiled']} | {r.get('batch', '-')} | "
                  f"{_fmt(r.get('images_per_s'))} | {_fmt(r.get('warmup_s'))} | {_fmt(r.get('host_syncs_per_step'))} | "
                  f"{r.get('error', '')} |" for r in tp["rows"]]
        lines.append("")
    fs = report["steps"].get("full_scale", {})
    if "runs" in fs:
        lines += [f"## Short run: {fs['encoder']} on {fs['dataset']}, {fs['epochs']} epoch(s) each", "",
                  "| loss | coarse accuracy | transfer accuracy | intra-class cosine | seconds |", "|---|---|---|---|---|"]
        lines += [f"| {loss} | {_fmt(r['coarse_accuracy'])} | {_fmt(r['transfer_accuracy'])} | "
                  f"{_fmt(r['intra_class_cosine'])} | {_fmt(r['seconds'])} |" for loss, r in fs["runs"].items()]
        lines.append("")
    pj = report["steps"].get("projection", {})
    if "rows" in pj:
        lines += ["## Projected wall time of Figure 4 at the paper's epochs (this device)", "",
                  "| figure | dataset | encoder | epochs | runs | train images | images/s | hours |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['figure']} | {r['dataset']} | {r['encoder']} | {r['epochs']} | {r['runs']} | "
                  f"{_fmt(r['train_images'])} | {_fmt(r['images_per_s'])} | {_fmt(r['hours'])} |" for r in pj["rows"]]
        lines += ["", f"Total: {_fmt(pj['total_hours'])} hours ({pj['note']}).", ""]
    return "\n".join(lines)


def _write(report: dict, out: Path) -> None:
    (out / "device_check.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "device_check.md").write_text(markdown(report))


def _run_step(report: dict, name: str, fn) -> dict:
    """Run one step; record its result or its error; rewrite the report either way."""
    start = time.perf_counter()
    try:
        report["steps"][name] = fn()
    except Exception as err:  # noqa: BLE001 - the check goes on after a failed step
        report["steps"][name] = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-4000:]}
    report["steps"][name]["step_seconds"] = round(time.perf_counter() - start, 1)
    return report["steps"][name]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for device_check.json and device_check.md")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, under 2 minutes (CI)")
    p.add_argument("--data-root", help="folder holding cifar-10-batches-py/ for the full-scale run")
    args = p.parse_args(argv)
    if args.dry_run:  # before triton is first imported: its standard library is decorated then
        os.environ["TRITON_INTERPRET"] = "1"
    import torch

    plan = DRY if args.dry_run else FULL
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    deadline = start + plan["budget_s"]
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    report = {"device": device, "dry_run": args.dry_run, "torch": torch.__version__, "triton": triton_version,
              "seconds": 0.0, "steps": {}}
    steps = [("tests", lambda: step_tests(plan, args)), ("losses", lambda: step_losses(plan, args)),
             ("tiles", lambda: step_tiles(plan, args)), ("ddp", lambda: step_ddp(plan, args)),
             ("throughput", lambda: step_throughput(plan, args)),
             ("full_scale", lambda: step_full_scale(plan, args, deadline, report["steps"].get("throughput"))),
             ("projection", lambda: step_projection(plan, args, report["steps"].get("throughput")))]
    for name, fn in steps:
        _run_step(report, name, fn)
        report["seconds"] = time.perf_counter() - start
        _write(report, out)
        print(f"[device_check] {name}: {'FAILED' if 'error' in report['steps'][name] else 'ok'} "
              f"({report['steps'][name]['step_seconds']} s)", flush=True)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
