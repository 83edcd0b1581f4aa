"""Bulk redrive: send many dead-lettered runs back to work, one failure not stopping the rest.

``App.retry_many`` is the entry point; ``surestep retry`` calls it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Protocol

from surestep.errors import ConfigurationError, SurestepError
from surestep.records import RunRecord
from surestep.states import State


class RedriveHost(Protocol):
    """What redriving needs of an App."""

    def get_run(self, run_id: str) -> RunRecord: ...

    def list_runs(
        self, state: State | str | None = None, workflow: str | None = None, limit: int = 50
    ) -> list[RunRecord]: ...

    def retry(self, run_id: str, *, actor: str | None = None) -> list[str]: ...


# Selecting "every dead letter" asks the store for at most this many runs; the listing
# query takes a limit, and no real queue comes near it.
_EVERY: Final = 2**62


@dataclass(frozen=True)
class RedriveOutcome:
    """What ``retry_many`` did (or, with ``dry_run``, would do) with one run."""

    run_id: str
    steps: tuple[str, ...] = ()  # the steps given a fresh retry budget
    error: str | None = None  # why this run was not redriven
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


Progress = Callable[[RedriveOutcome, int], None]


def redrive_many(
    app: RedriveHost,
    run_ids: Sequence[str] | None,
    *,
    workflow: str | None,
    since: datetime | float | None,
    error: str | None,
    dry_run: bool,
    actor: str,
    progress: Progress | None,
) -> list[RedriveOutcome]:
    """Redrive ``run_ids``, or every dead letter that matches the filters."""
    if run_ids is not None and (workflow, since, error) != (None, None, None):
        raise ConfigurationError(
            "workflow=, since= and error= select dead letters; they cannot be combined "
            "with run_ids (give one or the other)"
        )
    targets = list(run_ids) if run_ids is not None else select(app, workflow, since, error)
    outcomes = []
    for run_id in targets:
        outcome = _one(app, run_id, dry_run, actor)
        outcomes.append(outcome)
        if progress is not None:
            progress(outcome, len(targets))
    return outcomes


def select(
    app: RedriveHost, workflow: str | None, since: datetime | float | None, error: str | None
) -> list[str]:
    """The dead-lettered runs of ``workflow``, dead-lettered at or after ``since``, whose
    error is of type ``error`` (``ConnectionError`` matches ``builtins`` and qualified
    names alike), oldest first so a redrive keeps their order."""
    after = since.timestamp() if isinstance(since, datetime) else since
    found = app.list_runs(State.DEAD_LETTER, workflow, _EVERY)
    chosen = [
        run
        for run in found
        if (after is None or run.updated_at >= after) and _error_matches(run, error)
    ]
    chosen.sort(key=lambda run: (run.updated_at, run.created_at, run.id))
    return [run.id for run in chosen]


def _error_matches(run: RunRecord, wanted: str | None) -> bool:
    if wanted is None:
        return True
    kind = str((run.error or {}).get("type", ""))
    return kind == wanted or kind.endswith(f".{wanted}")


def _one(app: RedriveHost, run_id: str, dry_run: bool, actor: str) -> RedriveOutcome:
    try:
        if dry_run:
            run = app.get_run(run_id)
            if run.state != State.DEAD_LETTER:
                return RedriveOutcome(
                    run_id, error=f"run {run_id!r} is {run.state}, not dead_letter", dry_run=True
                )
            dead = tuple(s.name for s in run.steps if s.state == State.DEAD_LETTER)
            return RedriveOutcome(run_id, dead, dry_run=True)
        return RedriveOutcome(run_id, tuple(app.retry(run_id, actor=actor)))
    except SurestepError as exc:  # one bad id does not stop the others
        return RedriveOutcome(run_id, error=str(exc), dry_run=dry_run)
