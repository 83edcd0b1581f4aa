"""Bad input gets a clear error that says what to do, and nothing is half-written."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest

from surestep import (
    App,
    ConfigurationError,
    DuplicateWorkflowError,
    Retry,
    SerializationError,
    State,
    StepError,
    StorageError,
    SurestepError,
    UnknownWorkflowError,
)
from surestep.storage import open_store
from surestep.testing import run_workflow


def test_unknown_workflow_name(app: App) -> None:
    @app.workflow(name="known")
    def known() -> None: ...

    with pytest.raises(UnknownWorkflowError, match=r"'nope'.*known: known.*import the module"):
        app.start("nope")


def test_a_plain_function_is_not_a_workflow(app: App) -> None:
    def plain() -> None: ...

    with pytest.raises(UnknownWorkflowError, match=r"decorate it with @app.workflow"):
        app.start(plain)


def test_two_workflows_under_one_name(app: App) -> None:
    @app.workflow(name="ingest")
    def one() -> None: ...

    with pytest.raises(DuplicateWorkflowError, match="'ingest' is already registered"):

        @app.workflow(name="ingest")
        def two() -> None: ...


def test_unserialisable_input_names_the_argument_and_stores_nothing(app: App) -> None:
    @app.workflow()
    def wf(doc: object) -> None: ...

    with pytest.raises(SerializationError, match=r"argument 'doc' of workflow 'wf'.*lock"):
        app.start(wf, threading.Lock())
    assert app.list_runs() == []


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("surestep.db", "expected a scheme"),
        ("mysql://host/db", "unsupported database URL scheme 'mysql'"),
        ("sqlite://", "no file path"),
        ("sqlite://host/x.db", "has no host"),
        ("sqlite:///x.db?journal=off", "unknown SQLite URL option"),
        ("sqlite:///x.db?synchronous=off", "synchronous=full or normal"),
    ],
)
def test_malformed_database_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        open_store(url)


def test_a_database_path_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageError, match=r"writable"):
        open_store(f"sqlite:///{blocker / 'sub' / 'x.db'}")


def test_a_database_path_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"unable to open.*may write to it"):
        open_store(f"sqlite:///{tmp_path}")


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"this is not sqlite at all, just text pretending" * 100)
    with pytest.raises(StorageError, match=r"not a SQLite database or is corrupt.*backup"):
        open_store(f"sqlite:///{path}")
    assert path.read_bytes().startswith(b"this is not sqlite")  # left untouched


def test_an_unreachable_postgres_server_says_so_without_the_password() -> None:
    with pytest.raises(StorageError) as caught:
        # port 1 on loopback: nothing listens there, so the connection is refused at once
        open_store("postgresql://app:s3cret@127.0.0.1:1/db?connect_timeout=1")
    message = str(caught.value)
    assert "cannot connect to PostgreSQL" in message and "Connection refused" in message
    assert "s3cret" not in message and "app:***@" in message
    assert caught.value.transient


def test_a_bad_pool_size_in_a_postgres_url() -> None:
    with pytest.raises(ConfigurationError, match=r"pool_size=.many.*whole number"):
        open_store("postgresql://app@127.0.0.1/db?pool_size=many")


def test_bad_step_declarations(app: App) -> None:
    with pytest.raises(ConfigurationError, match=r"on_exhausted='retry'"):

        @app.step(on_exhausted="retry")
        def a() -> None: ...

    with pytest.raises(ConfigurationError, match=r"timeout"):

        @app.step(timeout=0)
        def b() -> None: ...


def test_an_empty_run_id_is_refused(app: App) -> None:
    @app.workflow()
    def wf() -> None: ...

    with pytest.raises(ConfigurationError, match=r"run_id"):
        app.start(wf, run_id="  ")


def test_list_runs_with_an_unknown_state(app: App) -> None:
    with pytest.raises(ConfigurationError, match=r"unknown state 'done'.*dead_letter"):
        app.list_runs(state="done")


def test_bad_deadlines_and_events_are_refused_before_anything_is_stored(app: App) -> None:
    import surestep

    @app.workflow()
    def wf() -> None: ...

    with pytest.raises(ConfigurationError, match=r"on_deadline='explode'.*fail, cancel, review"):
        app.start(wf, deadline=timedelta(hours=1), on_deadline="explode")
    with pytest.raises(ConfigurationError, match="positive timedelta"):
        app.start(wf, deadline=timedelta(0))
    with pytest.raises(ConfigurationError, match="positive timedelta"):
        app.start(wf, deadline=3600)  # type: ignore[arg-type]
    assert app.list_runs() == []
    handle = app.start(wf)
    with pytest.raises(ConfigurationError, match="event name"):
        app.send_event(handle.id, "", None)
    with pytest.raises(SerializationError, match="payload of event 'x'"):
        app.send_event(handle.id, "x", threading.Lock())
    with pytest.raises(SerializationError, match=r"payload of event 'x' at \['ids'\] is a set"):
        app.send_event(handle.id, "x", {"ids": {1, 2}})
    with pytest.raises(SurestepError, match="only inside a workflow"):
        surestep.wait_for_event("x")
    with pytest.raises(SurestepError, match="non-empty list of event names"):
        surestep.wait_for_any("approved")

    @app.workflow()
    def adopts_a_stranger() -> None:
        surestep.run_child(print)

    failed = run_workflow(app, adopts_a_stranger).record()
    assert failed.error is not None and "to run it as a child" in failed.error["message"]


def test_step_and_workflow_decorators_work_without_parentheses(app: App) -> None:
    @app.step
    def double(n: int) -> int:
        return n * 2

    @app.workflow
    def twice(n: int) -> int:
        return double(n) + double(n)

    assert run_workflow(app, twice, 5).result() == 20
    assert [s.name for s in app.get_run(app.list_runs()[0].id).steps] == ["double"] * 2
    assert app.list_runs()[0].workflow == "twice"


class Document:
    """A plain class: pydantic does not know how to store it."""


def test_an_annotation_the_codec_cannot_store_is_refused_at_decoration(app: App) -> None:
    with pytest.raises(ConfigurationError) as caught:

        @app.step()
        def load(doc_id: str) -> Document: ...

    message = str(caught.value)
    assert "step 'load': the return annotation Document" in message
    assert "pydantic model, a dataclass, or JSON types" in message
    assert "arbitrary_types_allowed" not in message

    with pytest.raises(ConfigurationError, match=r"workflow 'ingest': parameter 'doc' Document"):

        @app.workflow(name="ingest")
        def ingest(doc: Document) -> None: ...


def test_a_lambda_step_needs_a_name(app: App) -> None:
    with pytest.raises(ConfigurationError, match=r"a lambda has no name.*app.step\(name="):
        app.step()(lambda x: x)
    with pytest.raises(ConfigurationError, match=r"a lambda has no name.*app.workflow\(name="):
        app.workflow(lambda: None)
    add_one = app.step(name="add_one")(lambda x: x + 1)
    add_two = app.step(name="add_two")(lambda x: x + 2)

    @app.workflow()
    def add(n: int) -> int:
        return int(add_two(add_one(n)))

    assert run_workflow(app, add, 1).result() == 4


def test_starting_a_workflow_of_another_app_says_so(app: App, db_url: str) -> None:
    other = App(db_url)

    @other.workflow()
    def elsewhere() -> None: ...

    @app.workflow(name="elsewhere")
    def here() -> None: ...

    for target in (App(db_url), app):  # nothing of that name / another function by it
        with pytest.raises(UnknownWorkflowError, match=r"'elsewhere' is registered on another"):
            target.start(elsewhere)
    assert app.list_runs() == []


def test_review_filters_ids_and_texts_the_database_cannot_take_are_refused(app: App) -> None:
    # Found by schemathesis against the REST API: these were 500/503 answers, not 4xx.
    for call, message in (
        (lambda: app.reviews.list(group="fin\x00ance"), "group .* NUL"),
        (lambda: app.reviews.list(kind="k\x00"), "kind .* NUL"),
        (lambda: app.reviews.list(run_id="r\x00"), "run_id .* NUL"),
        (lambda: app.reviews.inbox("alice", ["g\x00"]), "group .* NUL"),
        (lambda: app.reviews.get(2**63), "from 1 to 9223372036854775807"),
        (lambda: app.reviews.decide(1, "approve", by="a", comment="x\x00"), "comment .* NUL"),
        (lambda: app.get_run("r\x00"), "run_id .* NUL"),
        (lambda: app.list_runs(workflow="w" * 300), "workflow is 300 characters"),
    ):
        with pytest.raises(ConfigurationError, match=message):
            call()


def test_runs_are_listed_by_creation_time(app: App) -> None:
    @app.workflow(name="w")
    def w() -> None: ...

    clock = app.clock
    started = []
    for n in range(3):
        started.append(clock.now())
        app.start("w", run_id=f"r{n}")
        clock.advance(10)  # type: ignore[attr-defined]
    ids = lambda **window: [r.id for r in app.list_runs(**window)]  # noqa: E731
    assert ids() == ["r2", "r1", "r0"]
    assert ids(since=started[1]) == ["r2", "r1"]
    assert ids(before=started[2]) == ["r1", "r0"]
    assert ids(since=started[1], before=started[2]) == ["r1"]


def test_an_error_whose_message_utf8_cannot_hold_is_stored_with_the_character_escaped(
    app: App,
) -> None:
    # A lone surrogate (from bytes decoded with surrogateescape, say) cannot be written as
    # UTF-8: the step's failed attempt and the run's failure are stored with it escaped,
    # instead of the step call raising a SerializationError and its attempt going unrecorded.
    @app.step(retry=Retry(give_up_on=(ValueError,)))
    def parse(raw: str) -> str:
        raise ValueError(f"cannot read {raw!r}: \udcff")

    @app.workflow()
    def reads() -> str:
        try:
            parse("x")
        except StepError as exc:
            raise RuntimeError(f"gave up: {exc} \udcfe") from None
        return "unreachable"

    handle = run_workflow(app, reads)
    run = app.get_run(handle.id)
    assert run.state == State.FAILED
    assert run.error is not None and run.error["message"].endswith("\\udcfe")
    [step] = run.steps
    assert step.state == State.FAILED
    assert step.error is not None and step.error["message"] == "cannot read 'x': \\udcff"
