"""The App of the idempotent-start tests, and a process that starts runs of it on cue.

``python start_app.py WORKDIR INDEX ROUNDS`` builds nothing at first; it creates
``WORKDIR/ready-INDEX``, then for each round ``k`` waits for ``WORKDIR/go-k`` to appear,
calls ``app.start(greet, "x", run_id="same-id")`` on ``WORKDIR/runs-k.db`` with a new
App (whose first use of the database opens it, and migrates it if it is new), prints
``"k same-id"`` (or ``"k error TYPE: MESSAGE"``) and creates ``WORKDIR/done-k-INDEX``.
Several of these processes released together by one ``go-k`` race on the run's
creation, and on the schema migration too when ``runs-k.db`` does not exist yet.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from surestep import App, current_step

RUN_ID = "same-id"


def append(path: Path, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


def build(db_path: str | Path, side_effect: str | Path) -> App:
    """An App with the workflows ``greet`` and ``farewell`` on the SQLite file ``db_path``."""
    app = App(f"sqlite:///{db_path}")
    side_effect = Path(side_effect)

    @app.step(name="send_greeting")
    def send_greeting(name: str) -> str:
        append(side_effect, f"step {current_step().idempotency_key}")
        return f"hello {name}"

    @app.workflow(name="greet")
    def greet(name: str) -> str:
        # Outside any step on purpose: this line counts executions of the body itself.
        append(side_effect, f"body {name}")
        return send_greeting(name)

    @app.workflow(name="farewell")
    def farewell(name: str) -> str:
        return f"goodbye {name}"

    return app


def wait_for(path: Path) -> None:
    # A short poll, so the processes waiting on one file are released within a
    # millisecond or so of each other.
    while not path.exists():
        time.sleep(0.0005)


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(f"usage: {argv[0]} WORKDIR INDEX ROUNDS", file=sys.stderr)
        return 2
    workdir, index, rounds = Path(argv[1]), int(argv[2]), int(argv[3])
    (workdir / f"ready-{index}").touch()
    for k in range(rounds):
        app = build(workdir / f"runs-{k}.db", workdir / "side-effect.log")
        wait_for(workdir / f"go-{k}")
        try:
            handle = app.start("greet", "x", run_id=RUN_ID)
        except Exception as exc:
            print(f"{k} error {type(exc).__name__}: {exc}", flush=True)
        else:
            print(f"{k} {handle.id}", flush=True)
        finally:
            app.close()
        (workdir / f"done-{k}-{index}").touch()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
