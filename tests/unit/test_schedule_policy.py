"""Cron in a time zone (DST) and the catch-up policy, with no database; and the
Standard Webhooks signature check of webhook triggers."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from surestep.errors import ConfigurationError
from surestep.flow.cron import CATCH_UP_LIMIT, ON_TIME, Cron, parse, plan
from surestep.flow.triggers import SignatureError, decode_secret, sign, verify

BERLIN = ZoneInfo("Europe/Berlin")


def at(*fields: int, zone: ZoneInfo = BERLIN, fold: int = 0) -> float:
    return datetime(*fields, tzinfo=zone, fold=fold).timestamp()  # type: ignore[misc]


def fires(cron: Cron, start: float, n: int) -> list[str]:
    """The next ``n`` fire times after ``start``, as UTC ISO strings."""
    found = []
    for _ in range(n):
        start = cron.next_after(start)
        found.append(datetime.fromtimestamp(start, UTC).strftime("%m-%d %H:%M"))
    return found


# -- DST ----------------------------------------------------------------------------------


def test_a_fixed_time_in_the_skipped_hour_fires_once_right_after_the_change() -> None:
    # 2024-03-31: Berlin jumps from 02:00 CET to 03:00 CEST; 02:30 does not exist.
    cron = parse("30 2 * * *", "Europe/Berlin", "test")
    assert fires(cron, at(2024, 3, 30, 12), 3) == [
        "03-31 01:00",  # 03:00 CEST, the first minute after the gap
        "04-01 00:30",  # 02:30 CEST
        "04-02 00:30",
    ]


def test_a_fixed_time_in_the_repeated_hour_fires_once() -> None:
    # 2024-10-27: Berlin goes back from 03:00 CEST to 02:00 CET; 02:30 happens twice.
    cron = parse("30 2 * * *", "Europe/Berlin", "test")
    assert fires(cron, at(2024, 10, 26, 12), 3) == [
        "10-27 00:30",  # the first 02:30 (CEST) only
        "10-28 01:30",  # 02:30 CET
        "10-29 01:30",
    ]


def test_an_interval_keeps_real_time_across_both_changes() -> None:
    cron = parse("*/30 * * * *", "Europe/Berlin", "test")
    autumn = fires(cron, at(2024, 10, 27, 1, 50), 5)
    assert autumn == ["10-27 00:00", "10-27 00:30", "10-27 01:00", "10-27 01:30", "10-27 02:00"]
    spring = fires(cron, at(2024, 3, 31, 1, 50), 3)
    assert spring == ["03-31 01:00", "03-31 01:30", "03-31 02:00"]  # 01:00 UTC = 03:00 CEST


def test_local_time_follows_the_zone() -> None:
    cron = parse("0 9 * * *", "Europe/Berlin", "test")
    winter, summer = cron.next_after(at(2024, 1, 10)), cron.next_after(at(2024, 7, 10))
    assert datetime.fromtimestamp(winter, UTC).hour == 8
    assert datetime.fromtimestamp(summer, UTC).hour == 7
    assert cron.local(summer).hour == 9


def test_walking_back_agrees_with_walking_forward_over_a_dst_change() -> None:
    cron = parse("30 2 * * *", "Europe/Berlin", "test")
    start, end = at(2024, 3, 29), at(2024, 4, 2)
    forward, t = [], start
    while (t := cron.next_after(t)) <= end:
        forward.append(t)
    assert cron.latest(start, end, 100) == (forward, False)


# -- declaring ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "zone", "says"),
    [
        ("*/15 * * *", "UTC", "needs 5 fields"),
        ("61 * * * *", "UTC", "not valid: Bad minute"),
        ("0 0 30 2 *", "UTC", "not valid"),
        ("every day", "UTC", "needs 5 fields"),
        ("0 3 * * *", "Mars/Olympus", "unknown timezone 'Mars/Olympus'"),
        ("0 3 * * *", "", "timezone must be an IANA name"),
    ],
)
def test_a_bad_schedule_says_what_is_wrong(expr: str, zone: str, says: str) -> None:
    with pytest.raises(ConfigurationError, match="schedule 'x'") as caught:
        parse(expr, zone, "schedule 'x'")
    assert says in str(caught.value)


# -- catch-up ------------------------------------------------------------------------------

HOURLY = Cron("0 * * * *", "UTC")
H = 3600.0


def test_on_time_every_policy_starts_the_one_fire() -> None:
    for policy in ("all", "latest", "none"):
        got = plan(HOURLY, policy, 5 * H, 5 * H + 0.05)
        assert (got.fires, got.skipped, got.next_fire_at) == ((5 * H,), 0, 6 * H)


def test_after_an_outage_all_starts_every_missed_fire() -> None:
    got = plan(HOURLY, "all", 5 * H, 9 * H + 600)
    assert got.fires == (5 * H, 6 * H, 7 * H, 8 * H, 9 * H)
    assert (got.skipped, got.more_skipped, got.next_fire_at) == (0, False, 10 * H)


def test_after_an_outage_latest_starts_the_last_missed_fire() -> None:
    got = plan(HOURLY, "latest", 5 * H, 9 * H + 600)
    assert (got.fires, got.skipped, got.next_fire_at) == ((9 * H,), 4, 10 * H)


def test_after_an_outage_none_skips_to_the_next_future_fire() -> None:
    got = plan(HOURLY, "none", 5 * H, 9 * H + ON_TIME + 1)
    assert (got.fires, got.skipped, got.next_fire_at) == ((), 5, 10 * H)
    # A fire at most ON_TIME late is not missed.
    assert plan(HOURLY, "none", 5 * H, 9 * H + ON_TIME).fires == (9 * H,)


def test_all_is_capped_at_the_latest_fires_of_a_long_outage() -> None:
    # A year of per-minute fires (525,600) is planned in CATCH_UP_LIMIT steps.
    minutely = Cron("* * * * *", "UTC")
    year = 365 * 24 * H
    got = plan(minutely, "all", 60.0, 60.0 + year)
    assert len(got.fires) == CATCH_UP_LIMIT and got.more_skipped
    assert got.fires[-1] == 60.0 + year and got.fires[0] == 60.0 + year - 60 * (CATCH_UP_LIMIT - 1)


def test_not_yet_due_changes_nothing() -> None:
    assert plan(HOURLY, "all", 6 * H, 5 * H + 10) == plan(HOURLY, "none", 6 * H, 5 * H + 10)
    assert plan(HOURLY, "all", 6 * H, 5 * H + 10).fires == ()


# -- Standard Webhooks --------------------------------------------------------------------


def test_the_signature_matches_the_standard_webhooks_test_vector() -> None:
    key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "X")
    signature = sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def _headers(key: bytes, body: bytes, ts: int, msg: str = "msg_1") -> dict[str, str | None]:
    return {
        "webhook-id": msg,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(key, msg, ts, body),
    }


def test_verify_accepts_a_signed_request_and_any_of_several_signatures() -> None:
    key, body = b"secret-key", b'{"a": 1}'
    headers = _headers(key, body, 1000)
    assert verify(key, headers, body, 1000.0) == "msg_1"
    headers["webhook-signature"] = f"v1,b2xk {headers['webhook-signature']}"
    assert verify(key, headers, body, 1000.0 + 299) == "msg_1"


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"webhook-signature": None}, "sign the request"),
        ({"webhook-id": ""}, "sign the request"),
        ({"webhook-timestamp": "soon"}, "epoch seconds"),
        ({"webhook-timestamp": "699"}, "more than 300 s"),
        ({"webhook-id": "msg_2"}, "does not match"),
        ({"webhook-signature": "v1," + base64.b64encode(b"x" * 32).decode()}, "does not match"),
    ],
)
def test_verify_refuses(change: dict[str, str | None], says: str) -> None:
    key, body = b"secret-key", b'{"a": 1}'
    headers = {**_headers(key, body, 1000), **change}
    with pytest.raises(SignatureError, match=says):
        verify(key, headers, body, 1000.0)


def test_verify_refuses_a_changed_body_and_another_key() -> None:
    key, body = b"secret-key", b'{"a": 1}'
    headers = _headers(key, body, 1000)
    with pytest.raises(SignatureError):
        verify(key, headers, b'{"a": 2}', 1000.0)
    with pytest.raises(SignatureError):
        verify(b"other-key", headers, body, 1000.0)


@pytest.mark.parametrize("secret", [None, "", "whsec_", "whsec_not base64!"])
def test_a_missing_or_malformed_secret_is_a_configuration_error(secret: str | None) -> None:
    with pytest.raises(ConfigurationError, match=r"\$HOOK_SECRET"):
        decode_secret(secret, "HOOK_SECRET")
