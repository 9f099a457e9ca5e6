"""The run folder: one writer (lock), no silent overwrite or reuse, runs know their data and how
far they got, the one reuse rule, checkpoint ids, and config / data checks before any work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from spreadcon import build, runs, train as train_mod
from spreadcon.config import TrainConfig
from spreadcon.run_lock import RunLock
from spreadcon.checkpoint import checkpoint_stamp
from spreadcon.runs import load_run, run_status
from spreadcon.train import Schedule, train, train_or_reuse

SRC = str(Path(__file__).resolve().parents[1] / "src")


def tiny(tmp_path, name="run", **changes) -> TrainConfig:
    base = dict(dataset="digits", encoder="cnn-test", loss="spread", epochs=2, batch_size=256, lr=3e-3,
                warmup_epochs=0.5, out_dir=str(tmp_path / name), progress=False, tensorboard=False,
                device="cpu", probe_epochs=5)
    return TrainConfig(**{**base, **changes})


def vectors_npz(path: Path, seed: int = 0, nan_row: int | None = None) -> Path:
    """A small vector dataset: 3 classes of 40 points in 6-d, with a split array."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), 40)
    x = (rng.normal(size=(120, 6)) + 3 * np.eye(6)[labels]).astype(np.float32)
    if nan_row is not None:
        x[nan_row, 2] = np.nan
    split = np.tile(np.array([0] * 6 + [1, 2]), 15)
    np.savez(path, x=x, labels=labels, split=split)
    return path


def npz_config(tmp_path, data: Path, **changes) -> TrainConfig:
    return tiny(tmp_path, dataset="npz", data_root=str(data), encoder="mlp-test", batch_size=32, **changes)


