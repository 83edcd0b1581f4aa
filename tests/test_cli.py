"""The ``surestep`` command against a real SQLite file: runs are made with the library."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

import surestep
from surestep import App, FakeClock, Retry, State
from surestep.cli import app as cli
from surestep.states import SETTLED
from surestep.storage.migrations import load as load_migrations
from surestep.testing import drive, run_workflow

START = 1_700_000_000.0  # the start of the conftest clock


@dataclass
class Project:
    """An App with a run in each interesting state: ok-1, dl-1 and pending-1."""

    app: App
    url: str
    api_down: dict[str, bool]


@pytest.fixture
def project(app: App, db_url: str) -> Project:
    """Runs made with the library on ``app`` (conftest: a FakeClock at START)."""
    api_down = {"yes": True}

    @app.step("shout")
    def shout(name: str) -> str:
        return name.upper()

    @app.step("call_api", retry=Retry(max_attempts=2, initial_delay=1, jitter=False))
    def call_api(x: int) -> int:
        if api_down["yes"]:
            raise ConnectionError("api is down")
        return x * 2

    @app.workflow()
    def greet(name: str) -> str:
        return f"hello {shout(name)}"

    @app.workflow()
    def fragile(x: int) -> int:
        return call_api(x) + 1

    run_workflow(app, greet, "ada", run_id="ok-1")
    run_workflow(app, fragile, 20, run_id="dl-1")
    app.start(greet, "bob", run_id="pending-1")
    return Project(app, db_url, api_down)


def invoke(*args: str, env: dict[str, str | None] | None = None) -> Result:
    # A wide terminal, so table cells are not folded and can be searched for.
    environment: dict[str, str | None] = {"COLUMNS": "200", "SURESTEP_DATABASE_URL": None}
    return CliRunner().invoke(cli, list(args), env={**environment, **(env or {})})


def local(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def assert_clean_error(result: Result, code: int, *fragments: str) -> None:
    """The command failed with ``error: ...`` on stderr, nothing on stdout, no traceback."""
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr


# -- runs ------------------------------------------------------------------------------


def test_runs_lists_every_run_as_a_table(project: Project) -> None:
    result = invoke("runs", "--db", project.url)

    assert result.exit_code == 0, result.output
    for expected in ("ok-1", "dl-1", "pending-1", "greet@1", "fragile@1"):
        assert expected in result.stdout
    for state in ("success", "dead_letter", "pending"):
        assert state in result.stdout
    assert "ConnectionError: api is down" in result.stdout
    assert local(START) in result.stdout


def test_runs_json_is_machine_readable_and_filters(project: Project) -> None:
    everything = invoke("runs", "--json", "--db", project.url)
    dead = invoke("runs", "--json", "--state", "dead_letter", "--db", project.url)
    greets = invoke("runs", "--json", "--workflow", "greet", "--db", project.url)
    one = invoke("runs", "--json", "--limit", "1", "--db", project.url)

    runs = json.loads(everything.stdout)
    assert {run["id"]: run["state"] for run in runs} == {
        "ok-1": "success",
        "dl-1": "dead_letter",
        "pending-1": "pending",
    }
    ok = next(run for run in runs if run["id"] == "ok-1")
    assert ok["output"] == "hello ADA"
    assert ok["inputs"] == {"name": "ada"}
    assert ok["created_at"] == START
    assert "steps" not in ok  # listings do not load steps, so they do not pretend to
    assert [run["id"] for run in json.loads(dead.stdout)] == ["dl-1"]
    assert {run["id"] for run in json.loads(greets.stdout)} == {"ok-1", "pending-1"}
    assert len(json.loads(one.stdout)) == 1


def test_runs_reads_the_database_url_from_the_environment(project: Project) -> None:
    result = invoke("runs", "--json", env={"SURESTEP_DATABASE_URL": project.url})

    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == 3


def test_runs_with_an_unknown_state_lists_the_valid_states(project: Project) -> None:
    result = invoke("runs", "--state", "bogus", "--db", project.url)

    assert result.exit_code == 2
    assert "bogus" in result.stderr
    for state in State:
        assert f"'{state.value}'" in result.stderr


def test_runs_on_an_empty_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/empty.db"
    assert invoke("migrate", "--db", url).exit_code == 0

    assert invoke("runs", "--db", url).stdout == "no runs\n"
    assert json.loads(invoke("runs", "--json", "--db", url).stdout) == []


@pytest.mark.parametrize(
    "command",
    [
        ["runs"],
        ["runs", "--json"],
        ["show", "r-1"],
        ["dlq"],
        ["retry", "r-1"],
        ["cancel", "r-1"],
        ["send", "r-1", "approved"],
        ["prune", "--older-than", "1d"],
    ],
)
def test_commands_on_a_missing_sqlite_file_create_nothing(
    tmp_path: Path, command: list[str]
) -> None:
    missing = tmp_path / "typo" / "dir" / "x.db"

    result = invoke(*command, "--db", f"sqlite:///{missing}")

    assert_clean_error(
        result,
        1,
        f"no surestep database at {missing}; start a run or run `surestep migrate`",
    )
    assert not (tmp_path / "typo").exists()


def test_a_database_password_is_never_printed(tmp_path: Path) -> None:
    result = invoke("runs", "--db", "sqlite://admin:hunter2@dbhost/x.db")

    assert_clean_error(result, 1, "error: ", "admin:***@dbhost")
    assert "hunter2" not in result.output


# -- show ------------------------------------------------------------------------------


def test_show_prints_the_run_its_steps_attempts_and_events(project: Project) -> None:
    result = invoke("show", "dl-1", "--db", project.url)

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "fragile" in out
    assert '{"x": 20}' in out
    assert "call_api" in out
    assert "ConnectionError: api is down" in out
    assert "started" in out and "claimed" in out  # event reasons
    assert "running → dead_letter" in out
    assert "2 failed attempt(s) have a traceback" in out
    assert "Traceback (most recent call last)" not in out


def test_show_with_tracebacks(project: Project) -> None:
    result = invoke("show", "dl-1", "--tracebacks", "--db", project.url)

    assert result.exit_code == 0, result.output
    assert result.stdout.count("Traceback (most recent call last)") == 2
    assert 'raise ConnectionError("api is down")' in result.stdout


def test_show_of_a_successful_run_shows_its_output(project: Project) -> None:
    result = invoke("show", "ok-1", "--db", project.url)

    assert result.exit_code == 0, result.output
    assert '"hello ADA"' in result.stdout
    assert "shout" in result.stdout


def test_show_json_has_steps_attempts_and_events(project: Project) -> None:
    result = invoke("show", "dl-1", "--json", "--db", project.url)

    run = json.loads(result.stdout)
    assert run["state"] == "dead_letter"
    [step] = run["steps"]
    assert step["name"] == "call_api"
    assert [a["state"] for a in step["attempt_records"]] == ["failed", "failed"]
    assert "ConnectionError" in step["attempt_records"][-1]["error"]["traceback"]
    assert run["events"][0]["to_state"] == "pending"
    assert run["events"][-1]["to_state"] == "dead_letter"


def test_show_of_an_unknown_run(project: Project) -> None:
    result = invoke("show", "nope", "--db", project.url)

    assert_clean_error(result, 1, "error: no run with id 'nope'", "surestep runs")


# -- dlq, retry, cancel ----------------------------------------------------------------


def test_dlq_lists_the_dead_lettered_runs(project: Project) -> None:
    table = invoke("dlq", "--db", project.url)
    listing = invoke("dlq", "--json", "--db", project.url)

    assert table.exit_code == 0, table.output
    assert "dl-1" in table.stdout
    assert "call_api" in table.stdout
    assert "ConnectionError: api is down" in table.stdout
    assert "ok-1" not in table.stdout
    [run] = json.loads(listing.stdout)
    assert run["id"] == "dl-1"
    assert run["dead_letter_step"]["name"] == "call_api"
    assert run["dead_letter_step"]["error"]["message"] == "api is down"


def test_retry_redrives_a_dead_lettered_run(project: Project) -> None:
    result = invoke("retry", "dl-1", "--db", project.url)

    assert result.exit_code == 0, result.output
    assert "call_api" in result.stdout
    handle = project.app.handle("dl-1")
    assert handle.state == State.PENDING
    redrive = project.app.get_run("dl-1").events[-1]
    assert redrive.actor.startswith("cli:")

    project.api_down["yes"] = False
    drive(project.app, until=lambda: handle.state in SETTLED, timeout=10)
    assert handle.result() == 41


def test_retry_of_a_run_that_is_not_dead_lettered(project: Project) -> None:
    result = invoke("retry", "ok-1", "--db", project.url)

    assert_clean_error(result, 1, "error: ", "not dead_letter", "surestep dlq")


def test_retry_many_ids_reports_each_and_exits_1_if_any_failed(project: Project) -> None:
    result = invoke("retry", "dl-1", "ok-1", "--db", project.url)

    assert result.exit_code == 1, result.output
    assert "run dl-1 is pending again; redriven step(s): call_api" in result.stdout
    assert "run ok-1: not redriven: run 'ok-1' is success, not dead_letter" in result.stdout
    assert "redrove 1 of 2 run(s); 1 could not be redriven" in result.stderr
    assert project.app.handle("dl-1").state == State.PENDING


def test_retry_dead_letters_dry_run_then_for_real(project: Project) -> None:
    dry = invoke("retry", "--dead-letters", "--error", "ConnectionError", "--dry-run",
                 "--db", project.url)  # fmt: skip
    none = invoke("retry", "--dead-letters", "--workflow", "greet", "--db", project.url)
    recent = invoke("retry", "--dead-letters", "--since", "1h", "--db", project.url)
    real = invoke("retry", "--dead-letters", "--since", "2020-01-01", "--db", project.url)

    assert dry.exit_code == 0, dry.output
    assert "run dl-1: would be redriven; step(s): call_api" in dry.stdout
    assert "would redrive 1 of 1 run(s)" in dry.stderr
    assert none.exit_code == 0 and "redrove 0 of 0 run(s)" in none.stderr
    assert recent.exit_code == 0 and recent.stdout == ""  # dead-lettered at the fake START
    assert real.exit_code == 0, real.output
    assert "run dl-1 is pending again" in real.stdout
    assert project.app.handle("dl-1").state == State.PENDING


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ([], "give RUN_ID ... or --dead-letters"),
        (["dl-1", "--dead-letters"], "give RUN_ID ... or --dead-letters"),
        (["dl-1", "--workflow", "greet"], "narrow --dead-letters"),
        (["--dead-letters", "--since", "yesterday"], "--since 'yesterday'"),
    ],
)
def test_retry_usage_errors(project: Project, args: list[str], fragment: str) -> None:
    result = invoke("retry", *args, "--db", project.url)

    assert_clean_error(result, 2, fragment)


def test_cancel_a_pending_run(project: Project) -> None:
    result = invoke("cancel", "pending-1", "--reason", "duplicate", "--db", project.url)

    assert result.exit_code == 0, result.output
    run = project.app.get_run("pending-1")
    assert run.state == State.CANCELLED
    assert run.events[-1].reason == "duplicate"
    assert run.events[-1].actor.startswith("cli:")


def test_cancel_a_finished_run(project: Project) -> None:
    result = invoke("cancel", "ok-1", "--db", project.url)

    assert_clean_error(result, 1, "error: ", "already finished")
    assert project.app.handle("ok-1").state == State.SUCCESS


# -- migrate ---------------------------------------------------------------------------


def test_migrate_creates_the_schema_and_prints_its_version(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/fresh.db"

    result = invoke("migrate", "--db", url)

    assert result.exit_code == 0, result.output
    latest = load_migrations("sqlite")[-1].version
    assert result.stdout.strip().endswith(f"schema version {latest}")
    assert (tmp_path / "fresh.db").exists()


# -- worker ----------------------------------------------------------------------------


@pytest.fixture
def project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The cwd, as for `surestep worker`; sys.path and sys.modules are restored."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield tmp_path
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


@pytest.mark.parametrize(
    ("target", "fragment"),
    [
        ("no_such_module_here:app", "cannot import module 'no_such_module_here'"),
        ("surestep:no_app", "has no attribute 'no_app'"),
        ("surestep:State", "not a surestep.App"),
        ("surestep", "is not MODULE:APP"),
        ("needs_missing_dep:app", "install the missing package"),
        ("good.py:app", "'good.py:app' names a file; name the module instead: drop `.py`"),
        ("good.py:app", "(use `good:app`)"),
        ("jobs/good.py:app", "(use `jobs.good:app`)"),
        ("good.py", "(use `good:app`)"),
    ],
)
def test_worker_with_a_bad_target(project_dir: Path, target: str, fragment: str) -> None:
    (project_dir / "needs_missing_dep.py").write_text("import no_such_dependency_here\n")

    result = invoke("worker", target)

    assert_clean_error(result, 2, "error: ", fragment)


def test_worker_finds_modules_in_the_current_directory(project_dir: Path) -> None:
    (project_dir / "jobs_without_app.py").write_text("app = 42\n")

    result = invoke("worker", "jobs_without_app:app")

    assert_clean_error(result, 2, "jobs_without_app:app is of type int, not a surestep.App")


@pytest.mark.parametrize("option", ["--lease", "--poll"])
def test_worker_rejects_a_pause_that_is_not_positive(option: str) -> None:
    result = invoke("worker", "jobs:app", option, "0")

    assert result.exit_code == 2
    assert "must be greater than 0" in result.stderr


WORKER_MODULE = """
import time

