"""A process that opens an App and starts one run on cue, for the migration race.

``python pg_start_app.py WORKDIR INDEX`` reads one database URL per line from
``WORKDIR/urls`` (one per round), creates ``WORKDIR/ready-INDEX``, then for each round
``k``: builds an App on URL ``k`` (which touches no database yet), waits for
``WORKDIR/go-k`` to appear, calls ``app.start("greet", "x", run_id="same-id")`` (whose
first use of the database opens it, and migrates it when the schema is empty), prints
``"k same-id"`` or ``"k error TYPE: MESSAGE"``, and creates ``WORKDIR/done-k-INDEX``.
Several of these released by one ``go-k`` race on the schema's migration and on the run's
creation.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

RUN_ID = "same-id"


def _load_pg_app() -> ModuleType:
    path = Path(__file__).with_name("pg_app.py")
    spec = importlib.util.spec_from_file_location("surestep_pg_app", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    pg_app = _load_pg_app()
    (workdir / f"ready-{index}").touch()
    for k, url in enumerate(urls):
        app = pg_app.build(url, workdir)
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