def python(code: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# --- one writer -----------------------------------------------------------------------------
def test_two_writers_on_one_folder_never_mix(tmp_path):
    out = tmp_path / "run"
    code = """
        import sys
        from spreadcon.config import TrainConfig
        from spreadcon.train import train
        train(TrainConfig(dataset="digits", encoder="cnn-test", loss=sys.argv[1] if len(sys.argv) > 1 else "{loss}",
                          epochs=3, batch_size=128, out_dir="{out}", progress=False, tensorboard=False, device="cpu"))
    """
    procs = {loss: python(code.format(loss=loss, out=out)) for loss in ("supcon", "spread")}
    results = {loss: (p.wait(timeout=300), p.stderr.read()) for loss, p in procs.items()}
    winners = [loss for loss, (rc, _) in results.items() if rc == 0]
    assert len(winners) == 1, results
    loser_err = next(err for rc, err in results.values() if rc != 0)
    assert "is being written by pid" in loser_err or "already holds a run" in loser_err, loser_err
    assert json.loads((out / "config.json").read_text())["loss"] == winners[0]
    assert [r["epoch"] for r in runs.read_metrics(out)] == [1, 2, 3]
    assert not (out / ".lock").exists()


def test_a_live_lock_holder_is_named(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = python(f"""
        import time
        from spreadcon.run_lock import RunLock
        lock = RunLock("{out}").acquire()
        print("locked", flush=True)
        time.sleep(60)
    """)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ValueError, match=rf"being written by pid {holder.pid} on host"):
            train(tiny(tmp_path))
        assert runs.run_files(out) == []  # nothing written by the refused writer
    finally:
        holder.kill()
        holder.wait()


def test_a_holder_that_has_just_locked_is_named_once_it_writes_its_details(tmp_path):
    """The race behind two writers starting together: the loser finds the lock held but its file
    still empty; it waits a moment for the holder's details instead of saying "no details"."""
    import threading

    fcntl = pytest.importorskip("fcntl")
    from spreadcon.run_lock import RunLockedError

    out = tmp_path / "run"
    out.mkdir()
    path = out / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # locked, details not written yet
    late = threading.Timer(0.1, lambda: path.write_text(json.dumps({"pid": 4242, "host": "h", "started": 0})))
    late.start()
    try:
        with pytest.raises(RunLockedError, match="being written by pid 4242 on host 'h'"):
            RunLock(out).acquire()
    finally:
        late.join()
        os.close(fd)


def test_stale_lock_of_a_killed_process_is_taken_over(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = python(f"""
        import os, signal
        from spreadcon.run_lock import RunLock
        RunLock("{out}").acquire()
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    holder.wait()
    assert holder.returncode == -signal.SIGKILL
    assert json.loads((out / ".lock").read_text())["pid"] == holder.pid  # left behind
    with pytest.warns(UserWarning, match=rf"stale lock.*pid {holder.pid}"):
        run_dir = train(tiny(tmp_path, epochs=1))
    assert run_status(run_dir).finished and not (out / ".lock").exists()


# --- no silent overwrite ---------------------------------------------------------------------
def test_a_folder_without_checkpoint_is_not_overwritten(tmp_path):
    run_dir = train(tiny(tmp_path, epochs=1))
    (run_dir / "checkpoint.pt").unlink()  # a plausible clean-up
    (run_dir / "eval").mkdir()
    (run_dir / "eval" / "result.json").write_text("{}")
    best = (run_dir / "best.pt").read_bytes()
    with pytest.raises(ValueError, match="already holds a run .*best.pt.*--overwrite"):
        train(tiny(tmp_path, epochs=1, loss="supcon"))
    assert (run_dir / "best.pt").read_bytes() == best
    with pytest.raises(ValueError, match="nothing to resume"):
        train(tiny(tmp_path, epochs=1), resume=True)
    train(tiny(tmp_path, epochs=1, loss="supcon"), overwrite=True)
    assert json.loads((run_dir / "config.json").read_text())["loss"] == "supcon"
    assert not (run_dir / "eval").exists()  # derived from the old model: removed


def test_resume_removes_stale_derived_outputs(tmp_path):
    cfg = tiny(tmp_path, epochs=2)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[SigintAfter(1)])
    (tmp_path / "run" / "eval").mkdir()
    train(cfg, resume=True)
    assert not (tmp_path / "run" / "eval").exists()


class SigintAfter:
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, epoch, state):
        if epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGINT)


# --- runs know their data and their progress ------------------------------------------------------
def test_changed_data_is_refused_on_resume_and_load(tmp_path):
    data = vectors_npz(tmp_path / "data.npz")
    cfg = npz_config(tmp_path, data, epochs=2)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[SigintAfter(1)])
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["data_root"] == str(data.resolve()) and info["data_fingerprint"]["sha256"]
    vectors_npz(data, seed=1)  # the file is replaced
    with pytest.raises(ValueError, match=r"dataset of .* changed since it was trained \(x changed.*resume refused"):
        train(cfg, resume=True)
    with pytest.raises(ValueError, match=r"x changed.*loading the run refused"):
        load_run(tmp_path / "run", checkpoint="last")
    vectors_npz(data, seed=0)  # restored: both work again
    train(cfg, resume=True)
    assert load_run(tmp_path / "run").status.finished


def test_an_unfinished_run_says_how_far_it_got(tmp_path):
    cfg = tiny(tmp_path, epochs=3)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[SigintAfter(1)])
    run = load_run(tmp_path / "run", checkpoint="last")
    status = run.status
    assert (status.epochs_trained, status.epochs, status.finished) == (1, 3, False)
    assert str(status) == "1 of 3 epochs: unfinished"
    assert not run_status(tmp_path / "run").finished
    train(cfg, resume=True)
    run = load_run(tmp_path / "run")
    assert str(run.status) == "3 of 3 epochs" and run.status.finished


def test_truncated_checkpoint_on_resume_names_the_alternatives(tmp_path):
    cfg = tiny(tmp_path, epochs=2, keep_checkpoints=[1])
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[SigintAfter(1)])
    path = tmp_path / "run" / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"cannot read .*checkpoint.pt \(truncated or corrupt.*best.pt, ckpt_epoch1.pt"):
        train(cfg, resume=True)


def test_checkpoint_stamp_identifies_the_file(tmp_path):
    run_dir = train(tiny(tmp_path, epochs=2, keep_checkpoints=[1]))
    best, last, first = (checkpoint_stamp(run_dir, c) for c in ("best", "last", 1))
    assert last["epoch"] == 2 and first["epoch"] == 1 and best["epoch"] in (1, 2)
    assert len(last["sha256"]) == 64 and last["sha256"] != first["sha256"]
    assert checkpoint_stamp(run_dir, "last") == last
    with pytest.raises(ValueError, match="no checkpoint ckpt_epoch2.pt.*available"):
        checkpoint_stamp(run_dir, 2)


# --- the one reuse rule ---------------------------------------------------------------------
def test_train_or_reuse(tmp_path):
    cfg = tiny(tmp_path, epochs=2)
    run_dir = train_or_reuse(cfg)  # empty: trains
    stamp = (run_dir / "checkpoint.pt").stat().st_mtime_ns
    assert train_or_reuse(tiny(tmp_path, epochs=2, progress=True)) == run_dir  # runtime keys ignored
    assert (run_dir / "checkpoint.pt").stat().st_mtime_ns == stamp  # reused, not retrained
    with pytest.raises(ValueError, match=r"refusing to reuse .*alpha: 0.5 \(saved\) != 0.25"):
        train_or_reuse(tiny(tmp_path, epochs=2, alpha=0.25))
    other = tiny(tmp_path, "b", epochs=2)
    with pytest.raises(KeyboardInterrupt):
        train(other, callbacks=[SigintAfter(1)])
    assert train_or_reuse(other) == Path(other.out_dir) and run_status(other.out_dir).finished  # resumed
    assert [r["epoch"] for r in runs.read_metrics(other.out_dir)] == [1, 2]


# --- config and data checks before any work ---------------------------------------------------
@pytest.mark.parametrize("changes, message", [
    ({"epochs": True}, "epochs takes a number, got True"),
    ({"temperature": float("inf")}, "temperature must be a finite number"),
    ({"alpha": float("nan")}, "alpha must be a finite number"),
    ({"warmup_epochs": 3.0, "epochs": 2}, r"warmup_epochs=3.0 exceeds epochs=2"),
    ({"views": 100000}, "views=100000 is beyond"),
    ({"lr": "fast"}, "lr takes a number"),
    ({"progress": 1}, "progress takes true or false"),
    ({"memory_bank": -1}, "memory_bank must be >= 0"),
])
def test_bad_config_values(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes)


def test_numpy_scalars_and_0d_tensors_are_numbers():
    cfg = TrainConfig(temperature=np.float32(0.25), epochs=np.int64(3), alpha=torch.tensor(0.75))
    assert (cfg.temperature, cfg.epochs, cfg.alpha) == (0.25, 3, 0.75)
    assert type(cfg.epochs) is int and type(cfg.alpha) is float
    assert TrainConfig.from_json(cfg.to_json()) == cfg


def test_batch_beyond_memory_is_refused_before_allocating(tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod, "_memory_available", lambda device: 2**20)  # a 1 MiB machine
    with pytest.raises(ValueError, match=r"batch_size=256 x views=2 needs at least .* pass a smaller"):
        train(tiny(tmp_path))
    assert not (tmp_path / "run").exists()


def test_non_finite_input_data_is_named(tmp_path):
    data = vectors_npz(tmp_path / "data.npz", nan_row=7)
    with pytest.raises(ValueError, match=r"NaN|nan|non-finite|inf"):
        train(npz_config(tmp_path, data))
    assert runs.run_files(tmp_path / "run") == []


def test_a_last_batch_of_one_image_is_merged():
    sched = Schedule(n=257, batch_size=128, epochs=1, warmup_epochs=0)
    perm = torch.arange(257)
    assert sched.steps_per_epoch == 2
    assert [len(sched.batch(perm, b)) for b in range(2)] == [128, 129]
    assert torch.equal(torch.cat([sched.batch(perm, b) for b in range(2)]), perm)
    assert Schedule(n=258, batch_size=128, epochs=1, warmup_epochs=0).steps_per_epoch == 3
    assert Schedule(n=1, batch_size=128, epochs=1, warmup_epochs=0).steps_per_epoch == 1


# --- train_subset and memory_bank ------------------------------------------------------------
def test_train_subset_keeps_those_positions(tmp_path):
    full = build.build_dataset(tiny(tmp_path))
    pos = np.array([5, 0, 17, 300, 1000])
    np.save(tmp_path / "keep.npy", pos)
    cfg = tiny(tmp_path, train_subset=str(tmp_path / "keep.npy"), epochs=1, batch_size=4, noise_rate=0.2)
    ds = build.build_dataset(cfg)
    train_full = full.get_split("train")
    assert torch.equal(ds.get_split("train").origin, train_full.origin[np.sort(pos)])
    assert int((ds.split == 1).sum()) == int((full.split == 1).sum())  # val / test untouched
    record = ds.transforms[-1]
    assert record["transform"] == "train_subset" and record["kept"] == 5 and len(record["sha256"]) == 64
    run = load_run(train(cfg))
    assert int((run.dataset.split == 0).sum()) == 5
    np.save(tmp_path / "bad.npy", np.array([0, 0]))
    with pytest.raises(ValueError, match="positions must be distinct"):
        build.build_dataset(tiny(tmp_path, train_subset=str(tmp_path / "bad.npy")))
    with pytest.raises(FileNotFoundError, match="train_subset=.*no such file"):
        build.build_dataset(tiny(tmp_path, train_subset=str(tmp_path / "missing.npy")))


def test_memory_bank_is_passed_to_the_loss_and_filled(tmp_path, monkeypatch):
    import spreadcon.losses as losses

    class FakeBank:
        def __init__(self, size):
            self.size, self.pushed = size, []

        def to(self, device):  # MemoryBank.to: the trainer moves the bank to its device
            return self

        def push(self, z, labels):
            assert not z.requires_grad
            self.pushed.append((tuple(z.shape), labels.clone()))

        def state_dict(self):
            return {"n": len(self.pushed)}

        def load_state_dict(self, state):
            self.restored = state["n"]

    banks, seen = [], []
    monkeypatch.setattr(losses, "MemoryBank", lambda size: banks.append(FakeBank(size)) or banks[-1], raising=False)
    real = train_mod.build_loss

    def recording(config):
        loss = real(config)

        def forward(z, labels, memory=None, **kw):
            seen.append(memory)
            return loss(z, labels, **kw)
        return forward

    monkeypatch.setattr(train_mod, "build_loss", recording)
    train(tiny(tmp_path, epochs=1, memory_bank=64))
    bank = banks[0]
    assert bank.size == 64 and len(bank.pushed) == len(seen) == 6  # 1294 images / 256 per step
    assert all(m is bank for m in seen) and bank.pushed[0][0] == (256, 2, 16)
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["extra"] == [{"n": 6}]


def test_memory_bank_run_resumes_bit_identically(tmp_path):
    """The real spreadcon.losses.MemoryBank through the trainer: its rows are checkpointed, so a run
    stopped after epoch 1 and resumed equals the uninterrupted one."""
    from test_train import SigintAt

    whole = train(tiny(tmp_path, "whole", epochs=2, memory_bank=300))
    part = tiny(tmp_path, "part", epochs=2, memory_bank=300)
    with pytest.raises(KeyboardInterrupt):
        train(part, callbacks=[SigintAt(epoch=1)])
    bank = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=False)["extra"][0]
    assert bank["embeddings"].shape[0] == 300 and not bank["embeddings"].requires_grad
    resumed = train(part, resume=True)
    a = torch.load(whole / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(resumed / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_git_revision_is_dirty_only_for_edits_to_the_source(tmp_path):
    """Regenerating results (or editing docs) must not stamp a run '-dirty'; editing code must."""
    import shutil
    import subprocess

    from spreadcon.io import git_revision

    if shutil.which("git") is None:
        pytest.skip("needs the git binary")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "code.py").write_text("x = 1\n")
    (tmp_path / "README.md").write_text("old\n")
    subprocess.run(git + ["init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(git + ["add", "."], cwd=tmp_path, check=True)
    subprocess.run(git + ["commit", "-qm", "c"], cwd=tmp_path, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    (tmp_path / "README.md").write_text("new\n")
    assert git_revision(tmp_path / "pkg") == head
    (tmp_path / "pkg" / "code.py").write_text("x = 2\n")
    assert git_revision(tmp_path / "pkg") == head + "-dirty"
