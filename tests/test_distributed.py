"""The losses over a global batch across processes equal the single-process losses, exactly.

Two CPU processes (gloo) are spawned per test. Each builds the same seeded global batch, takes its
own rows (unequal counts in some cases), and computes the loss of its local anchors against the
gathered batch through `GlobalBatchLoss`, under a DDP-wrapped linear encoder (DDP averages
gradients over processes). The oracle is the wrapped loss module on the whole batch in one process.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from spreadcon import distributed
from spreadcon.losses import LOSSES

WORLD = 2
TOL = 1e-6  # the bound; float64 results agree to ~1e-15


def error_text(call) -> str:
    """The message of the ValueError `call()` raises, or "none" (what a rank reports back)."""
    try:
        call()
    except ValueError as err:
        return str(err)
    return "none"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _init(rank: int, port: int, timeout_s: float = 60) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=timeout_s))


def _modules() -> list[tuple[str, torch.nn.Module]]:
    out = []
    for name, cls in LOSSES.items():
        if name.endswith("-authors"):  # no per-anchor form: single process only
            continue
        kw = {"alpha": 0.3} if name == "spread" else {}
        out.append((name, cls(temperature=0.4, **kw)))
        out.append((f"{name}-lean", cls(temperature=0.4, path="lean", block_size=3, **kw)))
    return out


PAPER_LOSSES = [n for n in LOSSES if not n.endswith("-authors")]


def _worker(rank: int, port: int, out_dir: str, cases) -> None:
    """Join the group, run `cases(rank)`, write its report, and leave. The cases return before the
    group is destroyed, so none of their DDP wrappers outlives it (a reducer freed after
    destroy_process_group aborted a rank now and then: "terminate called without an active
    exception"); `distributed.teardown` collects what reference cycles still hold."""
    _init(rank, port)
    report = cases(rank)
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(report))
    dist.barrier()
    distributed.teardown()


def _equality_cases(rank: int) -> dict:
    report = {}
    # (local batch sizes per rank, views): equal, unequal, and a class present on one rank only
    for sizes, views in (((4, 4), 2), ((5, 2), 2), ((3, 6), 3)):
        g = torch.Generator().manual_seed(sum(sizes) * 10 + views)
        n = sum(sizes)
        x = torch.randn(n, views, 6, generator=g, dtype=torch.float64)
        y = torch.randint(0, 3, (n,), generator=g)
        start = sum(sizes[:rank])
        rows = slice(start, start + sizes[rank])
        for name, module in _modules():
            torch.manual_seed(0)  # the same encoder weights in every process and in the oracle
            enc = torch.nn.Linear(6, 5).double()
            ref_enc = torch.nn.Linear(6, 5).double()
            ref_enc.load_state_dict(enc.state_dict())
            # oracle: one process, whole batch
            ref_in = x.clone().requires_grad_()
            ref_z = ref_enc(ref_in)
            ref_z.retain_grad()
            ref_loss = module(ref_z, y)
            ref_loss.backward()
            # distributed: local rows, DDP-averaged gradients
            ddp = torch.nn.parallel.DistributedDataParallel(enc)
            z = ddp(x[rows])
            z.retain_grad()
            loss = distributed.GlobalBatchLoss(module)(z, y[rows])
            loss.backward()
            value_err = abs(loss.item() - ref_loss.item())
            # the embeddings' gradient is W times the single-process one (DDP divides by W) ...
            z_err = (z.grad / WORLD - ref_z.grad[rows]).abs().max().item()
            # ... and the parameters' gradients, after DDP's averaging, are the single-process ones
            p_err = max((p.grad - q.grad).abs().max().item() for p, q in zip(enc.parameters(), ref_enc.parameters()))
            report[f"{name} sizes={sizes} V={views}"] = [value_err, z_err, p_err]
            assert value_err < TOL, (name, sizes, loss.item(), ref_loss.item())
            assert z_err < TOL, (name, sizes, z_err)
            assert p_err < TOL, (name, sizes, p_err)
            # lightly's flag: the module itself gathers; the same value and gradient
            if name == "spread" and sizes == (5, 2):
                flagged = LOSSES["spread"](alpha=0.3, temperature=0.4, gather_distributed=True)
                zz = z.detach().clone().requires_grad_()
                flagged(zz, y[rows]).backward()
                z2 = z.detach().clone().requires_grad_()
                distributed.GlobalBatchLoss(module)(z2, y[rows]).backward()
                report["gather_distributed flag"] = [float((zz.grad - z2.grad).abs().max())]
            # return_terms gives the global term means
            if name == "spread":
                _, terms = distributed.GlobalBatchLoss(module)(z.detach(), y[rows], return_terms=True)
                _, ref_terms = module(ref_z.detach(), y, return_terms=True)
                for t in ("attract", "repel"):
                    assert abs(terms[t].item() - ref_terms[t].item()) < TOL
    # bad input: the feature dimension differs between the ranks -> a clear error on every rank
    report["shape error"] = error_text(lambda: distributed.GlobalBatchLoss(LOSSES["supcon"]())(
        torch.randn(3, 2, 4 + rank), torch.zeros(3, dtype=torch.long)))
    return report


