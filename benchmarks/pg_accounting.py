"""Where the CPU of a PostgreSQL benchmark goes, read from /proc and the server's views.

Used by ``engine_postgres.py``. The server's CPU is that of the backends serving the
benchmark's worker processes only: they connect with an ``application_name`` of their
own (one per round), so other clients of the cluster (other engineers' tests) and other
clusters on the machine are left out. The cluster's background processes (WAL writer,
checkpointer, autovacuum) serve every client; they are reported beside, not counted.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import psycopg

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of a process (all its threads), in clock ticks; None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])


def machine_ticks() -> tuple[int, int, int, int]:
    """(busy, softirq, iowait, total) clock ticks over all CPUs since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = values[:8]
    busy = user + nice + system + irq + softirq + steal
    return busy, softirq, iowait, busy + idle + iowait


def server_pids(conn: psycopg.Connection[Any], application: str) -> tuple[set[int], set[int]]:
    """(backends serving ``application``, the cluster's background processes)."""
    rows = conn.execute(
        "SELECT pid, application_name = %s, backend_type <> 'client backend' FROM pg_stat_activity",
        (application,),
    ).fetchall()
    return {pid for pid, ours, _ in rows if ours}, {pid for pid, _, bg in rows if bg}


def other_clients(conn: psycopg.Connection[Any], application: str) -> int:
    """Client backends of anyone but this round's workers and this connection."""
    row = conn.execute(
        "SELECT COUNT(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
        " AND application_name IS DISTINCT FROM %s AND pid <> pg_backend_pid()",
        (application,),
    ).fetchone()
    return int(row[0]) if row else 0


def server_counters(conn: psycopg.Connection[Any], application: str) -> tuple[int, int, int]:
    """(WAL fsyncs, WAL bytes, commits in this database) since the last stats reset.

    Backends publish their counters up to a second late, but at once when they exit;
    so this is read only once the benchmark's other backends have gone.
    """
    deadline = time.perf_counter() + 10
    while time.perf_counter() < deadline:
        row = conn.execute(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = %s"
            " AND pid <> pg_backend_pid()",
            (application,),
        ).fetchone()
        if row is not None and row[0] == 0:
            break
        time.sleep(0.05)
    row = conn.execute(
        "SELECT wal_sync, wal_bytes, (SELECT xact_commit FROM pg_stat_database"
        " WHERE datname = current_database()) FROM pg_stat_wal"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


class CpuSample:
    """CPU ticks of the worker processes, of the backends serving them, of the cluster's
    background processes and of the whole machine, at one moment."""

    def __init__(self, workers: list[int], conn: psycopg.Connection[Any], application: str) -> None:
        self.at = time.perf_counter()
        self.workers = {pid: cpu_ticks(pid) or 0 for pid in workers}
        backends, background = server_pids(conn, application)
        self.backends = _ticks(backends)
        self.background = _ticks(background)
        self.others = other_clients(conn, application)
        self.machine = machine_ticks()

    def since(self, before: CpuSample) -> dict[str, float]:
        busy, softirq, iowait, total = (
            a - b for a, b in zip(self.machine, before.machine, strict=True)
        )
        return {
            "worker_cpu": _delta(self.workers, before.workers),
            "postgres_cpu": _delta(self.backends, before.backends),
            "background_cpu": _delta(self.background, before.background),
            "machine_busy": busy / total,
            # mostly the loopback TCP traffic between workers and server
            "machine_softirq": softirq / total,
            "machine_iowait": iowait / total,
            "other_clients": max(self.others, before.others),
        }


def _ticks(pids: set[int]) -> dict[int, int]:
    return {pid: ticks for pid in pids if (ticks := cpu_ticks(pid)) is not None}


def _delta(now: dict[int, int], then: dict[int, int]) -> float:
    # A backend started after `then` (a worker's pool growing) counts from zero: its
    # start-up served the benchmark too.
    return sum(t - then.get(pid, 0) for pid, t in now.items()) / CLOCK_TICKS
