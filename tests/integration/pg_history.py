"""Who held each run when, from its event log, and who executed each step, from the
workers' side-effect logs; and the checks that tie the two together.

Why the event log's order can be trusted: every event of a run is inserted by a
transaction that holds a lock on the run's row (claim, finish and release update it; a
step's checkpoint reads it ``FOR SHARE`` as its fence) and keeps it until it commits, and
event ids come from a sequence drawn at insert time. So two transactions that change one
run get event ids in the order they took the row, which is the order they took effect.

What :func:`check_executions` asserts, for runs of ``chain`` that all succeeded:

* The run's transitions form one chain (each starts in the state the last one left),
  so a run is claimed only when it is not running: the *holds* (claim to the next
  transition out of running) never overlap, whoever the workers are. The ``n``-th claim
  holds lease token ``n``.
* A hold ends by its holder's own transition, or by a recovery from another worker whose
  reason names the holder.
* Every step event, hence every recorded attempt, lies inside a hold of the worker that
  wrote it: nothing was recorded by a worker that did not hold the run at that moment.
* Every step committed once: one successful attempt, with the right output.
* No committed step was executed again: a step committed under hold ``c`` was started
  under no hold after ``c`` (and each side-effect line's token names a hold of the very
  process that wrote it); under ``c`` itself it was started exactly once, and that
  execution ran to its end.
* Executions that were not committed are those in flight when their hold was lost: at
  most one per lost hold, and it is the last step that hold started.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from surestep import EventRecord, RunRecord, State

Line = tuple[str, str, int]


def _pid_of(worker_id: str) -> int:
    return int(worker_id.rsplit(":", 2)[1])


@dataclass(frozen=True)
class Hold:
    """One claim of a run, until the transition that took the run out of running."""

    run_id: str
    token: int
    worker: str
    claim: EventRecord
    exit: EventRecord | None  # None: still running

    def contains(self, event_id: int) -> bool:
        return self.claim.id < event_id and (self.exit is None or event_id < self.exit.id)

    @property
    def lost(self) -> bool:
        """The holder did not settle the run itself: it was recovered from it."""
        return self.exit is not None and self.exit.to_state == State.PENDING


def holds(record: RunRecord) -> list[Hold]:
    """The holds of a run, in order; asserts that its transitions form one chain."""
    run_events = [e for e in record.events if e.position is None]
    assert run_events, f"{record.id}: no events"
    first, *rest = run_events
    assert (first.from_state, first.to_state) == (None, State.PENDING), first
    found: list[Hold] = []
    state, claim = State.PENDING, None
    for event in rest:
        assert event.from_state == state, (
            f"{record.id}: event {event.id} ({event.from_state} -> {event.to_state} by "
            f"{event.actor}) does not start from the run's state {state}"
        )
        if event.to_state == State.RUNNING:
            claim = event
        elif event.from_state == State.RUNNING:
            assert claim is not None
            hold = Hold(record.id, len(found) + 1, claim.actor, claim, event)
            if event.actor != hold.worker:
                assert event.to_state == State.PENDING and hold.worker in (event.reason or ""), (
                    f"{record.id}: {event.actor} took the run out of running from "
                    f"{hold.worker} without recovering it: {event}"
                )
            found.append(hold)
            claim = None
        state = event.to_state
    if claim is not None:
        found.append(Hold(record.id, len(found) + 1, claim.actor, claim, None))
    return found


@dataclass
class History:
    """What :func:`check_executions` found."""

    holds: dict[str, list[Hold]]
    #: (idempotency key, pid, token): executions that never committed.
    uncommitted: list[tuple[str, int, int]]

    @property
    def lost_holds(self) -> list[Hold]:
        return [h for hs in self.holds.values() for h in hs if h.lost]


def check_executions(
    records: Iterable[RunRecord],
    logs: Mapping[int, Sequence[Line]],
    steps: int,
    step_output: Callable[[RunRecord, int], object],
    run_output: Callable[[RunRecord], object],
) -> History:
    """Assert the module's guarantees for ``records`` (runs of ``chain`` with ``steps``
    steps, all finished) against the side-effect ``logs`` of every worker process."""
    started: dict[str, list[tuple[int, int]]] = defaultdict(list)
    finished: dict[str, set[tuple[int, int]]] = defaultdict(set)
    for pid, lines in logs.items():
        seen: dict[tuple[str, int], list[str]] = defaultdict(list)
        for key, event, token in lines:
            seen[key, token].append(event)
        for (key, token), events in seen.items():
            # Under one hold a step executes at most once (no step here ever fails), and
            # its "done" follows its "start".
            assert events in (["start"], ["start", "done"]), f"{key} in {pid}: {events}"
            started[key].append((pid, token))
            if events == ["start", "done"]:
                finished[key].add((pid, token))

    history = History({}, [])
    keys: set[str] = set()
    for record in records:
        assert record.state == State.SUCCESS, f"{record.id} is {record.state}"
        assert record.output == run_output(record), record.id
        assert record.lease_owner is None, record.id
        run_holds = holds(record)
        history.holds[record.id] = run_holds
        by_token = {h.token: h for h in run_holds}
        last = run_holds[-1]
        assert last.exit is not None and last.exit.to_state == State.SUCCESS, last

        for event in record.events:
            if event.position is None:
                continue
            holders = [h for h in run_holds if h.contains(event.id)]
            assert [h.worker for h in holders] == [event.actor], (
                f"{record.id}: step event {event.id} ({event.step} at {event.position}, "
                f"{event.from_state} -> {event.to_state}) written by {event.actor} while "
                f"the run was held by {[h.worker for h in holders]}"
            )

        assert [s.position for s in record.steps] == list(range(steps)), record.id
        in_flight: dict[int, list[int]] = defaultdict(list)  # token -> positions
        started_under: dict[int, list[int]] = defaultdict(list)  # token -> positions
        for step in record.steps:
            key = f"{record.id}:{step.position}"
            keys.add(key)
            assert step.state == State.SUCCESS, key
            assert step.output == step_output(record, step.position), key
            [attempt] = step.attempt_records
            assert (attempt.attempt, attempt.state, step.attempts) == (1, State.SUCCESS, 1), key
            [commit] = [
                e
                for e in record.events
                if e.position == step.position
                and e.attempt == attempt.attempt
                and e.to_state == State.SUCCESS
            ]
            assert commit.actor == attempt.worker, key
            [committed] = [h for h in run_holds if h.contains(commit.id)]

            assert started[key], f"{key} was committed, but no process says it executed it"
            for pid, token in started[key]:
                hold = by_token.get(token)
                assert hold is not None and _pid_of(hold.worker) == pid, (
                    f"{key} was started by process {pid} under lease {token}, which it "
                    f"never held: {hold}"
                )
                assert token <= committed.token, (
                    f"{key} was committed under lease {committed.token} by "
                    f"{committed.worker}, and executed again afterwards by {hold.worker} "
                    f"under lease {token}"
                )
                started_under[token].append(step.position)
                if token < committed.token:
                    assert hold.lost, f"{key} started under {hold}, which was not lost"
                    in_flight[token].append(step.position)
                    history.uncommitted.append((key, pid, token))
            committer = (_pid_of(committed.worker), committed.token)
            assert started[key].count(committer) == 1, (key, started[key])
            assert committer in finished[key], f"{key}: the committed execution did not finish"

        for token, positions in in_flight.items():
            assert positions == [max(started_under[token])], (
                f"{record.id}: lease {token} ({by_token[token].worker}) left steps "
                f"{positions} uncommitted; only its last step, in flight when it lost the "
                f"run, may be (it started {sorted(started_under[token])})"
            )

    strays = set(started) - keys
    assert not strays, f"steps executed that belong to no run checked: {sorted(strays)[:5]}"
    return history
