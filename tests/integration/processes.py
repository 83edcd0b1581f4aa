"""A worker running as a real process, for the crash and fault tests: start it, read
what it logged, pause, kill (and reap) or stop it, and wait for it without hanging."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest


class WorkerProcess:
    """One worker process; its side effects go to ``LOG_DIR/<pid>.log``."""

    def __init__(self, argv: list[str], log_dir: Path, stderr_path: Path) -> None:
        self.stderr_path = stderr_path
        with stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        self.pid = self.proc.pid
        self.log = log_dir / f"{self.pid}.log"

    def log_lines(self) -> list[list[str]]:
        """The words of each line this process logged, in the order it wrote them."""
        if not self.log.exists():
            return []
        return [line.split(" ") for line in self.log.read_text().splitlines()]

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        # Reap it: until then its pid still answers kill(pid, 0), and the other workers
        # would take it for alive and wait for its leases to lapse.
        self.proc.wait(timeout=30)

    def stop(self) -> int:
        """SIGTERM, the graceful shutdown; return the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def wait_until(self, condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                pytest.fail(
                    f"worker {self.pid} exited ({self.proc.returncode}) before {what}:\n"
                    f"{self.stderr()}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"worker {self.pid}: no {what} within {timeout}s:\n{self.stderr()}")
            time.sleep(0.005)
