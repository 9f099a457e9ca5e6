"""The one error convention of `spreadcon`, through the real command line in subprocesses.

Each row: arguments, expected exit code, a phrase the message must contain. A user error is one
line on stderr, exit code 2, no traceback; `--debug` shows the traceback; a bug keeps its traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
MISSING = "/nonexistent/spreadcon-run"

CASES = [
    (["train", "--dataset", "nope", "--epochs", "1"], 2, "unknown dataset 'nope'"),
    (["train", "--set", "nope=1"], 2, "unknown config key 'nope'"),
    (["train", "--config", "/nonexistent/config.json"], 2, "No such file or directory: '/nonexistent/config.json'"),
    (["train", "--resume", "--overwrite"], 2, "pass one of them"),
    (["eval", MISSING], 2, f"{MISSING} is not a run folder (no such folder); train one with `spreadcon train`"),
    (["eval", MISSING, "--probe-epochs", "0"], 2, "--probe-epochs must be >= 1"),
    (["apply", "robustness", MISSING], 2, "is not a run folder"),
    (["apply", "noisy", MISSING, "--rate", "1.5"], 2, "noise rate must lie in [0, 1)"),
    (["apply", "coreset", MISSING, "--size", "2"], 2, "coreset size must be a fraction in (0, 1]"),
    (["apply", "robustness", MISSING, "--k-range", "a,b"], 2, "expected comma-separated whole numbers"),
    (["reproduce", "theory", "--rejudge", "--out", "/nonexistent/results"], 2,
     "theory: no /nonexistent/results/theory/results.json to judge again"),
    (["--threads", "0", "list"], 2, "--threads must be a whole number >= 1, got '0'"),
    (["list", "losses", "--threads=x"], 2, "--threads must be a whole number >= 1, got 'x'"),
]


def spreadcon(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "spreadcon", *argv], capture_output=True, text=True,
                          env=environ, timeout=120)


@pytest.mark.parametrize("argv, code, phrase", CASES, ids=[" ".join(c[0])[:40] for c in CASES])
def test_user_errors_are_one_line_without_traceback(argv, code, phrase):
    done = spreadcon(*argv)
    assert done.returncode == code, done.stderr
    assert phrase in done.stderr
    assert "Traceback" not in done.stderr
    if "usage:" not in done.stderr:  # argparse's own errors print the usage first
        assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("spreadcon ")


def test_threads_from_the_environment_are_checked():
    done = spreadcon("list", env={"SPREADCON_THREADS": "many"})
    assert done.returncode == 2 and "SPREADCON_THREADS must be a whole number >= 1, got 'many'" in done.stderr


def test_debug_shows_the_traceback():
    done = spreadcon("--debug", "eval", MISSING)
    assert done.returncode == 1 and "Traceback" in done.stderr and "FileNotFoundError" in done.stderr


def test_a_bug_keeps_its_traceback(monkeypatch):
    from spreadcon import cli
    from spreadcon.commands import list as list_cmd

    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(list_cmd, "run", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["list"])


def test_threads_are_set_once_from_the_option(monkeypatch):
    import torch

    from spreadcon import cli

    before = torch.get_num_threads()
    try:
        assert cli.main(["list", "losses", "--threads", "2"]) == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert cli.split_global_options(["train", "--debug", "--threads", "3", "--", "--debug"]) == (
        ["train", "--", "--debug"], True, "3")
