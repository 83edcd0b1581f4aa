"""The App of the idempotent-start tests, and a process that starts one run on cue.

``python start_app.py WORKDIR INDEX`` reads one database URL per line from
``WORKDIR/urls`` (one per round) and creates ``WORKDIR/ready-INDEX``. Then for each
round ``k`` it builds an App on URL ``k`` (which touches no database yet), waits for
``WORKDIR/go-k``, calls ``app.start("greet", "x", run_id="same-id")`` (whose first use
of the database opens it, and migrates it when it is new), prints ``"k same-id"`` or
``"k error TYPE: MESSAGE"``, and creates ``WORKDIR/done-k-INDEX``. Several of these
released by one ``go-k`` race on the run's creation, and on the migration of a new
database. SQLite files and PostgreSQL schemas alike (``processes.race_starts``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import sideeffects  # tests/integration/sideeffects.py

from surestep import App, current_step

RUN_ID = "same-id"


def build(url: str, side_effect: str | Path) -> App:
    """An App with the workflows ``greet`` and ``farewell`` on the database ``url``."""
    app = App(url)
    side_effect = Path(side_effect)

    @app.step(name="send_greeting")
    def send_greeting(name: str) -> str:
        sideeffects.append(side_effect, f"step {current_step().idempotency_key}")
        return f"hello {name}"

    @app.workflow(name="greet")
    def greet(name: str) -> str:
        # Outside any step on purpose: this line counts executions of the body itself.
        sideeffects.append(side_effect, f"body {name}")
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
    if len(argv) != 3:
        print(f"usage: {argv[0]} WORKDIR INDEX", file=sys.stderr)
        return 2
    workdir, index = Path(argv[1]), int(argv[2])
    urls = (workdir / "urls").read_text().splitlines()
    (workdir / f"ready-{index}").touch()
    for k, url in enumerate(urls):
        app = build(url, workdir / "side-effect.log")
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
