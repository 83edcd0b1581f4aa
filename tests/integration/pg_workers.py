"""Worker processes for the PostgreSQL fault tests: start, pause, kill, stop, and read
what each one says it executed (its side-effect log, see ``pg_app.py``)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

#: (idempotency key, "start" or "done", lease token), in the order one process wrote them.
Line = tuple[str, str, int]


class WorkerProcess:
    """One ``pg_app.py`` worker process."""

    def __init__(self, argv: list[str], log_dir: Path, stderr_path: Path) -> None:
        self.stderr_path = stderr_path
        with stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        self.pid = self.proc.pid
        self.log = log_dir / f"{self.pid}.log"

    def lines(self) -> list[Line]:
        if not self.log.exists():
            return []
        found = []
        for line in self.log.read_text().splitlines():
            key, event, token = line.split(" ")
            found.append((key, event, int(token)))
        return found

    def starts(self) -> int:
        return sum(1 for _, event, _ in self.lines() if event == "start")

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


class Workers:
    """The worker processes of one test; :meth:`cleanup` kills any still running."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.log_dir = tmp_path / "logs"
        self.log_dir.mkdir()
        self.started: list[WorkerProcess] = []

    def start(self, argv: list[str]) -> WorkerProcess:
        stderr_path = self.tmp_path / f"worker-{len(self.started)}.err"
        worker = WorkerProcess(argv, self.log_dir, stderr_path)
        self.started.append(worker)
        return worker

    def logs(self) -> dict[int, list[Line]]:
        return {worker.pid: worker.lines() for worker in self.started}

    def cleanup(self) -> None:
        for worker in self.started:
            if worker.proc.poll() is None:
                worker.kill()  # SIGKILL ends a stopped (SIGSTOP) process too


def pid_of(worker_id: str) -> int:
    """The pid in a worker id, ``"host/namespace:pid:random"``."""
    return int(worker_id.rsplit(":", 2)[1])
