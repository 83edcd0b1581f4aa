"""A chain whose every model failed waits, before its next attempt, for the longest
Retry-After any of them asked for (with fallback_on_transient, a 429 then a refusal)."""

from __future__ import annotations

from typing import Any

from surestep import App, FakeClock, Retry, State
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
