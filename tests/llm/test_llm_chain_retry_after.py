"""Retry-After: a chain whose every model failed waits, before its next attempt, for the
longest any of them asked for; a wait no run can take is capped or ignored."""

from __future__ import annotations

from typing import Any

import pytest

from surestep import App, FakeClock, Retry, State
from surestep.llm import ModelRateLimitedError
from surestep.llm.faults import MAX_RETRY_AFTER
from surestep.render import format_time
from surestep.testing import FakeLLM, drive


def declare(app: App, **settings: Any) -> None:
    options: dict[str, Any] = {
        "name": "summarize",
        "models": ["fake:a", "fake:b"],
        "prompt": lambda t: t,
        "retry": Retry(max_attempts=3, initial_delay=10, max_delay=60, jitter=False),
        **settings,
    }
    summarize = app.llm_step(**options)

    @app.workflow(name="digest")
    def digest(text: str) -> str:
        return str(summarize(text))


def test_a_chain_that_fails_waits_out_the_longest_retry_after(app: App, clock: FakeClock) -> None:
    fake = FakeLLM()
    app.llm_provider("fake", provider=fake)
    declare(app, fallback_on_transient=True)
    fake.fault("rate_limited", model="a", retry_after=45).fault("rejected", model="b")
    fake.reply("done", model="a")
    handle = app.start("digest", "text")
    drive(app, until=lambda: handle.state == State.SUCCESS)
    calls = app.llm.ledger.calls(handle.id)
    assert [(c.attempt, c.model, c.outcome) for c in calls] == [
        (1, "a", "rate_limited"),
        (1, "b", "rejected"),
        (2, "a", "ok"),
    ]
    # The policy's own backoff is 10 s; model a asked for 45.
    assert calls[2].started_at - calls[0].started_at >= 45


def test_a_retry_after_past_a_day_is_waited_for_a_day(app: App, clock: FakeClock) -> None:
    fake = FakeLLM()
    app.llm_provider("fake", provider=fake)
    declare(app, models=["fake:a"])
    # A gateway's bug: "retry in 1e300 seconds" parked the run for ever, and `surestep
    # show` could not print when it was due.
    fake.fault("rate_limited", retry_after=1e300).reply("done")
    handle = app.start("digest", "text")
    drive(app, until=lambda: handle.state == State.SUCCESS)
    first, second = app.llm.ledger.calls(handle.id)
    assert MAX_RETRY_AFTER <= second.started_at - first.started_at < MAX_RETRY_AFTER + 60


@pytest.mark.parametrize(
    ("asked", "kept"),
    [(float("nan"), None), (-5.0, None), (float("inf"), MAX_RETRY_AFTER), (30, 30.0)],
)
def test_a_retry_after_is_kept_only_as_a_wait_the_run_can_take(
    asked: float, kept: float | None
) -> None:
    assert ModelRateLimitedError("429", retry_after=asked).retry_after == kept


def test_a_date_past_what_can_be_shown_is_printed_as_stored() -> None:
    assert format_time(1e300) == "1e+300 (not a date)"
