"""Cron schedules: ``@app.schedule("*/15 * * * *")`` starts a run at every fire time.

Who fires: the workers, as one of their timers (like review SLAs), so schedules need no
process of their own. Each worker, every ~0.1 s, reads the schedules whose next fire
time has come and, for each, starts the runs its catch-up policy asks for through the
App's idempotent ``start``, with the run id ``schedule:<name>:<fire time, ISO UTC>``;
then it moves the schedule's next fire time on, from the value it read (compare-and-set).

Why that is exactly once with any number of workers, and across restarts:

* Two workers that see the same fire both call ``start`` with the same run id: the
  database keeps one run, the other call returns it. Whichever moves ``next_fire_at``
  first wins; the other's compare-and-set changes nothing.
* ``next_fire_at`` moves only after the runs are stored. A worker that dies in between
  leaves it where it was; the next worker plans the same fires again and ``start``
  returns the runs that exist. So a restart never repeats a fire, and never skips one
  (beyond what ``catch_up`` says to skip).

This is the idempotent design rather than one transaction around both: ``start`` is the
one way runs begin (tracing, wake-ups, input checks), and it commits on its own.
"""

from __future__ import annotations

import inspect
import json
import logging
import typing
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import TypeAdapter

from surestep.errors import ConfigurationError, StorageError, SurestepError
from surestep.flow.cron import Cron, check_catch_up, parse, plan
from surestep.flow.schedule_store import Declared, ScheduleRecord, ScheduleStore
from surestep.names import check_name

if TYPE_CHECKING:
    from surestep.clock import Clock
    from surestep.storage import Store

log = logging.getLogger("surestep.schedules")

_DATETIME = TypeAdapter(datetime)


class ScheduleHost(Protocol):
    """What schedules need of their App (a :class:`surestep.App` is one)."""

    clock: Clock
    actor: str

    @property
    def store(self) -> Store: ...

    def start(self, workflow: Any, /, *args: Any, **kwargs: Any) -> object: ...

    def wake_workers(self) -> None: ...


@dataclass(frozen=True)
class Schedule:
    """A schedule as declared in code; its workflow has the schedule's name."""

    name: str
    cron: Cron
    catch_up: str
    version: str
    workflow: Callable[..., Any]


class ScheduleNotFoundError(ConfigurationError):
    """No schedule of that name is stored (no worker that declares it has started)."""

    code = "schedule_not_found"


def fire_run_id(name: str, fire: float) -> str:
    """The run id of ``name``'s fire at ``fire`` (epoch seconds): the idempotency key.

    >>> fire_run_id("reindex", 0.0)
    'schedule:reindex:1970-01-01T00:00:00Z'
    """
    return f"schedule:{name}:{datetime.fromtimestamp(fire, UTC):%Y-%m-%dT%H:%M:%SZ}"


