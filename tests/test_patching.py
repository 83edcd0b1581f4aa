"""patched() and deprecate_patch(): one workflow function serving the runs started on
old code and the runs started on new code, across a deploy. Each phase of the upgrade is
a separate App (its own registry) on the same database, as separate deploys would be."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest

import surestep
from surestep import App, FakeClock, State, SurestepError
from surestep.testing import drive

Phase = Callable[[], App]


def steps_of(app: App, run_id: str) -> list[tuple[int, str]]:
    return [(s.position, s.name) for s in app.get_run(run_id).steps]


def finish(app: App, run_id: str) -> object:
    """Send the run its "go" event and drive it to its end on ``app``'s code."""
    app.send_event(run_id, "go")
    drive(app, until=lambda: app.get_run(run_id).state in (State.SUCCESS, State.FAILED))
    return app.handle(run_id).result()


def wait_at_go(app: App, run_id: str, workflow: str = "order") -> None:
    app.start(workflow, run_id=run_id)
    drive(app, until=lambda: app.get_run(run_id).state == State.WAITING)


@pytest.fixture
def calls() -> Counter[str]:
    return Counter()


def old_code(db_url: str, clock: FakeClock, calls: Counter[str]) -> App:
    app = App(db_url, clock=clock)

    @app.step(name="first")
    def first() -> str:
        calls["first"] += 1
        return "first"

    @app.step(name="old_step")
    def old_step() -> str:
        calls["old_step"] += 1
        return "old"

    @app.step(name="last")
    def last() -> str:
        calls["last"] += 1
        return "last"

    @app.workflow(name="order")
    def order() -> str:
        first()
        path = old_step()
        surestep.wait_for_event("go")
        return f"{path}+{last()}"

    return app


def new_code(db_url: str, clock: FakeClock, calls: Counter[str], deprecated: bool = False) -> App:
    app = App(db_url, clock=clock)

    @app.step(name="first")
    def first() -> str:
        calls["first"] += 1
        return "first"

    @app.step(name="old_step")
    def old_step() -> str:
        calls["old_step"] += 1
        return "old"

    @app.step(name="new_step")
    def new_step() -> str:
        calls["new_step"] += 1
        return "new"

    @app.step(name="last")
    def last() -> str:
        calls["last"] += 1
        return "last"

    if deprecated:

        @app.workflow(name="order")
        def order() -> str:
            first()
            surestep.deprecate_patch("receipt")
            path = new_step()
            surestep.wait_for_event("go")
            return f"{path}+{last()}"

    else:

        @app.workflow(name="order")
        def order() -> str:
            first()
            path = new_step() if surestep.patched("receipt") else old_step()
            surestep.wait_for_event("go")
            return f"{path}+{last()}"

    return app


def test_a_run_recorded_by_old_code_takes_the_old_path_and_new_runs_the_new_one(
    db_url: str, clock: FakeClock, calls: Counter[str]
) -> None:
    old = old_code(db_url, clock, calls)
    wait_at_go(old, "old-1")
    assert steps_of(old, "old-1") == [(0, "first"), (1, "old_step"), (2, "event:go")]
    old.close()

    new = new_code(db_url, clock, calls)
    wait_at_go(new, "new-1")
    # The marker takes a position in a new run; the old run's steps keep theirs.
    assert steps_of(new, "new-1") == [
        (0, "first"),
        (1, "patch:receipt"),
        (2, "new_step"),
        (3, "event:go"),
    ]
    assert finish(new, "old-1") == "old+last"
    assert steps_of(new, "old-1") == [(0, "first"), (1, "old_step"), (2, "event:go"), (3, "last")]
    # Replayed, not re-run: each step ran once per run.
    assert finish(new, "new-1") == "new+last"
    assert calls == Counter(first=2, old_step=1, new_step=1, last=2)
    new.close()


def test_a_run_that_reaches_the_patch_on_new_code_takes_the_new_path(
    db_url: str, clock: FakeClock, calls: Counter[str]
) -> None:
    old = App(db_url, clock=clock)

    @old.step(name="first")
    def first() -> str:
        return "first"

    @old.workflow(name="order")
    def order() -> str:
        first()
        surestep.wait_for_event("go")
        return "old"

    wait_at_go(old, "early-1")  # stopped before the point where the new code patches
    old.close()

    new = App(db_url, clock=clock)

    @new.step(name="first")
    def first_again() -> str:
        return "first"

    @new.workflow(name="order")
    def order_patched() -> str:
        first_again()
        surestep.wait_for_event("go")
        # Asked twice, answered once: the second call records nothing.
        if surestep.patched("tail") and surestep.patched("tail"):
            return "new"
        return "old"

    assert finish(new, "early-1") == "new"
    assert steps_of(new, "early-1") == [(0, "first"), (1, "event:go"), (2, "patch:tail")]
    new.close()


def test_deprecate_patch_replays_past_a_recorded_marker_and_records_none(
    db_url: str, clock: FakeClock, calls: Counter[str]
) -> None:
    patched_app = new_code(db_url, clock, calls)
    wait_at_go(patched_app, "marked-1")  # recorded a marker; the old runs are all done
    patched_app.close()

    deprecated = new_code(db_url, clock, calls, deprecated=True)
    wait_at_go(deprecated, "plain-1")
    assert finish(deprecated, "marked-1") == "new+last"
    assert finish(deprecated, "plain-1") == "new+last"
    assert steps_of(deprecated, "marked-1") == [
        (0, "first"),
        (1, "patch:receipt"),
        (2, "new_step"),
        (3, "event:go"),
        (4, "last"),
    ]
    assert steps_of(deprecated, "plain-1") == [
        (0, "first"),
        (1, "new_step"),
        (2, "event:go"),
        (3, "last"),
    ]
    assert calls["new_step"] == 2
    deprecated.close()


def test_patched_works_in_async_workflows(app: App) -> None:
    @app.step(name="double")
    async def double(x: int) -> int:
        return 2 * x

    @app.workflow(name="calc")
    async def calc(x: int) -> int:
        if surestep.patched("doubling"):
            return await double(x)
        return x

    handle = app.start(calc, 21, run_id="calc-1")
    drive(app, until=lambda: handle.state == State.SUCCESS)
    assert handle.result() == 42
    assert steps_of(app, "calc-1") == [(0, "patch:doubling"), (1, "double")]


def test_outside_a_workflow_patched_is_true_and_a_bad_change_id_is_refused() -> None:
    assert surestep.patched("anything") is True
    surestep.deprecate_patch("anything")  # nothing to do outside a run
    with pytest.raises(SurestepError, match="non-empty string"):
        surestep.patched("")
    with pytest.raises(SurestepError, match="deprecate_patch"):
        surestep.deprecate_patch(None)  # type: ignore[arg-type]
