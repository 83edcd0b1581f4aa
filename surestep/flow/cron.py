"""Cron expressions in a time zone, and the pure catch-up policy of schedules.

Parsing and iteration are cronsim's, which follows Debian cron on DST changes: a job at
a fixed local time (``30 2 * * *``) that falls in the hour skipped in spring runs once,
right after the change (03:00), and one in the hour repeated in autumn runs once, at its
first occurrence; a job that runs every N minutes or hours (``*/15 * * * *``) keeps
counting real time, so the change neither skips nor doubles a fire.

Times are epoch seconds (as the clock gives them) in and out; the time zone only decides
which instants match.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from surestep.errors import ConfigurationError

#: What a schedule does with the fires it missed while no worker ran.
CATCH_UP = ("latest", "all", "none")
#: catch_up="all" starts at most this many missed fires (the latest ones): an outage of
#: a week under a per-minute schedule would otherwise start 10,080 runs at once.
CATCH_UP_LIMIT = 100
#: catch_up="none" still starts a fire that is at most this late (a worker that looks
#: a moment after the fire time has not missed it); an older one is skipped.
ON_TIME = 60.0


@dataclass(frozen=True)
class Cron:
    """A cron expression in a time zone (IANA name, e.g. ``"Europe/Berlin"``)."""

    expr: str
    timezone: str

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def next_after(self, t: float) -> float:
        """The first fire time strictly after ``t``."""
        start = datetime.fromtimestamp(math.floor(t), self.zone)
        return next(CronSim(self.expr, start)).timestamp()

    def latest(self, since: float, now: float, limit: int) -> tuple[list[float], bool]:
        """The fire times in ``[since, now]``, oldest first: the latest ``limit`` of them,
        and whether there were more. Walks back from ``now``, so a long outage costs no
        more than ``limit`` steps."""
        # CronSim in reverse yields times strictly before its start: start a second later.
        start = datetime.fromtimestamp(math.floor(now) + 1, self.zone)
        found: list[float] = []
        for fire in CronSim(self.expr, start, reverse=True):
            at = fire.timestamp()
            if at < since:
                return found[::-1], False
            if len(found) == limit:
                return found[::-1], True
            found.append(at)
        return found[::-1], False

    def local(self, t: float) -> datetime:
        """The fire time ``t`` as an aware datetime in the schedule's time zone."""
        return datetime.fromtimestamp(t, self.zone)


def parse(expr: str, timezone: str, where: str) -> Cron:
    """A checked :class:`Cron`; a ConfigurationError saying what is wrong otherwise.

    >>> parse("*/15 * * * *", "UTC", "schedule 'x'").next_after(0)
    900.0
    """
    if not isinstance(timezone, str) or not timezone:
        raise ConfigurationError(f"{where}: timezone must be an IANA name such as 'UTC'")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(
            f"{where}: unknown timezone {timezone!r}; give an IANA name such as 'UTC' or "
            f"'Europe/Berlin' (on a system without time zone data: pip install tzdata)"
        ) from None
    if not isinstance(expr, str) or len(expr.split()) not in (5, 6):
        raise ConfigurationError(
            f"{where}: cron {expr!r} needs 5 fields: minute hour day-of-month month "
            f"day-of-week, e.g. '*/15 * * * *' (every 15 minutes) or '0 3 * * *' (03:00 "
            f"daily); a 6th, leading field gives seconds"
        )
    cron = Cron(" ".join(expr.split()), timezone)
    try:
        cron.next_after(datetime(2000, 1, 1, tzinfo=UTC).timestamp())
    except CronSimError as exc:
        raise ConfigurationError(f"{where}: cron {expr!r} is not valid: {exc}") from None
    except StopIteration:
        raise ConfigurationError(f"{where}: cron {expr!r} never fires") from None
    return cron


def check_catch_up(catch_up: str, where: str) -> str:
    if catch_up not in CATCH_UP:
        raise ConfigurationError(
            f"{where}: catch_up={catch_up!r}; use 'latest' (only the last missed fire), "
            f"'all' (every missed fire, at most {CATCH_UP_LIMIT}) or 'none' (skip them)"
        )
    return catch_up


@dataclass(frozen=True)
class Plan:
    """What a sweep does with a due schedule: start ``fires`` (oldest first), let
    ``skipped`` missed fires go (``more_skipped``: and others before them, uncounted),
    and move the schedule on to ``next_fire_at``."""

    fires: tuple[float, ...]
    skipped: int
    more_skipped: bool
    next_fire_at: float


def plan(cron: Cron, catch_up: str, next_fire_at: float, now: float) -> Plan:
    """The fires to start at ``now`` of a schedule due at ``next_fire_at``.

    Every fire in ``[next_fire_at, now]`` has passed: the last of them is on time (or
    nearly), the others were missed while no worker looked. ``catch_up`` decides:
    ``"all"`` starts each (the latest :data:`CATCH_UP_LIMIT`), ``"latest"`` only the
    last, ``"none"`` the last only if it is at most :data:`ON_TIME` seconds late.

    >>> every_hour = Cron("0 * * * *", "UTC")
    >>> plan(every_hour, "latest", 3600.0, 3 * 3600.0 + 5)
    Plan(fires=(10800.0,), skipped=2, more_skipped=False, next_fire_at=14400.0)
    """
    following = cron.next_after(now)
    if next_fire_at > now:
        return Plan((), 0, False, next_fire_at)
    passed, more = cron.latest(next_fire_at, now, CATCH_UP_LIMIT)
    if catch_up == "all" or not passed:
        fires = passed
    elif catch_up == "latest" or now - passed[-1] <= ON_TIME:
        fires = passed[-1:]
    else:
        fires = []
    return Plan(tuple(fires), len(passed) - len(fires), more, following)
