"""W workflows of K no-op steps on PostgreSQL, with 1, 2 and 4 worker processes:
throughput, per-step latency, commit cost, and how CPU splits between workers and server.

    python benchmarks/engine_postgres.py [--url postgresql://postgres@127.0.0.1:5432/test]
                                         [--workflows 1000] [--steps 10] [--rounds 3]
                                         [--processes 1,2,4] [--concurrency 8]
                                         [--metrics] [--tracing]

For each process count the W runs are started from this process into a fresh schema
(``bench_<n>``, dropped afterwards); then N worker processes (this script with
``--worker``) are launched and the clock starts once all of them have opened the
database, so interpreter start-up is not counted. The clock stops when the last run has
succeeded (polled every 50 ms). CPU is read from /proc before and after: the worker
processes, and the PostgreSQL processes (the backends serving this benchmark plus the
server's background processes; other clients' backends are left out), so the server
must run on this machine. With ``--metrics`` and/or ``--tracing`` it measures instead
what they add per step, with one worker process: rounds with them off, with per-process
metrics (``WorkerMetrics``) and with tracing through the OpenTelemetry SDK (every span
made and ended, exported nowhere). Rounds are interleaved across process counts and the median
round (by wall time) is printed whole. The machine is shared and noisy, so compare
ratios from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from workload import add_noop_workflow  # benchmarks/workload.py

from surestep import App

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
APP_NAME = "surestep-bench"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1


def make_app(url: str) -> App:
    app = App(url)
    add_noop_workflow(app)
    return app


def schema_url(url: str, schema: str) -> str:
    options = quote(f"-csearch_path={schema}")
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={options}&application_name={APP_NAME}"


# -- the worker process -------------------------------------------------------------


def worker_main(url: str, concurrency: int, out: Path, observe: str = "off") -> None:
    """Open the App, say ready, wait for go, work until SIGTERM, write latencies.
    ``observe``: ``metrics`` (WorkerMetrics subscribed) or ``tracing`` (the OpenTelemetry
    SDK recording every span, exported to nowhere)."""
    app = make_app(url)
    if observe == "metrics":
        from surestep.observe.metrics import WorkerMetrics

        app.hooks.subscribe(WorkerMetrics())
    elif observe == "tracing":
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )

        class Dropping(InMemorySpanExporter):
            def export(self, spans: Any) -> Any:  # record nothing: a no-op exporter
                return super().export([])

        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(Dropping()))
        app.trace(provider)
    latencies: list[float] = []
    began: dict[str, float] = {}

    @app.hook("before_step")
    def before(step: Any) -> None:
        began[step.idempotency_key] = time.perf_counter()

    @app.hook("after_step")
    def after(step: Any, state: Any, seconds: float) -> None:
        # from the step call to its checkpoint committed
        latencies.append(time.perf_counter() - began.pop(step.idempotency_key))

    app.store  # noqa: B018 - connect and check the schema before saying ready
    print("ready", flush=True)
    sys.stdin.readline()
    app.worker(concurrency=concurrency, poll_interval=0.05).run()
    out.write_text(json.dumps(latencies))
    app.close()


# -- CPU accounting -----------------------------------------------------------------


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of a process, in clock ticks; None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])


def postgres_pids() -> list[int]:
    uid = pwd.getpwnam("postgres").pw_uid
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def machine_ticks() -> tuple[int, int, int, int]:
    """(busy, softirq, iowait, total) clock ticks over all CPUs since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = values[:8]
    busy = user + nice + system + irq + softirq + steal
    return busy, softirq, iowait, busy + idle + iowait


def foreign_backends(conn: psycopg.Connection[Any]) -> set[int]:
    """Backends of other clients (other engineers' tests), to leave out of the sum."""
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend'"
        " AND application_name IS DISTINCT FROM %s",
        (APP_NAME,),
    ).fetchall()
    return {row[0] for row in rows}


