"""Which workflow versions have unfinished runs, and whether a live worker serves each.

A run is executed only by a worker that registers its workflow *and version*. A deploy
that replaces every version-1 worker by version-2 workers leaves the version-1 runs
pending forever; this is what shows it (``surestep versions``, ``app.versions()``, and
a warning in every worker's log).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from surestep.states import State
from surestep.storage.workers import UNFINISHED, WorkerEntry, WorkerStore

#: States whose runs wait for a worker. (A dead-lettered run or one in review waits for
#: a person first; it is counted, but alone it strands nothing.)
NEEDS_WORKER = frozenset({State.PENDING, State.RUNNING, State.WAITING})


@dataclass(frozen=True)
class VersionRecord:
    """One (workflow, version): its unfinished runs by state and the live workers that
    serve it."""

    workflow: str
    version: str
    runs: Mapping[State, int] = field(default_factory=dict)  # unfinished runs only
    workers: tuple[str, ...] = ()  # ids of the live workers that serve it

    @property
    def served(self) -> bool:
        return bool(self.workers)

    @property
    def unfinished(self) -> int:
        return sum(self.runs.values())

    @property
    def stranded(self) -> int:
        """Runs waiting for a worker that no live worker serves."""
        if self.served:
            return 0
        return sum(n for state, n in self.runs.items() if state in NEEDS_WORKER)


def version_report(
    unfinished: Mapping[tuple[str, str], Mapping[State, int]],
    live: Iterable[WorkerEntry],
) -> list[VersionRecord]:
    """Every version with unfinished runs or a live worker, by workflow then version."""
    servers: dict[tuple[str, str], list[str]] = {}
    for worker in live:
        for pair in worker.serves:
            servers.setdefault(pair, []).append(worker.id)
    keys = sorted(set(unfinished) | set(servers), key=lambda k: (k[0], _version_key(k[1])))
    report = []
    for key in keys:
        counts = unfinished.get(key, {})
        runs = {state: counts[state] for state in UNFINISHED if counts.get(state)}
        report.append(VersionRecord(key[0], key[1], runs, tuple(sorted(servers.get(key, ())))))
    return report


def read_versions(workers: WorkerStore, now: float) -> list[VersionRecord]:
    """The report, from the database as it is at ``now``."""
    return version_report(workers.unfinished(), workers.live(now))


def stranded_warning(report: Sequence[VersionRecord]) -> str | None:
    """The warning a worker logs when runs wait for a version no live worker serves."""
    stranded = [v for v in report if v.stranded]
    if not stranded:
        return None
    listed = "; ".join(
        f"{v.workflow!r} version {v.version!r}: {v.stranded} run(s)" for v in stranded
    )
    return (
        f"unfinished runs wait for workflow versions that no live worker serves ({listed}). "
        f"They stay unfinished until a worker with that version runs: deploy a worker "
        f"that registers it (keep the old code until `surestep versions` shows it "
        f"drained), or serve old and new runs from one function with surestep.patched()"
    )


def _version_key(version: str) -> tuple[int, int | str]:
    # "2" before "10"; versions that are not numbers sort after, by text.
    return (0, int(version)) if version.isdigit() else (1, version)