def test_global_batch_loss_equals_single_process_values_and_gradients(tmp_path):
    """One spawn for all cases (process start-up dominates): every loss x {dense, lean} x three
    splits of the batch; plus mismatched feature shapes, which must fail clearly on every rank."""
    mp.spawn(_worker, args=(free_port(), str(tmp_path), _equality_cases), nprocs=WORLD, join=True)
    for rank in range(WORLD):
        report = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert "same V and D" in report.pop("shape error")
        assert len(report) == 3 * 2 * len(PAPER_LOSSES) + 1
        assert max(max(v) for v in report.values()) < TOL


def _dying_worker(rank: int, port: int, out_dir: str) -> None:
    _init(rank, port, timeout_s=5)
    if rank == 1:
        os._exit(3)  # a crash: no clean shutdown
    t0 = time.monotonic()
    try:
        distributed.GlobalBatchLoss(LOSSES["spread"]())(torch.randn(4, 2, 3), torch.zeros(4, dtype=torch.long))
        msg = "no error"
    except distributed.DistributedError as err:
        msg = str(err)
    Path(out_dir, "rank0.txt").write_text(f"{time.monotonic() - t0:.1f}\n{msg}")
    os._exit(0)  # the group cannot be destroyed cleanly without its peer


def test_a_dead_rank_stops_the_others_with_a_clear_error(tmp_path):
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=_dying_worker, args=(r, port, str(tmp_path))) for r in range(WORLD)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + 300  # generous: start-up alone is slow on a loaded machine
    for p in procs:
        p.join(timeout=max(1.0, deadline - time.monotonic()))
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        p.kill()
    assert not alive, "a process hung instead of failing"
    seconds, msg = (tmp_path / "rank0.txt").read_text().split("\n", 1)
    assert "Another process probably died" in msg
    assert float(seconds) < 30


def test_without_a_process_group_the_wrapper_is_the_loss():
    z = torch.randn(6, 2, 5, dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 1, 2, 2])
    for name, module in _modules():
        assert distributed.GlobalBatchLoss(module)(z, y).item() == module(z, y).item()
    assert distributed.global_batch_loss(LOSSES["supcon"]()).__class__.__name__ == "SupConLoss"
    assert distributed.get_world_size() == 1 and distributed.is_main_process()
    idx = torch.arange(5)
    assert distributed.shard(idx) is idx


def test_wrapper_rejects_unknown_losses_and_cross_view():
    with pytest.raises(ValueError, match="wraps the loss modules"):
        distributed.GlobalBatchLoss(torch.nn.MSELoss())
    with pytest.raises(ValueError, match="authors"):
        distributed.GlobalBatchLoss(LOSSES["spread-authors"]())
    with pytest.raises(ValueError, match="cross_view"):
        distributed.GlobalBatchLoss(LOSSES["supcon"](anchors="cross_view"))