def server_counters(conn: psycopg.Connection[Any]) -> tuple[int, int, int]:
    """(WAL fsyncs, WAL bytes, commits in this database) since the last stats reset.

    Backends publish their counters up to a second late, but at once when they exit;
    so this is read only once the benchmark's other backends have gone.
    """
    deadline = time.perf_counter() + 10
    while time.perf_counter() < deadline:
        row = conn.execute(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = %s"
            " AND pid <> pg_backend_pid()",
            (APP_NAME,),
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
    def __init__(self, workers: list[int], conn: psycopg.Connection[Any]) -> None:
        self.at = time.perf_counter()
        self.workers = {pid: cpu_ticks(pid) or 0 for pid in workers}
        foreign = foreign_backends(conn)
        self.others = len(foreign)
        self.postgres = {
            pid: ticks
            for pid in postgres_pids()
            if pid not in foreign and (ticks := cpu_ticks(pid)) is not None
        }
        self.machine = machine_ticks()

    def since(self, before: CpuSample) -> dict[str, float]:
        def delta(now: dict[int, int], then: dict[int, int]) -> float:
            # A backend started after `before` (a worker's connection) counts from zero.
            return sum(t - then.get(pid, 0) for pid, t in now.items()) / CLOCK_TICKS

        busy, softirq, iowait, total = (
            a - b for a, b in zip(self.machine, before.machine, strict=True)
        )
        return {
            "worker_cpu": delta(self.workers, before.workers),
            "postgres_cpu": delta(self.postgres, before.postgres),
            "machine_busy": busy / total,
            # mostly the loopback TCP traffic between workers and server
            "machine_softirq": softirq / total,
            "machine_iowait": iowait / total,
            "other_clients": max(self.others, before.others),
        }


# -- one round ----------------------------------------------------------------------


def fsync_cost(url: str, n: int = 500) -> float | None:
    """Median seconds of one 8 KiB write + fdatasync on the filesystem of the server's WAL,
    or None when that directory is not readable from here."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW data_directory").fetchone()
    wal = Path(str(row[0]) if row else "/nonexistent", "pg_wal")
    try:
        # Next to the WAL directory, not in it: same filesystem, no file of the server's.
        folder = wal.resolve(strict=True).parent.parent
        handle, name = tempfile.mkstemp(dir=folder, prefix="surestep-fsync-")
    except OSError:
        return None
    times = []
    try:
        for _ in range(n):
            os.pwrite(handle, b"x" * 8192, 0)
            t0 = time.perf_counter()
            os.fdatasync(handle)
            times.append(time.perf_counter() - t0)
    finally:
        os.close(handle)
        os.unlink(name)
    return statistics.median(times)


def raw_commit_cost(url: str, n: int = 2000) -> float:
    """Median seconds of one INSERT+COMMIT on one psycopg connection."""
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE raw (id BIGSERIAL PRIMARY KEY, v TEXT)")
        conn.commit()
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            conn.execute("INSERT INTO raw (v) VALUES (%s)", ("x" * 32,))
            conn.commit()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def launch_workers(
    url: str, n: int, concurrency: int, folder: Path, observe: str = "off"
) -> list[subprocess.Popen[str]]:
    command = [sys.executable, __file__, "--worker", "--observe", observe, "--url", url]
    command.append("--concurrency")
    procs = [
        subprocess.Popen(
            [*command, str(concurrency), "--out", str(folder / f"lat{i}.json")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
    ]
    for proc in procs:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            stop_workers(procs)
            raise SystemExit(f"worker {proc.pid} did not start; see its error above")
    return procs


def wait_for(conn: psycopg.Connection[Any], workflows: int, timeout: float) -> None:
    deadline = time.perf_counter() + timeout
    while True:
        row = conn.execute("SELECT COUNT(*) FROM surestep_runs WHERE state = 'success'").fetchone()
        done = row[0] if row else 0
        if done >= workflows:
            return
        if time.perf_counter() > deadline:
            raise SystemExit(f"only {done} of {workflows} runs succeeded within {timeout:.0f} s")
        time.sleep(0.05)


def stop_workers(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def measure(
    args: argparse.Namespace, url: str, n: int, folder: Path, observe: str = "off"
) -> dict[str, Any]:
    """Start the runs, launch the workers, time them, and read the counters around it."""
    app = make_app(url)
    for _ in range(args.workflows):
        app.start("bench", args.steps)
    app.close()
    with psycopg.connect(url, autocommit=True) as conn:
        server0 = server_counters(conn)
        launched = time.perf_counter()
        procs = launch_workers(url, n, args.concurrency, folder, observe)
        ready = time.perf_counter() - launched
        try:
            cpu0 = CpuSample([p.pid for p in procs], conn)
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            wait_for(conn, args.workflows, timeout=300)
            cpu1 = CpuSample([p.pid for p in procs], conn)
        finally:
            stop_workers(procs)
        server1 = server_counters(conn)
    files = [folder / f"lat{i}.json" for i in range(n)]
    latencies = sorted(x for f in files for x in json.loads(f.read_text()))
    fsyncs, wal_bytes, commits = (b - a for a, b in zip(server0, server1, strict=True))
    return {
        "elapsed": cpu1.at - cpu0.at,
        "startup": ready,
        "p50": latencies[len(latencies) // 2],
        "p95": latencies[int(len(latencies) * 0.95)],
        "raw": raw_commit_cost(url),
        "fsyncs": fsyncs,
        "wal_bytes": wal_bytes,
        "commits": commits,
        **cpu1.since(cpu0),
    }


def one_round(
    args: argparse.Namespace, n: int, folder: Path, observe: str = "off"
) -> dict[str, Any]:
    """One measurement with ``n`` worker processes, in a schema of its own."""
    schema = f"bench_{n}"
    with psycopg.connect(args.url, autocommit=True) as admin:
        admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.execute(f"CREATE SCHEMA {schema}")
    try:
        return measure(args, schema_url(args.url, schema), n, folder, observe)
    finally:
        with psycopg.connect(args.url, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


# -- report -------------------------------------------------------------------------


def bottleneck(m: dict[str, Any], n: int, fsync: float | None) -> str:
    """Which of CPU, WAL flushes and one worker's GIL limits this measurement."""
    per_process = m["worker_cpu"] / (n * m["elapsed"])
    flushing = None if fsync is None else m["fsyncs"] * fsync / m["elapsed"]
    limits = [
        f"CPU {m['machine_busy']:.0%} of {CORES} cores",
        f"one worker process {per_process:.2f} core",
        "WAL flush n/a" if flushing is None else f"WAL fdatasync ~{flushing:.0%} of wall",
    ]
    if m["machine_busy"] >= 0.8:
        side = "postgres" if m["postgres_cpu"] > m["worker_cpu"] else "the workers"
        verdict = f"CPU (most of it {side}); more processes cannot help on this machine"
    elif per_process >= 0.8:
        verdict = "the worker process (one GIL); more processes help while cores are free"
    elif flushing is not None and flushing >= 0.7:
        verdict = "WAL flushes (fsync)"
    else:
        verdict = "nothing saturated: round trips x concurrency"
    return f"{verdict} [{', '.join(limits)}]"


def report_one(args: argparse.Namespace, n: int, m: dict[str, Any]) -> None:
    total = args.workflows * args.steps
    rate = total / m["elapsed"]
    cap = CORES * m["elapsed"]
    softirq = m["machine_softirq"]
    other = max(0.0, m["machine_busy"] - softirq - (m["worker_cpu"] + m["postgres_cpu"]) / cap)
    print(f"-- {n} worker process{'es' if n > 1 else ''}")
    print(
        f"steps/s               {rate:,.0f} ({m['elapsed']:.2f} s wall; rounds "
        f"{', '.join(f'{total / e:,.0f}' for e in m['rounds'])}); the workers took "
        f"{m['startup']:.2f} s to start, before the clock"
    )
    print(
        f"per-step overhead     {m['elapsed'] / total * 1e3:.3f} ms (wall per step, whole "
        f"system; includes each run's claim and finish)"
    )
    print(
        f"step latency          p50 {m['p50'] * 1e3:.3f} ms, p95 {m['p95'] * 1e3:.3f} ms "
        f"(inside a worker: step call to checkpoint committed)"
    )
    print(f"raw INSERT+COMMIT     {m['raw'] * 1e3:.3f} ms (same server, one connection)")
    if args.fsync is not None:
        print(f"raw fdatasync         {args.fsync * 1e3:.3f} ms (8 KiB, the WAL's filesystem)")
    print(
        f"CPU                   workers {m['worker_cpu']:.2f} s = {m['worker_cpu'] / cap:.0%}"
        f" of {CORES} cores x wall, postgres {m['postgres_cpu']:.2f} s = "
        f"{m['postgres_cpu'] / cap:.0%}, network softirq {softirq:.0%}, other processes "
        f"{other:.0%} ({m['other_clients']:.0f} other clients connected); iowait "
        f"{m['machine_iowait']:.0%}"
    )
    print(
        f"CPU per step          workers {m['worker_cpu'] / total * 1e6:.0f} us, postgres "
        f"{m['postgres_cpu'] / total * 1e6:.0f} us"
    )
    print(
        f"commits, WAL          {m['commits'] / total:.2f} commits/step, "
        f"{m['fsyncs'] / total:.2f} WAL fsyncs/step ({m['fsyncs'] / m['elapsed']:,.0f}/s), "
        f"{m['wal_bytes'] / total / 1024:.1f} KiB WAL/step (server-wide; read-only commits count)"
    )
    print(f"bottleneck            {bottleneck(m, n, args.fsync)}")


def report(args: argparse.Namespace, results: dict[int, dict[str, Any]]) -> None:
    total = args.workflows * args.steps
    print(
        f"workload              {args.workflows} workflows x {args.steps} no-op steps, "
        f"PostgreSQL {args.server} (fsync on, synchronous_commit {args.sync_commit}), "
        f"median of {args.rounds} rounds"
    )
    print(
        f"workers               N processes x concurrency {args.concurrency} (threads per "
        f"process; pool_size 8, the default), {CORES} cores shared with the server"
    )
    for n, m in results.items():
        report_one(args, n, m)
    print("--")
    rates = {n: total / m["elapsed"] for n, m in results.items()}
    counts = sorted(rates)
    first, last = counts[0], counts[-1]
    grows = rates[last] > rates[first] * 1.1
    print(
        f"scaling               steps/s by processes "
        f"{', '.join(f'{n}: {rates[n]:,.0f}' for n in counts)}; "
        f"{'grows' if grows else 'does not grow'} from {first} to {last} "
        f"({rates[last] / rates[first]:.2f}x)"
    )
    # CPU per step, the loopback network's softirq included: what 2 cores can carry.
    per_step = {
        n: (m["worker_cpu"] + m["postgres_cpu"]) / total
        + m["machine_softirq"] * CORES * m["elapsed"] / total
        for n, m in results.items()
    }
    print(
        f"CPU ceiling           {CORES} cores / CPU per step = "
        f"{', '.join(f'{n}: {CORES / per_step[n]:,.0f}' for n in counts)} steps/s "
        f"({', '.join(f'{per_step[n] * 1e6:.0f}' for n in counts)} us of CPU per step)"
    )
    print(
        "peers                 benchmarks/peers.py measures DBOS Transact and LangGraph on "
        "this workload in the same run (docs/performance.md, Peers)"
    )


def server_settings(url: str) -> tuple[str, str]:
    with psycopg.connect(url) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        sync = conn.execute("SHOW synchronous_commit").fetchone()
    assert version is not None and sync is not None
    return str(version[0]).split()[0], str(sync[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--workflows", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--metrics", action="store_true", help="also measure with metrics on")
    parser.add_argument("--tracing", action="store_true", help="also measure with tracing on")
    parser.add_argument("--observe", default="off", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args.url, args.concurrency, args.out, args.observe)
        return
    if args.metrics or args.tracing:
        observe_cost(args)
        return
    args.server, args.sync_commit = server_settings(args.url)
    args.fsync = fsync_cost(args.url)
    counts = [int(p) for p in args.processes.split(",")]
    rounds: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
    with tempfile.TemporaryDirectory() as tmp:
        # Interleaved, so that a noisy minute on the shared machine hurts every count.
        for _ in range(args.rounds):
            for n in counts:
                try:
                    rounds[n].append(one_round(args, n, Path(tmp)))
                except psycopg.OperationalError as exc:
                    raise SystemExit(
                        f"the PostgreSQL connection failed mid-measurement ({exc}); is "
                        f"something restarting the server? Run again when it is quiet"
                    ) from None
    # The median round by wall time, whole, so that its CPU shares add up.
    results = {}
    for n, rs in rounds.items():
        rs.sort(key=lambda r: r["elapsed"])
        results[n] = {**rs[len(rs) // 2], "rounds": [r["elapsed"] for r in rs]}
    report(args, results)


def observe_cost(args: argparse.Namespace) -> None:
    """Per-step cost of metrics and tracing: one worker process, rounds interleaved."""
    modes = ["off", *(["metrics"] if args.metrics else []), *(["tracing"] if args.tracing else [])]
    elapsed: dict[str, list[float]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for mode in modes:
                result = one_round(args, 1, Path(tmp), mode)
                elapsed[mode].append(result["elapsed"])
    steps = args.workflows * args.steps
    base = statistics.median(elapsed["off"]) / steps
    print(f"1 worker process x {args.concurrency}, {steps} steps, medians of {args.rounds}:")
    print(f"  off       {base * 1e6:7.1f} us a step")
    for mode in modes[1:]:
        per = statistics.median(elapsed[mode]) / steps
        print(f"  {mode:9} {per * 1e6:7.1f} us a step: {per / base - 1:+.1%}")


if __name__ == "__main__":
    main()
