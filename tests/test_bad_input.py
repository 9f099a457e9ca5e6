"""Bad input through the real command line (issue 15): each case is one subprocess.

Every user error must end in one line that names the key, value or file and says what to do,
with exit code 2 and no traceback. The table is the spec: add a row for every new finding.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

TINY = ["--dataset", "digits-coarse", "--encoder", "cnn-test", "--epochs", "1", "--batch-size", "512",
        "--no-progress", "--set", "tensorboard=false"]


def spreadcon(*argv: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    src = str(Path(__file__).resolve().parents[1] / "src")  # this checkout's package, whatever is installed
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "spreadcon", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def npz(path: Path, **arrays) -> str:
    rng = np.random.default_rng(0)
    n = len(arrays["labels"])
    arrays.setdefault("x", rng.normal(size=(n, 8)).astype(np.float32))
    np.savez(path, **arrays)
    return str(path)


def _data_cases(tmp: Path) -> list[tuple[str, list[str], str]]:
    """(name, argv, phrase) for npz files with bad labels or values."""
    y = np.arange(60) % 2
    bad_x = np.zeros((60, 8), np.float32)
    bad_x[3, 2] = np.nan
    files = {
        "float-labels": (npz(tmp / "float.npz", labels=y * 0.5), "integer"),
        "one-class": (npz(tmp / "one.npz", labels=np.zeros(60, np.int64)), "two classes"),
        "negative-labels": (npz(tmp / "neg.npz", labels=y - 1), ">= 0"),
        "nan-inputs": (npz(tmp / "nan.npz", labels=y, x=bad_x), "nan"),
    }
    return [(name, ["train", "--dataset", "npz", "--set", f"data_root={path}", "--encoder",
                    "mlp-test", "--out", str(tmp / name), "--epochs", "1", "--no-progress"], phrase)
            for name, (path, phrase) in files.items()]


def _cases(tmp: Path) -> list[tuple[str, list[str], str]]:
    out = str(tmp / "run")  # never written: every case must fail before the run folder is made
    cases = [
        ("temperature-inf", ["train", *TINY, "--temperature", "inf", "--out", out], "temperature"),
        ("temperature-zero", ["train", *TINY, "--temperature", "0", "--out", out], "temperature"),
        ("epochs-bool", ["train", *TINY, "--set", "epochs=true", "--out", out], "epochs"),
        ("warmup-past-end", ["train", *TINY, "--set", "warmup_epochs=5", "--out", out], "warmup_epochs"),
        ("labelled-fraction", ["train", *TINY, "--set", "labelled_fraction=2", "--out", out], "labelled_fraction"),
        ("dry-run-missing-root", ["reproduce", "fig4-transfer", "--scale", "full", "--data-root",
                                  str(tmp / "nonexistent"), "--dry-run"], "does not exist"),
        ("views-huge", ["train", *TINY, "--set", "views=100000", "--out", out], "views"),
        ("alpha-range", ["train", *TINY, "--alpha", "1.5", "--out", out], "alpha"),
        ("unknown-key", ["train", *TINY, "--set", "alfa=0.5", "--out", out], "alfa"),
        ("unknown-dataset", ["train", "--dataset", "mnist6k", "--out", out], "mnist6k"),
        ("unknown-loss", ["train", *TINY, "--loss", "spred", "--out", out], "spred"),
        ("unknown-encoder", ["train", *TINY, "--encoder", "vitt", "--out", out], "vitt"),
        ("bad-device", ["train", *TINY, "--device", "tpu", "--out", out], "tpu"),
        ("missing-root", ["train", "--dataset", "cifar10", "--set", f"data_root={tmp / 'nowhere'}",
                          "--out", out], "nowhere"),
        ("eval-not-a-run", ["eval", str(tmp)], "config.json"),
        ("eval-missing", ["eval", str(tmp / "absent")], "absent"),
        ("resume-nothing", ["train", *TINY, "--out", str(tmp / "empty"), "--resume"], "resume"),
        ("apply-not-a-run", ["apply", "robustness", str(tmp)], "config.json"),
        ("reproduce-unknown", ["reproduce", "fig9"], "fig9"),
    ]
    return cases + _data_cases(tmp)


def test_bad_input_table(tmp_path):
    """Every row: exit code 2, its phrase in the one-line message, and no traceback."""
    failures = []
    for name, argv, phrase in _cases(tmp_path):
        assert not (tmp_path / "run").exists(), f"a case before {name} wrote a run folder"
        result = spreadcon(*argv, cwd=tmp_path)
        err = result.stderr
        if result.returncode != 2 or phrase.lower() not in err.lower() or "Traceback" in err:
            failures.append(f"{name}: rc={result.returncode} stderr={err.strip()[-400:]!r}")
    assert not failures, "\n".join(failures)


def test_debug_flag_shows_the_traceback(tmp_path):
    result = spreadcon("--debug", "eval", str(tmp_path), cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" in result.stderr


# --- run folders through the real CLI: one writer, no silent reuse, stale outputs, changed data -------
def test_second_run_on_one_folder_is_refused_then_overwrite_replaces_and_eval_goes_stale(tmp_path):
    out = str(tmp_path / "run")
    assert spreadcon("train", *TINY, "--out", out, cwd=tmp_path).returncode == 0
    again = spreadcon("train", *TINY, "--loss", "supcon", "--out", out, cwd=tmp_path)
    assert again.returncode == 2 and "already holds a run" in again.stderr and "Traceback" not in again.stderr
    assert spreadcon("eval", out, "--no-pictures", "--probe-epochs", "2", cwd=tmp_path).returncode == 0
    assert spreadcon("eval", out, "--check", cwd=tmp_path).returncode == 0
    replaced = spreadcon("train", *TINY, "--loss", "supcon", "--out", out, "--overwrite", cwd=tmp_path)
    assert replaced.returncode == 0
    assert '"loss": "supcon"' in (tmp_path / "run" / "config.json").read_text()
    stale = spreadcon("eval", out, "--check", cwd=tmp_path)
    assert stale.returncode == 2 and "Traceback" not in stale.stderr


def test_two_writers_started_together_one_is_refused(tmp_path):
    out = str(tmp_path / "run")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    argv = [sys.executable, "-m", "spreadcon", "train", *TINY, "--set", "epochs=3", "--out", out]
    procs = [subprocess.Popen([*argv, "--loss", loss], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
             for loss in ("supcon", "spread")]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert ("already holds a run" in refused or "is being written" in refused) and "Traceback" not in refused


def test_resume_on_a_changed_data_file_is_refused(tmp_path):
    y = np.arange(60) % 2
    path = npz(tmp_path / "data.npz", labels=y)
    argv = ["train", "--dataset", "npz", "--set", f"data_root={path}", "--encoder", "mlp-test", "--epochs", "2",
            "--no-progress", "--out", str(tmp_path / "run")]
    assert spreadcon(*argv, cwd=tmp_path).returncode == 0
    npz(tmp_path / "data.npz", labels=1 - y)  # same shapes, other labels
    result = spreadcon(*argv, "--resume", cwd=tmp_path)
    assert result.returncode == 2 and "changed" in result.stderr and "Traceback" not in result.stderr


def test_full_disk_while_checkpointing_keeps_the_last_good_checkpoint(tmp_path):
    """A real full disk (a tmpfs; skipped where this process may not mount one): room for epoch 1's
    files and half a checkpoint more, so epoch 2's atomic checkpoint write runs out of space. The
    run stops with a one-line error and epoch 1's checkpoint stays whole: resume continues later."""
    probe = tmp_path / "probe"
    assert spreadcon("train", *TINY, "--out", str(probe), cwd=tmp_path).returncode == 0
    ckpt, best = ((probe / name).stat().st_size for name in ("checkpoint.pt", "best.pt"))
    small = sum(f.stat().st_size for f in probe.iterdir() if f.suffix in (".json", ".jsonl"))
    need = ckpt + best + small + ckpt // 2 + 8 * 4096  # epoch 1's files, then half a checkpoint
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={need}", "tmpfs", str(disk)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root and a mount namespace)")
    try:
        out = disk / "run"
        full = spreadcon("train", *TINY, "--set", "epochs=3", "--out", str(out), cwd=tmp_path)
        assert full.returncode == 2 and "Traceback" not in full.stderr, full.stderr
        assert "space" in full.stderr.lower(), full.stderr
        import torch

        state = torch.load(out / "checkpoint.pt", weights_only=False)  # whole, not truncated
        assert state["model"] and not list(disk.rglob("*.tmp"))
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)