# --- the trainer under DDP ---------------------------------------------------------------------
class _StopAfter:
    """Stop training at the end of epoch `epoch`, before its checkpoint (as a crash would)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch_end(self, epoch, state):
        if epoch == self.epoch:
            raise _Stop


class _Stop(Exception):
    pass


def _train_worker(rank: int, port: int, config_json: str, resume: bool, out_dir: str) -> None:
    from spreadcon.config import TrainConfig
    from spreadcon.train import train

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(WORLD), SPREADCON_DIST_TIMEOUT="120")
    config = TrainConfig.from_json(config_json)
    try:
        train(config, callbacks=() if resume else (_StopAfter(2),), resume=resume)
        stopped = False
    except _Stop:
        stopped = True
    # every process holds the same weights (DDP keeps them in sync)
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps({"stopped": stopped, "world": distributed.get_world_size()}))
    distributed.teardown()


@pytest.mark.slow
def test_two_process_training_writes_one_run_and_resumes(tmp_path):
    from spreadcon import train as train_module
    from spreadcon.config import TrainConfig

    if not hasattr(train_module, "distributed"):
        pytest.skip("spreadcon.train has no DDP support yet (the DIST helper's patch)")
    run = tmp_path / "run"
    config = TrainConfig(dataset="digits", encoder="cnn-test", loss="spread", epochs=3, batch_size=200, lr=3e-3,
                         warmup_epochs=0.5, out_dir=str(run), progress=False, tensorboard=False, device="cpu",
                         probe_epochs=2)
    # first run: stopped by a callback at the end of epoch 2, so epoch 1's checkpoint is the last
    mp.spawn(_train_worker, args=(free_port(), config.to_json(), False, str(tmp_path)), nprocs=WORLD, join=True)
    for rank in range(WORLD):
        info = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert info == {"stopped": True, "world": WORLD}
    ckpt = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert ckpt["position"]["epoch"] == 1
    assert sorted(p.name for p in run.glob("*.pt")) == ["best.pt", "checkpoint.pt"]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1  # rank 0 alone writes
    # resume: epochs 2 and 3
    mp.spawn(_train_worker, args=(free_port(), config.to_json(), True, str(tmp_path)), nprocs=WORLD, join=True)
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]
    ckpt = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert ckpt["position"]["epoch"] == 3
    assert not any(k.startswith("module.") for k in ckpt["model"])  # the bare model, not the DDP wrapper
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_wrapper_works_from_the_protocol_not_the_class():
    """Any module with `term_weights` and `per_anchor` is accepted (no isinstance switch)."""
    from spreadcon import losses

    class Custom(torch.nn.Module):
        term_weights = {"supcon": 1.0}
        anchors = "all"

        def per_anchor(self, features, labels, ids, *, anchor_index=None):
            return losses.per_anchor_losses(features, labels, ids, ("supcon",), anchor_index=anchor_index)

        def forward(self, features, labels):
            return losses.supcon_loss(features, labels)

    assert distributed.check_protocol(Custom()) == {"supcon": 1.0}
    assert distributed.check_protocol(LOSSES["spread"](alpha=0.2)) == {"attract": 0.2, "repel": 0.8}


# --- the memory bank under torch.distributed ---------------------------------------------------
BANK_SIZE = 17  # not a multiple of any batch's rows: FIFO eviction cuts batches, so row order matters
BANK_BATCHES = (7, 6, 5, 7)  # global batch sizes of the steps; shard splits 7 as 4 + 3


def _bank_modules() -> list[tuple[str, torch.nn.Module]]:
    return [("spread", LOSSES["spread"](alpha=0.3, temperature=0.4)),
            ("spread-lean", LOSSES["spread"](alpha=0.3, temperature=0.4, path="lean", block_size=3)),
            ("supcon", LOSSES["supcon"](temperature=0.4)),
            ("simclr", LOSSES["simclr"](temperature=0.4))]


def _bank_rows(bank) -> list[torch.Tensor]:
    return [bank.embeddings, bank.labels, bank.ids, bank.has_id]


def _same_on_every_rank(t: torch.Tensor) -> bool:
    parts = [torch.empty_like(t) for _ in range(WORLD)]
    dist.all_gather(parts, t.contiguous())
    return all(torch.equal(p, parts[0]) for p in parts)


def _bank_cases(rank: int) -> dict:
    from spreadcon.losses import MemoryBank

    report = {}
    for name, module in _bank_modules():
        torch.manual_seed(0)  # the same encoder in every process and in the oracle
        enc = torch.nn.Linear(6, 5).double()
        ref_enc = torch.nn.Linear(6, 5).double()
        ref_enc.load_state_dict(enc.state_dict())
        ddp = torch.nn.parallel.DistributedDataParallel(enc)
        opt, ref_opt = (torch.optim.SGD(m.parameters(), lr=0.5) for m in (enc, ref_enc))
        bank, ref_bank = MemoryBank(BANK_SIZE), MemoryBank(BANK_SIZE)
        flagged = type(module)(**({"alpha": 0.3} if name.startswith("spread") else {}), temperature=0.4,
                               gather_distributed=True)
        for step, b in enumerate(BANK_BATCHES):
            g = torch.Generator().manual_seed(100 + step)
            x = torch.randn(b, 2, 6, generator=g, dtype=torch.float64)  # the global batch [B, V, 6]
            y = torch.randint(0, 3, (b,), generator=g)
            mine = distributed.shard(torch.arange(b))                  # rows rank, rank + W, ...
            # oracle: one process, the whole global batch, its own bank
            ref_z = ref_enc(x)
            ref_z.retain_grad()
            ref_opt.zero_grad()
            ref_loss = module(ref_z, y, memory=ref_bank)
            ref_loss.backward()
            # two processes: local rows, every rank's bank
            opt.zero_grad()
            z = ddp(x[mine])
            z.retain_grad()
            loss = distributed.GlobalBatchLoss(module)(z, y[mine], memory=bank)
            loss.backward()
            errs = [abs(loss.item() - ref_loss.item()),
                    (z.grad / WORLD - ref_z.grad[mine]).abs().max().item(),  # DDP divides by W
                    max((p.grad - q.grad).abs().max().item() for p, q in zip(enc.parameters(), ref_enc.parameters()))]
            # lightly's flag takes the bank too: the same value and embedding gradient
            zz = z.detach().clone().requires_grad_()
            flagged_loss = flagged(zz, y[mine], memory=bank)
            flagged_loss.backward()
            errs += [abs(flagged_loss.item() - loss.item()), (zz.grad - z.grad).abs().max().item()]
            if len(ref_bank):  # the bank must matter, or the comparison proves nothing
                without = module(ref_z.detach(), y).item()
                assert abs(without - ref_loss.item()) > 1e-3, (name, step, without, ref_loss.item())
            assert max(errs) < TOL, (name, step, errs)
            opt.step()
            ref_opt.step()
            bank.push(*distributed.gather_global_batch(z.detach(), y[mine]))
            ref_bank.push(ref_z.detach(), y)
            # every rank's bank is the same, bit for bit, and the single process's
            rows, ref_rows = _bank_rows(bank), _bank_rows(ref_bank)
            assert all(_same_on_every_rank(t) for t in rows), (name, step)
            assert len(bank) == len(ref_bank) == min(BANK_SIZE, 2 * sum(BANK_BATCHES[: step + 1]))
            bank_err = (rows[0] - ref_rows[0]).abs().max().item()
            assert bank_err < TOL and all(torch.equal(a, c) for a, c in zip(rows[1:], ref_rows[1:])), (name, step)
            report[f"{name} step {step}"] = errs + [bank_err]
    # misuse fails clearly on every rank, without hanging: parts that are not shard's ...
    report["shard error"] = error_text(lambda: distributed.gather_global_batch(torch.zeros(2 + 2 * rank, 3)))
    # ... and banks of different sizes (e.g. each rank pushed only its own rows)
    uneven = MemoryBank(8)
    uneven.push(torch.randn(1 + rank, 2, 4), torch.zeros(1 + rank, dtype=torch.long))
    report["bank error"] = error_text(lambda: distributed.GlobalBatchLoss(LOSSES["spread"]())(
        torch.randn(3, 2, 4), torch.zeros(3, dtype=torch.long), memory=uneven))
    return report


def test_memory_bank_under_two_processes_equals_the_single_process_bank_loss_and_gradients(tmp_path):
    """Each rank pushes the gathered global batch: after every step both ranks' banks are the same
    bit for bit and equal the bank of one process fed the whole global batches (FIFO eviction
    included); the loss on (global batch + bank), the embeddings' and the parameters' gradients
    equal the single process's within 1e-6, over 4 SGD steps with unequal local batches."""
    mp.spawn(_worker, args=(free_port(), str(tmp_path), _bank_cases), nprocs=WORLD, join=True)
    for rank in range(WORLD):
        report = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert "`shard` of one global batch" in report.pop("shard error")
        assert "same memory bank" in report.pop("bank error")
        assert len(report) == len(_bank_modules()) * len(BANK_BATCHES)
        assert max(max(v) for v in report.values()) < TOL


