"""The rate ledger is one budget for every process on a database: real processes reserve
against one SQLite file, then one PostgreSQL schema, and together get exactly rpm."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from surestep.llm.limits import RateLedger
from surestep.storage import open_store

RESERVER = Path(__file__).with_name("rate_reserver.py")
REPO = Path(__file__).parents[2]
PROCESSES = 2
START, TOKENS = 1_700_000_000.0, 10  # as in rate_reserver.py


def race(
    url: str, workdir: Path, keys: int, each: int, rpm: int
) -> tuple[Counter[str], list[float]]:
    """Run PROCESSES reservers on ``url``, released together; return what they were told
    in all: the requests admitted per key, and the seconds to wait of each one refused."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for n in range(PROCESSES):
            argv = [
                sys.executable,
                str(RESERVER),
                url,
                str(workdir),
                str(n),
                str(keys),
                str(each),
                str(rpm),
            ]
            with (workdir / f"out-{n}").open("wb") as out, (workdir / f"err-{n}").open("wb") as err:
                procs.append(
                    subprocess.Popen(
                        argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env
                    )
                )
        deadline = time.monotonic() + 60
        while not all((workdir / f"ready-{n}").exists() for n in range(PROCESSES)):
            for n, proc in enumerate(procs):
                if proc.poll() is not None and not (workdir / f"ready-{n}").exists():
                    pytest.fail(f"reserver {n} exited early:\n{(workdir / f'err-{n}').read_text()}")
            assert time.monotonic() < deadline, "the reservers were not ready within 60 s"
            time.sleep(0.002)
        (workdir / "go").touch()
        admitted: Counter[str] = Counter()
        waits: list[float] = []
        for n, proc in enumerate(procs):
            status = proc.wait(timeout=90)
            errors = (workdir / f"err-{n}").read_text()
            assert status == 0 and errors == "", f"reserver {n} exited {status}:\n{errors}"
            told = json.loads((workdir / f"out-{n}").read_text())
            admitted.update({key: int(count) for key, count in told["admitted"].items()})
            waits += [float(seconds) for seconds in told["waits"]]
        return admitted, waits
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


@pytest.mark.slow
def test_two_processes_share_one_window_and_get_exactly_rpm(db_url: str, tmp_path: Path) -> None:
    store = open_store(db_url)  # created and migrated before the race
    try:
        admitted, waits = race(db_url, tmp_path, keys=1, each=100, rpm=120)
        assert admitted == {"model-0": 120}
        assert len(waits) == 2 * 100 - 120
        assert all(seconds > 0 for seconds in waits)
        # The database agrees with what the processes were told.
        assert RateLedger(store).usage("model-0", START + 1) == (120, 120 * TOKENS)
    finally:
        store.close()


@pytest.mark.slow
def test_two_processes_filling_many_small_windows_never_overshoot(
    db_url: str, tmp_path: Path
) -> None:
    # Each key's last free place is raced for: without the per-key serialization two
    # processes that both read "one place left" would both take it, somewhere among 60.
    store = open_store(db_url)
    try:
        admitted, waits = race(db_url, tmp_path, keys=60, each=3, rpm=4)
        assert admitted == {f"model-{k}": 4 for k in range(60)}
        assert len(waits) == 60 * (2 * 3 - 4)
        assert all(seconds > 0 for seconds in waits)
    finally:
        store.close()