class Schedules:
    """The App's schedules: a worker timer, and the operations of ``surestep schedules``."""

    def __init__(self, host: ScheduleHost, declare_workflow: Callable[..., Any]) -> None:
        self._host = host
        self._declare_workflow = declare_workflow
        self._declared: dict[str, Schedule] = {}
        self._synced: tuple[Store, ScheduleStore] | None = None

    def add(
        self,
        fn: Callable[..., Any],
        cron: str,
        *,
        name: str,
        timezone: str,
        catch_up: str,
        version: str,
    ) -> Callable[..., Any]:
        """Check the schedule, then register ``fn`` as the workflow ``name``."""
        where = f"schedule {name!r}"
        check_name("schedule name", name)
        parsed = parse(cron, timezone, where)
        check_catch_up(catch_up, where)
        _check_signature(fn, where)
        if name in self._declared:
            raise ConfigurationError(f"{where} is declared twice; give each a name of its own")
        workflow: Callable[..., Any] = self._declare_workflow(name, version)(fn)
        self._declared[name] = Schedule(name, parsed, catch_up, version, workflow)
        self._synced = None  # the next sweep writes the new declaration
        return workflow

    def declared(self) -> list[Schedule]:
        return list(self._declared.values())

    # -- the worker's timer --------------------------------------------------------------

    def next_due(self) -> float | None:
        if not self._declared:
            return None
        return self._rows().next_due(list(self._declared))

    def sweep(self, now: float | None = None, actor: str | None = None) -> list[str]:
        """Start the runs of the schedules whose fire time has come; return their ids.
        Workers do this on their own; call it where no worker runs."""
        if not self._declared:
            return []
        rows = self._rows()
        now = self._host.clock.now() if now is None else now
        started: list[str] = []
        for record in rows.due(list(self._declared), now):
            started += self._fire(rows, record, now)
        return started

    def _fire(self, rows: ScheduleStore, record: ScheduleRecord, now: float) -> list[str]:
        schedule = self._declared[record.name]
        # The stored cron: the one every worker agrees on (written at worker start).
        cron = Cron(record.cron, record.timezone)
        todo = plan(cron, record.catch_up, record.next_fire_at, now)
        if todo.skipped or todo.more_skipped:
            log.warning(
                "schedule %s: skipping %s%d missed fire(s) (catch_up=%s)",
                record.name,
                "more than " if todo.more_skipped else "",
                todo.skipped,
                record.catch_up,
            )
        started = []
        for fire in todo.fires:
            run_id = fire_run_id(record.name, fire)
            try:
                self._host.start(schedule.workflow, fired_at=cron.local(fire), run_id=run_id)
            except StorageError:
                raise  # nothing moves: the next sweep tries this fire again
            except SurestepError:
                # Not the database: the same call would fail again at every sweep. The
                # fire is logged and left, so later fires still happen.
                log.exception("schedule %s: cannot start run %s", record.name, run_id)
                continue
            started.append(run_id)
        last = todo.fires[-1] if todo.fires else None
        rows.advance(record.name, record.next_fire_at, todo.next_fire_at, last, now)
        return started

    def _rows(self) -> ScheduleStore:
        """The schedules table, written with what the code declares on first use in a
        process (so at worker start): a changed cron takes effect then."""
        store = self._host.store
        if self._synced is None or self._synced[0] is not store:
            rows = ScheduleStore(store)
            now = self._host.clock.now()
            rows.declare(
                [
                    Declared(
                        s.name,
                        s.cron.expr,
                        s.cron.timezone,
                        s.catch_up,
                        s.version,
                        s.cron.next_after(now),
                    )
                    for s in self._declared.values()
                ],
                now,
            )
            self._synced = (store, rows)
        return self._synced[1]

    # -- operations (any App on the database, whatever it declares) ---------------------

    def records(self) -> list[ScheduleRecord]:
        """Every stored schedule, by name."""
        return self._rows().all()

    def get(self, name: str) -> ScheduleRecord:
        record = self._rows().get(name)
        if record is None:
            known = ", ".join(r.name for r in self._rows().all()) or "none"
            raise ScheduleNotFoundError(
                f"no schedule named {name!r} is stored (known: {known}); a schedule is "
                f"stored when a worker whose App declares it starts"
            )
        return record

    def pause(self, name: str) -> ScheduleRecord:
        """Stop ``name`` firing until :meth:`resume`."""
        self.get(name)
        self._rows().set_paused(name, True, None, self._host.clock.now())
        return self.get(name)

    def resume(self, name: str) -> ScheduleRecord:
        """Fire ``name`` again from its next fire time after now: the fires that fell
        in the pause are skipped (a pause is on purpose, not an outage to catch up)."""
        record = self.get(name)
        now = self._host.clock.now()
        following = Cron(record.cron, record.timezone).next_after(now)
        self._rows().set_paused(name, False, following, now)
        return self.get(name)

    def trigger(self, name: str) -> str:
        """Start a run of ``name`` now, besides its schedule, with ``fired_at`` = now;
        return its run id (``schedule:<name>:manual:<now>``). Works on any App: the
        stored schedule gives the workflow's version and time zone."""
        record = self.get(name)
        now = self._host.clock.now()
        stamp = datetime.fromtimestamp(now, UTC)
        run_id = f"schedule:{name}:manual:{stamp:%Y-%m-%dT%H:%M:%S.%fZ}"
        fired_at = Cron(record.cron, record.timezone).local(now)
        # As the workflow's codec encodes `fired_at: datetime` (checked at declaration),
        # so the run decodes in the worker that declares it.
        inputs = json.dumps(
            {"fired_at": _DATETIME.dump_python(fired_at, mode="json")}, separators=(",", ":")
        )
        store = self._host.store
        if store.create_run(run_id, name, record.workflow_version, inputs, now, self._host.actor):
            self._host.wake_workers()
        return run_id


def _check_signature(fn: Callable[..., Any], where: str) -> None:
    """A scheduled function takes ``fired_at: datetime`` (and nothing else it needs)."""
    wanted = f"{where}: the function must take one parameter, `fired_at: datetime`"
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        raise ConfigurationError(f"{wanted}; cannot read the signature of {fn!r}") from None
    param = params.get("fired_at")
    if param is None or param.kind not in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
        raise ConfigurationError(f"{wanted} (it has: {', '.join(params) or 'none'})")
    required = [
        p.name
        for p in params.values()
        if p.name != "fired_at"
        and p.default is p.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if required:
        raise ConfigurationError(f"{wanted}; give {', '.join(required)} a default")
    try:
        hint = typing.get_type_hints(fn).get("fired_at")
    except Exception:  # an annotation that does not resolve: reported below
        hint = None
    if hint is not datetime:
        raise ConfigurationError(f"{wanted}; annotate it as `datetime` (from datetime)")
