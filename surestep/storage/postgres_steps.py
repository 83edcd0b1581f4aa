"""The per-step checkpoint on PostgreSQL: one run's in one statement, or the checkpoints
of several runs of one process in one statement (their group commit, see
:mod:`.group_commit`): one round trip, one executor start-up and one commit for all.

Data-modifying CTEs share one snapshot, and each later insert runs only for the rows
whose fence held and whose attempt was not recorded before (a retried commit), so the
batched statement is fenced, idempotent and atomic per run like the single one. It is
one transaction, though: a row that breaks a constraint fails the whole statement, and
the store then writes that batch's checkpoints one by one, so that the others commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from surestep.states import State
from surestep.storage.rows import StepOutcome
from surestep.storage.statements import STEP_CONFLICT

# The whole per-step checkpoint in one statement, so it costs one round trip and the
# commit. A data-modifying CTE runs to its end whether or not it is read, so only the
# fence is returned: the step's and the events' RETURNING lists cost executor work and
# nothing reads them.
RECORD_STEP = f"""
WITH fence AS (
    SELECT 1 FROM surestep_runs
    WHERE id = %(run)s AND lease_token = %(token)s AND state = 'running' FOR SHARE
), attempt AS (
    INSERT INTO surestep_attempts
        (run_id, position, attempt, state, started_at, finished_at, worker, error)
    SELECT %(run)s, %(position)s::integer, %(attempt)s::integer, %(attempt_state)s,
        %(started)s::double precision, %(finished)s::double precision, %(worker)s,
        %(error)s::text
    WHERE EXISTS (SELECT 1 FROM fence)
    ON CONFLICT (run_id, position, attempt) DO NOTHING
    RETURNING 1
), step AS (
    INSERT INTO surestep_steps (run_id, position, name, state, output, error, attempts,
        started_at, finished_at, next_attempt_at, compensation, inputs)
    SELECT %(run)s, %(position)s::integer, %(name)s, %(to_state)s, %(output)s::text,
        %(error)s::text, %(attempt)s::integer, %(started)s::double precision,
        %(finished)s::double precision, %(next_at)s::double precision,
        %(compensation)s::text, %(inputs)s::text
    WHERE EXISTS (SELECT 1 FROM attempt)
    {STEP_CONFLICT}
), events AS (
    INSERT INTO surestep_events
        (run_id, position, step, from_state, to_state, at, actor, reason, attempt)
    SELECT %(run)s, %(position)s::integer, %(name)s, e.from_state, e.to_state, e.at,
        %(worker)s, e.reason, %(attempt)s::integer
    FROM (VALUES
        (1, %(from_state)s::text, 'running', %(started)s::double precision, NULL::text),
        (2, 'running', %(to_state)s::text, %(finished)s::double precision, %(reason)s::text)
    ) AS e (n, from_state, to_state, at, reason)
    WHERE EXISTS (SELECT 1 FROM attempt)
    ORDER BY e.n
)
SELECT EXISTS (SELECT 1 FROM fence)
"""

# The checkpoints of several runs (an async workflow's gathered steps may put two of one
# run in a batch; a checkpoint is told by its run and position), passed as one
# array per column and fenced row by row, each by its own run's lease token. Returns the
# runs whose fence held. A run's row that another transaction has locked (a heartbeat
# renewing this worker's leases, a cancel) is skipped, not waited for: waiting for one
# row while holding the others would deadlock with a statement that locks the same rows
# in another order (a heartbeat's UPDATE does). The store writes a run left out, whether
# skipped or fenced off, on its own afterwards, where it can wait holding nothing, and
# learns there whether its lease still holds. The two events of a checkpoint are
# numbered together, in order.
RECORD_STEPS = f"""
WITH input AS (
    SELECT * FROM unnest(%(run)s::text[], %(token)s::bigint[], %(position)s::integer[],
        %(attempt)s::integer[], %(attempt_state)s::text[], %(started)s::double precision[],
        %(finished)s::double precision[], %(worker)s::text[], %(error)s::text[],
        %(name)s::text[], %(to_state)s::text[], %(from_state)s::text[], %(output)s::text[],
        %(next_at)s::double precision[], %(reason)s::text[], %(compensation)s::text[],
        %(inputs)s::text[]
    ) WITH ORDINALITY AS i (run, token, position, attempt, attempt_state, started,
        finished, worker, error, name, to_state, from_state, output, next_at, reason,
        compensation, inputs, n)
), fence AS (
    SELECT r.id FROM surestep_runs r JOIN input i ON r.id = i.run AND r.lease_token = i.token
    WHERE r.state = 'running' FOR SHARE OF r SKIP LOCKED
), attempt AS (
    INSERT INTO surestep_attempts
        (run_id, position, attempt, state, started_at, finished_at, worker, error)
    SELECT i.run, i.position, i.attempt, i.attempt_state, i.started, i.finished, i.worker,
        i.error
    FROM input i WHERE i.run IN (SELECT id FROM fence)
    ON CONFLICT (run_id, position, attempt) DO NOTHING
    RETURNING run_id, position
), step AS (
    INSERT INTO surestep_steps (run_id, position, name, state, output, error, attempts,
        started_at, finished_at, next_attempt_at, compensation, inputs)
    SELECT i.run, i.position, i.name, i.to_state, i.output, i.error, i.attempt, i.started,
        i.finished, i.next_at, i.compensation, i.inputs
    FROM input i WHERE (i.run, i.position) IN (SELECT run_id, position FROM attempt)
    {STEP_CONFLICT}
), events AS (
    INSERT INTO surestep_events
        (run_id, position, step, from_state, to_state, at, actor, reason, attempt)
    SELECT i.run, i.position, i.name, e.from_state, e.to_state, e.at, i.worker, e.reason,
        i.attempt
    FROM input i CROSS JOIN LATERAL (VALUES
        (1, i.from_state, 'running', i.started, NULL::text),
        (2, 'running', i.to_state, i.finished, i.reason)
    ) AS e (k, from_state, to_state, at, reason)
    WHERE (i.run, i.position) IN (SELECT run_id, position FROM attempt)
    ORDER BY i.n, e.k
)
SELECT id FROM fence
"""

_COLUMNS = (
    "run",
    "token",
    "position",
    "attempt",
    "attempt_state",
    "started",
    "finished",
    "worker",
    "error",
    "name",
    "to_state",
    "from_state",
    "output",
    "next_at",
    "reason",
    "compensation",
    "inputs",
)


def step_params(run_id: str, token: int, worker: str, o: StepOutcome) -> dict[str, Any]:
    """The values of one checkpoint, named as both statements name them."""
    return {
        "run": run_id,
        "token": token,
        "position": o.position,
        "attempt": o.attempt,
        "attempt_state": State.SUCCESS if o.to_state == State.SUCCESS else State.FAILED,
        "started": o.started_at,
        "finished": o.finished_at,
        "worker": worker,
        "error": o.error,
        "name": o.name,
        "to_state": o.to_state,
        "from_state": o.from_state,
        "output": o.output,
        "next_at": o.next_attempt_at,
        "reason": o.reason,
        "compensation": o.compensation,
        "inputs": o.inputs,
    }


def batch_params(checkpoints: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """Several checkpoints' values as one array per column, for ``RECORD_STEPS``."""
    return {column: [c[column] for c in checkpoints] for column in _COLUMNS}
