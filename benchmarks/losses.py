"""Speed and memory of spreadcon's losses against pytorch-metric-learning, side by side.

    python benchmarks/losses.py            # N in {1024, 4096} images x 2 views, lean at 16384
    python benchmarks/losses.py --quick    # N in {256, 1024}, lean at 4096 (a smoke run)

Each row is forward + backward of one loss on the same inputs (features [N, 2, 128], float32,
CPU, 10 classes): median wall time and median process CPU time over --repeats rounds in which
the methods take turns (so a busy machine slows them alike), and the peak extra resident memory
of one run in a fresh subprocess (Linux VmHWM after the run minus VmRSS before it).
"floor" is the physical floor any such loss pays, written by hand without autograd: normalise,
one [2N, 2N] similarity GEMM, one exp pass over the logits and the two gradient GEMMs
(G @ k, G^T @ q). "autograd-lse" is autograd's logsumexp(f @ f.T) forward + backward (the
earlier "floor" row, which our closed-form backward beats). Ratios are to pml's SupConLoss and
to the floor of the same N, from the same run, in CPU time (the steadier column on a shared
machine; with 1 thread it is the wall time of an idle one).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

D, CLASSES, TEMPERATURE = 128, 10, 0.5


def _loss_fn(method: str):
    import torch

    from spreadcon import losses

    if method == "floor":
        @torch.no_grad()
        def floor(z, y):
            f = torch.nn.functional.normalize(z.reshape(-1, z.shape[-1]), dim=-1) / TEMPERATURE
            G = (f @ f.T).exp_()
            return G @ f, G.T @ f
        return floor
    if method == "autograd-lse":
        def lse(z, y):
            f = torch.nn.functional.normalize(z.reshape(-1, z.shape[-1]), dim=-1) / TEMPERATURE
            return torch.logsumexp(f @ f.T, dim=1).mean()
        return lse
    if method == "pml-supcon":
        from pytorch_metric_learning.losses import SupConLoss

        pml = SupConLoss(temperature=TEMPERATURE)
        return lambda z, y: pml(z.reshape(-1, z.shape[-1]), y.repeat_interleave(z.shape[1]))
    name, _, memory = method.partition(":")
    fn = {"supcon": losses.supcon_loss, "spread": losses.spread_loss}[name]
    return lambda z, y: fn(z, y, temperature=TEMPERATURE, path=memory or "auto")


def _inputs(n: int):
    import torch

    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, 2, D, generator=gen), torch.randint(0, CLASSES, (n,), generator=gen)


def _once(fn, z0, y) -> tuple[float, float]:
    import torch

    z = z0.clone().requires_grad_()
    w, c = time.perf_counter(), time.process_time()
    out = fn(z, y)
    if isinstance(out, torch.Tensor) and out.requires_grad:
        out.backward()
    return time.perf_counter() - w, time.process_time() - c


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def peak_memory(method: str, n: int, threads: int) -> tuple[float, float, float]:
    """Peak extra resident memory (MiB), wall and cpu seconds of one forward+backward, in this
    (fresh) process.

    Linux: the high-water mark VmHWM is reset to the current RSS first (/proc/self/clear_refs);
    ru_maxrss is not usable here, as it survives exec from the (large) parent process."""
    import torch

    torch.set_num_threads(threads)
    z0, y = _inputs(n)
    fn = _loss_fn(method)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_kib("VmRSS")
    wall, cpu = _once(fn, z0, y)
    return (_status_kib("VmHWM") - before) / 1024, wall, cpu


def _peak_in_subprocess(method: str, n: int, threads: int) -> tuple[float, float, float]:
    cmd = [sys.executable, __file__, "--peak", method, str(n), str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return tuple(float(x) for x in out.stdout.split())


def timings(methods: list[str], n: int, repeats: int) -> dict[str, tuple[float, float]]:
    """Median (wall, cpu) seconds per method; methods take turns so load hits all alike."""
    z0, y = _inputs(n)
    fns = {m: _loss_fn(m) for m in methods}
    runs = {m: [] for m in methods}
    for r in range(repeats + 1):
        for m in methods:
            t = _once(fns[m], z0, y)
            if r > 0:  # the first round warms up
                runs[m].append(t)
    return {m: (statistics.median(w for w, _ in ts), statistics.median(c for _, c in ts)) for m, ts in runs.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: steadiest on a shared machine)")
    p.add_argument("--peak", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.peak:
        method, n, threads = args.peak
        print(*peak_memory(method, int(n), int(threads)))
        return
    import torch

    torch.set_num_threads(args.threads)
    sizes, lean_n = ((256, 1024), 4096) if args.quick else ((1024, 4096), 16384)
    print(f"forward+backward, features [N, 2, {D}] float32 CPU, {CLASSES} classes, tau {TEMPERATURE}, "
          f"{args.threads} thread(s), median of {args.repeats} interleaved runs; x pml and / floor use cpu time")
    print(f"{'method':<14}{'N':>7}{'wall s':>9}{'cpu s':>9}{'peak MiB':>10}{'x pml':>8}{'/ floor':>9}")
    methods = ["floor", "autograd-lse", "pml-supcon", "supcon", "spread", "supcon:lean", "spread:lean"]
    for n in sizes:
        times = timings(methods, n, args.repeats)
        for m in methods:
            (wall, cpu), peak = times[m], _peak_in_subprocess(m, n, args.threads)[0]
            if m == "pml-supcon":
                pml_peak = peak
            print(f"{m:<14}{n:>7}{wall:>9.3f}{cpu:>9.3f}{peak:>10.0f}{times['pml-supcon'][1] / cpu:>8.1f}"
                  f"{cpu / times['floor'][1]:>9.2f}", flush=True)
    pml_gib = pml_peak * (lean_n / sizes[-1]) ** 2 / 1024  # pml's memory grows as N^2
    for m in ("supcon:lean", "spread:lean"):
        peak, wall, cpu = _peak_in_subprocess(m, lean_n, args.threads)  # one run, cold
        print(f"{m:<14}{lean_n:>7}{wall:>9.3f}{cpu:>9.3f}{peak:>10.0f}   (pml, scaled from N = {sizes[-1]}: "
              f"~{pml_gib:.0f} GiB)", flush=True)


if __name__ == "__main__":
    main()
