"""Run and step states, and the one table of allowed transitions.

Every state change in surestep goes through :func:`check_run_transition` or
:func:`check_step_transition`; an illegal one raises :class:`IllegalTransitionError`.
"""

from __future__ import annotations

from enum import StrEnum

from surestep.errors import IllegalTransitionError


class State(StrEnum):
    """The state vocabulary shared by runs and step attempts."""

    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    NEEDS_REVIEW = "needs_review"
    SUCCESS = "success"
    FAILED = "failed"
    DEAD_LETTER = "dead_letter"
    CANCELLED = "cancelled"


P, R, W, NR = State.PENDING, State.RUNNING, State.WAITING, State.NEEDS_REVIEW
OK, F, DL, C = State.SUCCESS, State.FAILED, State.DEAD_LETTER, State.CANCELLED

#: States a run never leaves.
TERMINAL: frozenset[State] = frozenset({OK, F, C})

#: States in which ``RunHandle.result()`` stops waiting: terminal, or parked for a person.
SETTLED: frozenset[State] = TERMINAL | {DL}

RUN_TRANSITIONS: frozenset[tuple[State, State]] = frozenset(
    {
        (P, R),  # a worker claims the run
        (P, C),
        (R, OK),
        (R, F),
        (R, DL),  # a step exhausted its retries with on_exhausted="dead_letter"
        (R, W),  # a retry backoff (later: a durable timer or an event wait)
        (R, P),  # lease lapsed, worker died or shut down: the run is up for grabs again
        (R, C),
        (R, NR),
        (W, R),  # the wait is over and a worker claims it
        (W, P),
        (W, C),
        (NR, P),  # a review was decided: the run resumes
        (NR, F),
        (NR, C),
        (NR, DL),  # a review expired with on_expiry="dead_letter", or a reviewer sent it
        (DL, P),  # redrive: `app.retry` / `surestep retry`
        (DL, C),
        # A run deadline may end or park any unfinished run (on_deadline=fail / review).
        (P, F),
        (W, F),
        (DL, F),
        (P, NR),
        (W, NR),
        (DL, NR),
    }
)

STEP_TRANSITIONS: frozenset[tuple[State, State]] = frozenset(
    {
        (P, R),  # first attempt starts
        (R, OK),
        (R, W),  # the attempt failed and a retry is scheduled
        (R, F),  # gave up: the error is raised into the workflow
        (R, DL),  # retries exhausted, the run is dead-lettered
        (R, NR),
        (W, R),  # the next attempt starts
        (DL, P),  # the run was redriven: the step gets a fresh retry budget
        (NR, P),  # a reviewer asked for another attempt
        # Human review at a position: the task opens, then is decided (or expires).
        (P, NR),
        (NR, OK),
        (NR, DL),
        # Durable waits: a sleep, an event or a child run.
        (P, W),  # the wait begins
        (W, OK),  # the timer fired, the event arrived, the child succeeded
        (W, F),  # the event timed out (raise_on_timeout), the child failed
    }
)


def check_run_transition(from_state: State, to_state: State) -> None:
    """Raise :class:`IllegalTransitionError` unless a run may go ``from_state -> to_state``."""
    if (from_state, to_state) not in RUN_TRANSITIONS:
        raise IllegalTransitionError("run", from_state, to_state)


def check_step_transition(from_state: State, to_state: State) -> None:
    """Raise :class:`IllegalTransitionError` unless a step may go ``from_state -> to_state``."""
    if (from_state, to_state) not in STEP_TRANSITIONS:
        raise IllegalTransitionError("step", from_state, to_state)
