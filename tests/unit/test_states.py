from __future__ import annotations

import itertools

import pytest

from surestep import IllegalTransitionError, State
from surestep.states import (
    RUN_TRANSITIONS,
    STEP_TRANSITIONS,
    TERMINAL,
    check_run_transition,
    check_step_transition,
)

PAIRS = list(itertools.product(State, State))


@pytest.mark.parametrize(("before", "after"), PAIRS)
def test_every_run_transition_is_allowed_only_if_in_the_table(before: State, after: State) -> None:
    if (before, after) in RUN_TRANSITIONS:
        check_run_transition(before, after)
    else:
        with pytest.raises(IllegalTransitionError) as caught:
            check_run_transition(before, after)
        assert caught.value.from_state == before and caught.value.to_state == after
        assert f"'{before}' -> '{after}'" in str(caught.value)


@pytest.mark.parametrize(("before", "after"), PAIRS)
def test_every_step_transition_is_allowed_only_if_in_the_table(before: State, after: State) -> None:
    if (before, after) in STEP_TRANSITIONS:
        check_step_transition(before, after)
    else:
        with pytest.raises(IllegalTransitionError):
            check_step_transition(before, after)


def test_terminal_states_have_no_way_out() -> None:
    assert {before for before, _ in RUN_TRANSITIONS} & TERMINAL == set()
    assert {State.SUCCESS, State.FAILED, State.CANCELLED} == TERMINAL


def test_every_state_is_reachable_from_pending() -> None:
    reached, frontier = {State.PENDING}, [State.PENDING]
    while frontier:
        here = frontier.pop()
        for before, after in RUN_TRANSITIONS:
            if before == here and after not in reached:
                reached.add(after)
                frontier.append(after)
    assert reached == set(State)
