"""The shared rate-limit ledger and the response cache, on SQLite and PostgreSQL alike.

Time is passed in, so a minute's window is crossed by arithmetic, not by sleeping.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from surestep.errors import ConfigurationError, SerializationError
from surestep.llm.cache import ResponseCache, cache_key
from surestep.llm.limits import Admitted, RateLedger, RequestTooLargeError, Wait
from surestep.storage import Store, open_store

T = 1_700_000_000.0
KEY = "openai:gpt-4o-mini"


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    store = open_store(db_url)
    yield store
    store.close()


@pytest.fixture
def ledger(store: Store) -> RateLedger:
    return RateLedger(store)


@pytest.fixture
def cache(store: Store) -> ResponseCache:
    return ResponseCache(store)


def admitted(outcome: Admitted | Wait) -> str:
    assert isinstance(outcome, Admitted), outcome
    return outcome.reservation_id


def rows(store: Store) -> list[tuple[str, float]]:
    with store.reading() as cur:
        cur.execute(
            "SELECT key, reserved_at FROM surestep_llm_rate_reservations ORDER BY key, reserved_at"
        )
        return [(str(k), float(at)) for k, at in cur.fetchall()]


# -- the rate ledger -----------------------------------------------------------------


def test_requests_within_rpm_are_admitted_and_the_next_waits_for_the_oldest(
    ledger: RateLedger,
) -> None:
    for offset in (0, 10, 20):
        admitted(ledger.reserve(KEY, rpm=3, tpm=None, tokens=5, now=T + offset))
    # The window (T-30, T+30] is full; the entry made at T leaves it at T+60.
    assert ledger.reserve(KEY, rpm=3, tpm=None, tokens=5, now=T + 30) == Wait(30.0)
    assert ledger.reserve(KEY, rpm=3, tpm=None, tokens=5, now=T + 59.5) == Wait(0.5)
    admitted(ledger.reserve(KEY, rpm=3, tpm=None, tokens=5, now=T + 60))
    # Now T+10, T+20 and T+60 hold the window: the next one waits for T+10 to leave.
    assert ledger.reserve(KEY, rpm=3, tpm=None, tokens=5, now=T + 61) == Wait(9.0)
    assert ledger.usage(KEY, T + 61) == (3, 15)


def test_a_refused_request_is_not_counted(ledger: RateLedger) -> None:
    admitted(ledger.reserve(KEY, rpm=1, tpm=None, tokens=5, now=T))
    for _ in range(3):
        assert ledger.reserve(KEY, rpm=1, tpm=None, tokens=5, now=T + 1) == Wait(59.0)
    assert ledger.usage(KEY, T + 1) == (1, 5)


def test_keys_have_windows_of_their_own(ledger: RateLedger) -> None:
    admitted(ledger.reserve(KEY, rpm=1, tpm=None, tokens=5, now=T))
    admitted(ledger.reserve("anthropic:claude", rpm=1, tpm=None, tokens=5, now=T))
    assert isinstance(ledger.reserve(KEY, rpm=1, tpm=None, tokens=5, now=T), Wait)


def test_tokens_within_tpm_are_admitted_and_the_wait_frees_enough_tokens(
    ledger: RateLedger,
) -> None:
    admitted(ledger.reserve(KEY, rpm=None, tpm=100, tokens=60, now=T))
    admitted(ledger.reserve(KEY, rpm=None, tpm=100, tokens=30, now=T + 5))
    # 20 more needs the 60 made at T gone: at T+60.
    assert ledger.reserve(KEY, rpm=None, tpm=100, tokens=20, now=T + 10) == Wait(50.0)
    # 10 more fits exactly.
    admitted(ledger.reserve(KEY, rpm=None, tpm=100, tokens=10, now=T + 10))
    # 80 more needs both the 60 (T) and the 30 (T+5) gone: at T+65.
    assert ledger.reserve(KEY, rpm=None, tpm=100, tokens=80, now=T + 10) == Wait(55.0)
    assert ledger.usage(KEY, T + 10) == (3, 100)


def test_rpm_and_tpm_together_wait_for_the_later_of_the_two(ledger: RateLedger) -> None:
    admitted(ledger.reserve(KEY, rpm=3, tpm=100, tokens=90, now=T))
    admitted(ledger.reserve(KEY, rpm=3, tpm=100, tokens=5, now=T + 1))
    admitted(ledger.reserve(KEY, rpm=3, tpm=100, tokens=5, now=T + 2))
    # rpm alone would wait for T to leave; tpm 50 needs T (90) gone too: both at T+60.
    assert ledger.reserve(KEY, rpm=3, tpm=100, tokens=50, now=T + 3) == Wait(57.0)
    # rpm=2 needs two gone: T and T+1, so T+61.
    assert ledger.reserve(KEY, rpm=2, tpm=100, tokens=1, now=T + 3) == Wait(58.0)


def test_a_request_larger_than_tpm_is_refused_with_what_to_change(ledger: RateLedger) -> None:
    with pytest.raises(RequestTooLargeError, match=r"1001 tokens .* never be admitted.*tpm=1000"):
        ledger.reserve(KEY, rpm=None, tpm=1000, tokens=1001, now=T)
    assert ledger.usage(KEY, T) == (0, 0)


@pytest.mark.parametrize(("rpm", "tpm"), [(0, None), (None, 0), (-1, 100)])
def test_limits_that_admit_nothing_are_refused(ledger: RateLedger, rpm: int, tpm: int) -> None:
    with pytest.raises(ConfigurationError, match=r"admits no"):
        ledger.reserve(KEY, rpm=rpm, tpm=tpm, tokens=1, now=T)


def test_without_limits_every_request_is_admitted_and_counted(ledger: RateLedger) -> None:
    for i in range(5):
        admitted(ledger.reserve(KEY, rpm=None, tpm=None, tokens=1000, now=T + i))
    assert ledger.usage(KEY, T + 5) == (5, 5000)


def test_reconcile_replaces_the_estimate_and_changes_what_is_admitted(
    ledger: RateLedger,
) -> None:
    first = admitted(ledger.reserve(KEY, rpm=None, tpm=100, tokens=90, now=T))
    assert isinstance(ledger.reserve(KEY, rpm=None, tpm=100, tokens=20, now=T + 1), Wait)

    assert ledger.reconcile(first, 40) is True  # the call used less than estimated
    assert ledger.usage(KEY, T + 1) == (1, 40)
    second = admitted(ledger.reserve(KEY, rpm=None, tpm=100, tokens=20, now=T + 1))

    assert ledger.reconcile(second, 70) is True  # and this one more
    assert ledger.usage(KEY, T + 1) == (2, 110)
    # Over tpm now: the next waits until the first has left, at T+60 (70 + 1 fits).
    assert ledger.reserve(KEY, rpm=None, tpm=100, tokens=1, now=T + 2) == Wait(58.0)
    # 31 does not fit beside the 70: it waits for both, until T+61.
    assert ledger.reserve(KEY, rpm=None, tpm=100, tokens=31, now=T + 2) == Wait(59.0)


def test_reconcile_of_a_reservation_gone_from_the_window_changes_nothing(
    ledger: RateLedger,
) -> None:
    old = admitted(ledger.reserve(KEY, rpm=None, tpm=100, tokens=10, now=T))
    admitted(ledger.reserve(KEY, rpm=None, tpm=100, tokens=10, now=T + 60))  # prunes ``old``
    assert ledger.reconcile(old, 99) is False
    assert ledger.reconcile("no-such-reservation", 1) is False
    assert ledger.usage(KEY, T + 60) == (1, 10)


def test_usage_counts_the_window_ending_at_now(ledger: RateLedger) -> None:
    admitted(ledger.reserve(KEY, rpm=None, tpm=None, tokens=7, now=T))
    assert ledger.usage(KEY, T + 59.9) == (1, 7)
    assert ledger.usage(KEY, T + 60) == (0, 0)  # the window is (now - 60, now]
    assert ledger.usage("other:model", T) == (0, 0)


def test_a_reservation_prunes_its_keys_entries_older_than_the_window(
    store: Store, ledger: RateLedger
) -> None:
    for i in range(3):
        admitted(ledger.reserve(KEY, rpm=None, tpm=None, tokens=1, now=T + i))
    admitted(ledger.reserve("other:model", rpm=None, tpm=None, tokens=1, now=T))
    admitted(ledger.reserve(KEY, rpm=None, tpm=None, tokens=1, now=T + 61))
    # T and T+1 have left KEY's window and are gone; T+2 is still in it. Another key's
    # entries wait for a reservation of their own key.
    assert rows(store) == [(KEY, T + 2), (KEY, T + 61), ("other:model", T)]
    admitted(ledger.reserve("other:model", rpm=None, tpm=None, tokens=1, now=T + 200))
    assert rows(store) == [(KEY, T + 2), (KEY, T + 61), ("other:model", T + 200)]


def test_a_retried_reservation_whose_commit_was_applied_is_not_made_twice(
    store: Store, ledger: RateLedger
) -> None:
    # What @retry_transient does after a commit whose acknowledgement was lost: the same
    # reservation id again. It must find its own entry, not add a second one.
    first = ledger._reserve("r-1", KEY, 1, None, 5, T)
    again = ledger._reserve("r-1", KEY, 1, None, 5, T)
    assert first == again == Admitted("r-1")
    assert ledger.usage(KEY, T) == (1, 5)


# -- the response cache --------------------------------------------------------------

REPLY = json.dumps({"vendor": "ACME", "total": "12.50"})


def test_a_stored_reply_is_a_hit_until_it_expires(cache: ResponseCache) -> None:
    key = cache_key(KEY, "p" * 64, "s" * 64, {"temperature": 0})
    assert cache.get(key, T) is None
    cache.put(key, REPLY, now=T, ttl=3600)
    assert cache.get(key, T) == REPLY
    assert cache.get(key, T + 3599.9) == REPLY
    assert cache.get(key, T + 3600) is None  # expired entries are misses
    assert cache.get(cache_key(KEY, "p" * 64, "s" * 64, {"temperature": 1}), T) is None


def test_put_overwrites_the_value_and_the_expiry(cache: ResponseCache) -> None:
    key = cache_key(KEY, "p", None, {})
    cache.put(key, REPLY, now=T, ttl=10)
    cache.put(key, '"newer"', now=T + 5, ttl=100)
    assert cache.get(key, T + 50) == '"newer"'
    # An expired entry is revived by a put.
    cache.put(key, '"again"', now=T + 500, ttl=10)
    assert cache.get(key, T + 505) == '"again"'


def test_purge_deletes_the_expired_entries_only(store: Store, cache: ResponseCache) -> None:
    cache.put("a" * 64, REPLY, now=T, ttl=10)
    cache.put("b" * 64, REPLY, now=T, ttl=20)
    cache.put("c" * 64, REPLY, now=T, ttl=1000)
    assert cache.purge(T + 20) == 2
    assert cache.purge(T + 20) == 0
    with store.reading() as cur:
        cur.execute("SELECT key FROM surestep_llm_cache")
        assert [k for (k,) in cur.fetchall()] == ["c" * 64]
    assert cache.get("c" * 64, T + 20) == REPLY


def test_put_refuses_a_value_that_is_not_json_and_a_ttl_that_is_not_positive(
    cache: ResponseCache,
) -> None:
    with pytest.raises(SerializationError, match="must be JSON text"):
        cache.put("k", "not json", now=T, ttl=10)
    with pytest.raises(ConfigurationError, match="ttl must be a positive"):
        cache.put("k", REPLY, now=T, ttl=0)
    assert cache.get("k", T) is None


def test_cache_keys_are_canonical_digests_of_every_part() -> None:
    base = cache_key("m", "p", "s", {"temperature": 0.2, "max_tokens": 100})
    assert len(base) == 64 and int(base, 16) >= 0
    assert base == cache_key("m", "p", "s", {"max_tokens": 100, "temperature": 0.2})
    others = {
        cache_key("m2", "p", "s", {"temperature": 0.2, "max_tokens": 100}),
        cache_key("m", "p2", "s", {"temperature": 0.2, "max_tokens": 100}),
        cache_key("m", "p", "s2", {"temperature": 0.2, "max_tokens": 100}),
        cache_key("m", "p", None, {"temperature": 0.2, "max_tokens": 100}),
        cache_key("m", "p", "s", {"temperature": 0.3, "max_tokens": 100}),
        cache_key("m", "p", "s", {"temperature": 0.2}),
    }
    assert len(others) == 6 and base not in others


def test_a_parameter_that_is_not_json_is_refused_clearly() -> None:
    with pytest.raises(SerializationError, match=r"cache key of the parameters.*JSON values"):
        cache_key("m", "p", None, {"stop": {1, 2}})
    with pytest.raises(SerializationError):
        cache_key("m", "p", None, {"temperature": float("nan")})