def test_gather_global_batch_is_the_identity_and_unshard_inverts_shard_in_one_process():
    z, y = torch.randn(5, 2, 3), torch.arange(5)
    assert distributed.gather_global_batch(z, y) == (z, y)
    with pytest.raises(ValueError, match="one row per image"):
        distributed.gather_global_batch(z, torch.arange(4))
    # the order that undoes shard's split, for every world size and batch size
    for world in (2, 3, 4):
        for n in range(world, 11):
            index = torch.arange(n)
            parts = [index[r::world] for r in range(world)]  # what each rank's shard holds
            order = distributed.unshard_order([len(p) for p in parts], torch.device("cpu"))
            assert torch.equal(torch.cat(parts)[order], index)
    with pytest.raises(ValueError, match="come as \\[3, 2\\] rows per rank"):
        distributed.unshard_order([2, 3], torch.device("cpu"))


def test_build_memory_bank_no_longer_refuses_torchrun(monkeypatch):
    from spreadcon import build
    from spreadcon.config import TrainConfig
    from spreadcon.losses import MemoryBank

    monkeypatch.setattr(distributed, "get_world_size", lambda: WORLD)  # as under torchrun
    assert distributed.get_world_size() == WORLD
    bank = build.build_memory_bank(TrainConfig(dataset="digits", encoder="cnn-test", loss="spread", memory_bank=64),
                                   torch.device("cpu"))
    assert isinstance(bank, MemoryBank) and bank.size == 64 and len(bank) == 0
    with pytest.raises(ValueError, match="needs a contrastive loss"):
        build.build_memory_bank(TrainConfig(dataset="digits", encoder="cnn-test", protocol="ce", memory_bank=64),
                                torch.device("cpu"))


