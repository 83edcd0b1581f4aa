"""surestep demo: a worker is SIGKILLed mid-batch and the next one resumes at the next
step; a step that keeps failing lands in the dead-letter queue and is redriven.

    make demo          (or: python examples/demo.py)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SURESTEP = [sys.executable, "-m", "surestep.cli"]


def surestep_command() -> str:
    """How to call `surestep` from here, as typed: the console script of this interpreter's
    environment (`.venv/bin/surestep` after `make demo`), which need not be on the PATH."""
    script = Path(sys.executable).parent / "surestep"
    if not script.exists():
        return f"{sys.executable} -m surestep.cli"
    relative = os.path.relpath(script)
    return relative if os.sep in relative else f"./{relative}"


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*SURESTEP, "worker", "examples.summarize:app", "--concurrency", "4"],
        cwd=ROOT,
        env=env,
        stderr=subprocess.DEVNULL,
    )


def cli(env: dict[str, str], *args: str) -> None:
    subprocess.run([*SURESTEP, *args], cwd=ROOT, env=env, check=True)


def wait_until(done: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(0.05)


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="surestep-demo-"))
    env = dict(os.environ)
    env.update(
        SURESTEP_DATABASE_URL=f"sqlite:///{tmp / 'demo.db'}",
        DEMO_LOG=str(tmp / "side-effects.log"),
        DEMO_OUTAGE=str(tmp / "index-down"),
    )
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    from examples.summarize import app, summarize

    (tmp / "index-down").touch()
    say(f"Starting 24 runs in {tmp / 'demo.db'} (doc-07's search shard is down)")
    docs = [f"doc-{i:02d}" for i in range(24)]
    for doc in docs:
        app.start(summarize, doc, run_id=doc)

    say("Worker 1 starts ... and is killed with SIGKILL mid-batch")
    first = worker(env)
    wait_until(lambda: sum(len(app.get_run(d).steps) for d in docs) >= 12)
    first.send_signal(signal.SIGKILL)
    first.wait()
    states = Counter(r.state.value for r in app.list_runs(limit=100))
    done_steps = sum(len(app.get_run(d).steps) for d in docs)
    print(f"killed. runs by state: {dict(states)}; steps checkpointed so far: {done_steps}")

    say("Worker 2 starts: it takes over the dead worker's runs at once")
    second = worker(env)
    wait_until(lambda: all(app.get_run(d).state.value in ("success", "dead_letter") for d in docs))
    cli(env, "runs")

    lines = (tmp / "side-effects.log").read_text().split()
    executed = Counter(zip(lines[0::2], lines[1::2], strict=True))
    again = {key: n for key, n in executed.items() if n > 1 and key[1] != "publish"}
    print(
        f"\nsteps executed: {sum(executed.values())}; re-executed because the kill "
        f"interrupted them: {sorted(k for k, _ in again) or 'none'}"
    )
    print(
        "every other step ran exactly once: completed steps were replayed from "
        "their checkpoints, not run again."
    )

    say("doc-07 exhausted its retries and is in the dead-letter queue")
    cli(env, "dlq")

    say("The shard is back; an operator redrives doc-07 from the CLI")
    (tmp / "index-down").unlink()
    cli(env, "retry", "doc-07")
    wait_until(lambda: app.get_run("doc-07").state.value == "success")
    cli(env, "show", "doc-07")

    second.send_signal(signal.SIGTERM)
    second.wait(timeout=30)
    db, command = env["SURESTEP_DATABASE_URL"], surestep_command()
    print(
        f"\nworker 2 shut down gracefully (exit {second.returncode}). In the web console:\n"
        f"  {command} users add me --role operator --db {db}   # a token to sign in with\n"
        f"  {command} serve --db {db}   # then open http://localhost:8080/console/\n"
        f"Or explore with:\n"
        f"  {command} runs --db {db}"
    )
    app.close()


if __name__ == "__main__":
    main()
