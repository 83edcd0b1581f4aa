"""A process that decides review tasks on cue, racing another one.

``python review_decider.py URL WORKDIR NAME OUTCOME RIVAL`` reads task ids (one a line)
from ``WORKDIR/tasks`` and opens the database (an App with no workflows: deciding needs
none of the workflow's code). Then, task by task, it meets process ``RIVAL`` at a barrier
(each creates ``WORKDIR/at-K-NAME`` and waits for the other's), so that both decide task
``K`` at the same moment, not one racing ahead of the other down the list. It decides
with ``OUTCOME`` as reviewer ``NAME`` and prints, per task, ``"TASK won"`` or
``"TASK conflict REASON"``; any other error fails it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from surestep import App, ReviewConflictError


def _meet(path: Path) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"{path.name} did not appear within 60 s: the rival is gone")
        time.sleep(0.0002)


def main(argv: list[str]) -> int:
    if len(argv) != 6:
        print(f"usage: {argv[0]} URL WORKDIR NAME OUTCOME RIVAL", file=sys.stderr)
        return 2
    url, workdir, name, outcome, rival = argv[1], Path(argv[2]), argv[3], argv[4], argv[5]
    tasks = [int(line) for line in (workdir / "tasks").read_text().split()]
    app = App(url, actor=name)
    try:
        app.store  # noqa: B018 -- open (and connect) before the race, not during it
        for k, task_id in enumerate(tasks):
            (workdir / f"at-{k}-{name}").touch()
            _meet(workdir / f"at-{k}-{rival}")
            try:
                app.reviews.decide(task_id, outcome, by=name)
            except ReviewConflictError as exc:
                print(f"{task_id} conflict {exc.reason}", flush=True)
            else:
                print(f"{task_id} won", flush=True)
    finally:
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
