"""The rate ledger's decision, as a pure function of the window: no database."""

from __future__ import annotations

import pytest

from surestep.errors import ConfigurationError
from surestep.llm.limits import RequestTooLargeError, admission, check_limits


def test_an_empty_window_admits_at_once() -> None:
    assert admission([], rpm=1, tpm=10, tokens=10, now=100.0) == 0.0


def test_the_wait_is_until_the_entry_whose_leaving_makes_room() -> None:
    window = [(0.0, 1), (10.0, 1), (20.0, 1)]
    assert admission(window, rpm=4, tpm=None, tokens=1, now=30.0) == 0.0
    assert admission(window, rpm=3, tpm=None, tokens=1, now=30.0) == 30.0  # 0.0 leaves
    assert admission(window, rpm=2, tpm=None, tokens=1, now=30.0) == 40.0  # and 10.0
    assert admission(window, rpm=1, tpm=None, tokens=1, now=30.0) == 50.0  # all three


def test_tokens_wait_for_as_many_entries_as_free_enough() -> None:
    window = [(0.0, 50), (10.0, 30), (20.0, 20)]
    assert admission(window, rpm=None, tpm=100, tokens=0, now=30.0) == 0.0
    assert admission(window, rpm=None, tpm=100, tokens=50, now=30.0) == 30.0
    assert admission(window, rpm=None, tpm=100, tokens=51, now=30.0) == 40.0
    assert admission(window, rpm=None, tpm=100, tokens=100, now=30.0) == 50.0


def test_entries_made_at_one_instant_leave_together() -> None:
    window = [(5.0, 1), (5.0, 1), (5.0, 1)]
    assert admission(window, rpm=2, tpm=None, tokens=1, now=6.0) == 59.0


def test_a_wait_is_at_least_a_millisecond() -> None:
    # A wait rounded to nothing would send the caller straight back to spin.
    window = [(40.000001, 1)]
    assert admission(window, rpm=1, tpm=None, tokens=1, now=100.0) == 0.001


def test_check_limits_refuses_what_no_window_admits() -> None:
    check_limits("k", 1, 1, 1)
    check_limits("k", None, None, 10**9)
    with pytest.raises(RequestTooLargeError, match="Raise tpm for 'k'"):
        check_limits("k", None, 10, 11)
    with pytest.raises(ConfigurationError, match="rpm=0 admits no request"):
        check_limits("k", 0, None, 1)
    with pytest.raises(ConfigurationError, match="tpm=0 admits no token"):
        check_limits("k", None, 0, 0)
    with pytest.raises(ValueError, match="cannot be negative"):
        check_limits("k", None, None, -1)
