"""A worker running as a real process, for the crash and fault tests: start it, read
what it logged, pause, kill (and reap) or stop it, and wait for it without hanging."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pytest

from surestep import App
from surestep.storage.workers import WorkerStore


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

    def wait_serving(self, app: App, timeout: float = 60.0) -> None:
        """Wait until this worker has announced itself in the database: its signal
        handlers are in place by then, so a SIGTERM is a graceful stop (one that lands
        while the process is still importing kills it, status -15)."""
        workers = WorkerStore(app.store)
        self.wait_until(
            lambda: any(w.pid == self.pid for w in workers.live(time.time())),
            "the worker serving",
            timeout,
        )

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


START_APP = Path(__file__).with_name("start_app.py")


def race_starts(workdir: Path, urls: list[str], processes: int) -> list[list[str]]:
    """Race ``processes`` real processes to start run ``same-id``: one round per URL,
    all of them released together each round (see ``start_app.py``). Asserts each
    process exited cleanly; returns the lines each one printed."""
    (workdir / "urls").write_text("".join(f"{url}\n" for url in urls))
    procs: list[subprocess.Popen[bytes]] = []

    def read(name: str) -> str:
        return (workdir / name).read_text()

    def wait_for_files(name: Callable[[int], str], what: str) -> None:
        """Wait until each process ``n`` has created the file ``name(n)``."""
        deadline = time.monotonic() + 60
        while not all((workdir / name(n)).exists() for n in range(processes)):
            for n, proc in enumerate(procs):
                # Looked at after poll(): a process creates its file before it exits.
                if proc.poll() is not None and not (workdir / name(n)).exists():
                    pytest.fail(f"process {n} exited before {what}:\n{read(f'err-{n}')}")
            assert time.monotonic() < deadline, f"the processes did not get {what} within 60s"
            time.sleep(0.002)

    try:
        for n in range(processes):
            with (workdir / f"out-{n}").open("wb") as out, (workdir / f"err-{n}").open("wb") as err:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, str(START_APP), str(workdir), str(n)],
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=err,
                    )
                )
        wait_for_files(lambda n: f"ready-{n}", "getting ready")
        for k in range(len(urls)):
            (workdir / f"go-{k}").touch()
            wait_for_files(lambda n, k=k: f"done-{k}-{n}", f"finishing round {k}")
        outputs = []
        for n, proc in enumerate(procs):
            status = proc.wait(timeout=60)
            errors = read(f"err-{n}")
            assert status == 0 and errors == "", f"process {n} exited {status}:\n{errors}"
            outputs.append(read(f"out-{n}").splitlines())
        return outputs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


def most_running_at_once(rows: Iterable[tuple[int, str | None, str]]) -> int:
    """The most runs in state running at any moment, from run-level events
    ``(id, from_state, to_state)`` that every process appended to the log.

    Ordered by event id, not by time: each process stamps its events with its own clock,
    a millisecond off another's, while ids follow the order the writes happened in (a
    claim that takes a freed place writes after the end that freed it was committed)."""
    changes: list[tuple[int, int]] = []
    for event_id, before, after in rows:
        if after == "running":
            changes.append((event_id, 1))
        elif before == "running":
            changes.append((event_id, -1))
    peak = now = 0
    for _, delta in sorted(changes):
        now += delta
        peak = max(peak, now)
    return peak


def starts_over_rate(times: Sequence[float], rate: float, burst: float, skew: float) -> float:
    """How far the starts at ``times`` (in the order they happened) go beyond a token
    bucket's allowance: in any interval of T seconds, ``burst + rate * T`` starts. 0 or
    less when the allowance held. ``skew``: how far two processes' clocks may differ
    (each is corrected to the database's with an error of half a round trip)."""
    worst = float("-inf")
    for i, first in enumerate(times):
        for j in range(i, len(times)):
            span = max(0.0, times[j] - first + skew)
            worst = max(worst, (j - i + 1) - (burst + rate * span))
    return worst
