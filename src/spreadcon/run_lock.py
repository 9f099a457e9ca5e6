"""One writer per run folder: an exclusive lock file RUN_DIR/.lock (pid, host, start time).

    with RunLock(run_dir):     # ValueError naming the holder if another live process has it
        ...write the run...

The lock is an OS advisory lock (fcntl.flock) on the file, so the kernel releases it when the
holder dies, however it dies: a lock file left by a killed process is stale by construction and
is taken over (with a warning naming the dead holder). The file's JSON only serves the message.
After locking we check that the file we locked is still the one at the path (a releasing holder
unlinks it), which makes take-over safe against two processes racing for one stale lock.
"""

from __future__ import annotations

import json
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks; fall back to O_EXCL
    fcntl = None

LOCK_NAME = ".lock"


class RunLockedError(ValueError):
    """Another live process writes this run folder."""


def _read_holder(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _await_holder(path: Path, wait_s: float = 0.5) -> dict[str, Any]:
    """The holder's details; a holder that has just locked writes them right after, so an empty
    file is read again for up to `wait_s` seconds before the message says "no details"."""
    deadline = time.monotonic() + wait_s
    holder = _read_holder(path)
    while not holder and time.monotonic() < deadline:
        time.sleep(0.02)
        holder = _read_holder(path)
    return holder


def describe_holder(holder: dict[str, Any]) -> str:
    if not holder:
        return "another process (no details recorded yet)"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"pid {holder.get('pid')} on host {holder.get('host')!r}, started {started}"


class RunLock:
    """Exclusive, non-blocking lock of the existing folder `run_dir`. Use as a context manager."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> "RunLock":
        for _ in range(10):  # retry only when the file was replaced between open and lock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if not self._lock(fd):
                holder = _await_holder(self.path)
                os.close(fd)
                raise RunLockedError(
                    f"run folder {self.path.parent} is being written by {describe_holder(holder)}; "
                    f"wait for it to finish or stop it, or choose another out_dir (--out)")
            if self._is_current(fd):
                self.fd = fd
                self._write_holder()
                return self
            os.close(fd)
        raise RunLockedError(f"could not lock {self.path}: it keeps being replaced by another process")

    def _lock(self, fd: int) -> bool:
        if fcntl is None:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def _is_current(self, fd: int) -> bool:
        try:
            return os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            return False

    def _write_holder(self) -> None:
        stale = _read_holder(self.path)
        if stale.get("pid") not in (None, os.getpid()):
            warnings.warn(f"taking over the stale lock of {self.path.parent}: its holder "
                          f"({describe_holder(stale)}) is no longer running", stacklevel=3)
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}).encode()
        os.pwrite(self.fd, info, 0)  # write, then cut the old tail: the file is never empty in between
        os.ftruncate(self.fd, len(info))
        os.fsync(self.fd)

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # unlink while still locked: see _is_current
        except OSError:  # never mask the error that ended the run (a later writer takes the stale lock over)
            pass
        finally:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