def _bank_train_worker(rank: int, port: int, config_json: str, out_dir: str) -> None:
    from spreadcon import train as train_module
    from spreadcon.config import TrainConfig

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(WORLD), SPREADCON_DIST_TIMEOUT="120")
    banks = []
    build = train_module.build_memory_bank
    train_module.build_memory_bank = lambda *a: banks.append(build(*a)) or banks[-1]  # keep this rank's bank
    train_module.train(TrainConfig.from_json(config_json))
    torch.save(banks[0].state_dict(), Path(out_dir, f"bank{rank}.pt"))
    distributed.teardown()


@pytest.mark.slow
def test_two_process_training_with_a_memory_bank_keeps_one_bank_on_every_rank(tmp_path):
    from spreadcon.config import TrainConfig

    run = tmp_path / "run"
    config = TrainConfig(dataset="digits", encoder="cnn-test", loss="spread", epochs=1, batch_size=200, lr=3e-3,
                         memory_bank=300, out_dir=str(run), progress=False, tensorboard=False, device="cpu",
                         probe_epochs=1)
    mp.spawn(_bank_train_worker, args=(free_port(), config.to_json(), str(tmp_path)), nprocs=WORLD, join=True)
    banks = [torch.load(tmp_path / f"bank{r}.pt", weights_only=False) for r in range(WORLD)]
    saved = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)["extra"][0]
    assert banks[0]["embeddings"].shape[0] == 300
    for state in (banks[1], saved):
        assert all(torch.equal(state[k], banks[0][k]) for k in ("embeddings", "labels", "ids", "has_id"))