from surestep import App

app = App({url!r})


@app.step()
def shout(name: str) -> str:
    return name.upper()


@app.workflow()
def greet(name: str) -> str:
    return "hello " + shout(name)


@app.workflow()
def nap(seconds: float) -> str:
    time.sleep(seconds)
    return "awake"
"""


@pytest.fixture
def worker_project(tmp_path: Path) -> Iterator[tuple[App, Path]]:
    """A module file for `surestep worker jobs:app`, and a client App on its database."""
    url = f"sqlite:///{tmp_path}/w.db"
    (tmp_path / "jobs.py").write_text(textwrap.dedent(WORKER_MODULE.format(url=url)))
    client = App(url)

    @client.workflow()
    def greet(name: str) -> str:
        raise AssertionError("the worker executes this, not the test")

    @client.workflow()
    def nap(seconds: float) -> str:
        raise AssertionError("the worker executes this, not the test")

    yield client, tmp_path
    client.close()


@contextmanager
def worker_process(cwd: Path, *options: str) -> Iterator[subprocess.Popen[bytes]]:
    """`surestep worker jobs:app` from the console script of this environment."""
    executable = Path(sys.executable).parent / "surestep"
    with (cwd / "worker.log").open("wb") as log:
        process = subprocess.Popen(
            [str(executable), "worker", "jobs:app", "--poll", "0.05", *options],
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def wait_for(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not true within {timeout}s"
        time.sleep(0.02)


@pytest.mark.slow
def test_worker_process_executes_runs_and_stops_on_sigterm(
    worker_project: tuple[App, Path],
) -> None:
    client, cwd = worker_project
    handle = client.start("greet", "ada", run_id="w-1")

    with worker_process(cwd) as process:
        assert handle.result(timeout=20) == "hello ADA"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0

    log = (cwd / "worker.log").read_text()
    assert "surestep.worker" in log and "stopped" in log
    assert f"database sqlite:///{cwd}/w.db (from the App in jobs:app)" in log


@pytest.mark.slow
def test_worker_db_option_overrides_the_apps_database(worker_project: tuple[App, Path]) -> None:
    _, cwd = worker_project
    other = f"sqlite:///{cwd}/other.db"
    client = App(other)

    @client.workflow()
    def greet(name: str) -> str:
        raise AssertionError("the worker executes this, not the test")

    handle = client.start(greet, "ada", run_id="elsewhere")
    try:
        with worker_process(cwd, "--db", other) as process:
            assert handle.result(timeout=20) == "hello ADA"
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
    finally:
        client.close()

    log = (cwd / "worker.log").read_text()
    assert f"database {other} (from --db)" in log
    assert not (cwd / "w.db").exists()  # the App's own database was never opened


@pytest.mark.slow
def test_worker_process_exits_when_a_sync_run_outlives_the_grace_period(
    worker_project: tuple[App, Path],
) -> None:
    client, cwd = worker_project
    handle = client.start("nap", 60.0, run_id="w-2")

    with worker_process(cwd, "--grace", "0.2") as process:
        wait_for(lambda: handle.state == State.RUNNING, timeout=20)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 1

    assert "still busy after the grace period" in (cwd / "worker.log").read_text()
    assert handle.state == State.PENDING  # released: another worker resumes it


def test_show_prints_step_outputs_cut_or_full_and_timed_out_waits(
    db_url: str, clock: FakeClock
) -> None:
    app = App(db_url, clock=clock)

    @app.step(name="long_text")
    def long_text() -> str:
        return "word " * 40 + "THE-END"

    @app.workflow(name="chatty")
    def chatty() -> object:
        long_text()
        return surestep.wait_for_event("approved", timeout=timedelta(hours=1))

    handle = run_workflow(app, chatty, run_id="chatty-1")
    assert handle.result() is None  # the wait timed out
    short = invoke("show", "chatty-1", "--db", db_url)
    full = invoke("show", "chatty-1", "--full", "--db", db_url)
    app.close()

    assert short.exit_code == 0, short.output
    assert '"word word word' in short.stdout and "…" in short.stdout
    assert "THE-END" not in short.stdout
    assert "THE-END" in full.stdout
    wait_row = next(line for line in short.stdout.splitlines() if "event:approved" in line)
    assert "timed out" in wait_row and "success" not in wait_row


def test_piped_tables_are_not_wrapped_at_80_columns(project: Project) -> None:
    result = invoke("show", "dl-1", "--db", project.url, env={"COLUMNS": None})

    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.stdout.splitlines()) > 80
    step_row = next(line for line in result.stdout.splitlines() if "call_api" in line)
    assert "ConnectionError: api is down" in step_row  # a whole row on one line


def test_send_delivers_an_event_to_a_waiting_run(db_url: str, clock: FakeClock) -> None:
    app = App(db_url, clock=clock)

    @app.workflow(name="approval")
    def approval() -> object:
        return surestep.wait_for_event("approved")

    handle = app.start(approval, run_id="needs-ok")
    drive(app, until=lambda: handle.state == State.WAITING)
    bad = invoke("send", "needs-ok", "approved", "--data", "{nope", "--db", db_url)
    assert bad.exit_code == 2 and "not valid JSON" in bad.output
    sent = invoke("send", "needs-ok", "approved", "--data", '{"by": "ops"}', "--db", db_url)
    assert sent.exit_code == 0, sent.output
    drive(app, until=lambda: handle.state == State.SUCCESS)
    assert handle.result() == {"by": "ops"}
    missing = invoke("send", "nope", "approved", "--db", db_url)
    assert missing.exit_code == 1 and "no run with id 'nope'" in missing.output
    app.close()


def test_prune_deletes_old_finished_runs_and_keeps_the_rest(db_url: str, clock: FakeClock) -> None:
    app = App(db_url, clock=clock)  # the fake clock is years behind the CLI's real one

    @app.step(name="boom", retry=Retry(max_attempts=1))
    def boom() -> None:
        raise ConnectionError("down")

    @app.workflow(name="ok")
    def ok() -> int:
        return 1

    @app.workflow(name="parked")
    def parked() -> None:
        boom()

    run_workflow(app, ok, run_id="old-success")
    run_workflow(app, parked, run_id="old-dead-letter")
    app.start(ok, run_id="still-pending")
    bad = invoke("prune", "--older-than", "30 days", "--db", db_url)
    assert bad.exit_code == 2 and "s, m, h, d or w" in bad.output
    done = invoke("prune", "--older-than", "30d", "--db", db_url)
    assert done.exit_code == 0 and "deleted 1 finished run(s)" in done.output, done.output
    assert sorted(r.id for r in app.list_runs()) == ["old-dead-letter", "still-pending"]
    app.close()
