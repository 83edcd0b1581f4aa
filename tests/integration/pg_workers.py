"""Worker processes for the PostgreSQL fault tests: start, pause, kill, stop, and read
what each one says it executed (its side-effect log, see ``pg_app.py``)."""

from __future__ import annotations

from pathlib import Path

import processes  # tests/integration/processes.py

#: (idempotency key, "start" or "done", lease token), in the order one process wrote them.
Line = tuple[str, str, int]


class WorkerProcess(processes.WorkerProcess):
    """One ``pg_app.py`` worker process."""

    def lines(self) -> list[Line]:
        return [(key, event, int(token)) for key, event, token in self.log_lines()]

    def starts(self) -> int:
        return sum(1 for _, event, _ in self.lines() if event == "start")


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
