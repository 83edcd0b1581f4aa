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

import json
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
# run in a batch; a checkpoint is told by its run and position), passed as one JSON
# array of records (``batch_params``: one text parameter; an array per column cost the
# worker twice the CPU to send) and fenced row by row, each by its own run's lease token,
# each run's row found by its key (a lateral lookup per checkpoint: the plan cannot turn
# into a scan of every running run, whatever it guesses of the batch's size). Returns
# the runs whose fence held. A run's row that another transaction has locked (a
# heartbeat renewing this worker's leases, a cancel) is skipped, not waited for: waiting
# for one row while holding the others would deadlock with a statement that locks the
# same rows in another order (a heartbeat's UPDATE does). The store writes a run left
# out, whether skipped or fenced off, on its own afterwards, where it can wait holding
# nothing, and learns there whether its lease still holds. The two events of a
# checkpoint are numbered together, in order.
_TYPES = {
    "run": "text",
    "token": "bigint",
    "position": "integer",
    "attempt": "integer",
    "attempt_state": "text",
    "started": "double precision",
    "finished": "double precision",
    "worker": "text",
    "error": "text",
    "name": "text",
    "to_state": "text",
    "from_state": "text",
    "output": "text",
    "next_at": "double precision",
    "reason": "text",
    "compensation": "text",
    "inputs": "text",
    "n": "integer",  # the checkpoint's place in the batch
}
RECORD_STEPS = f"""
WITH input AS (
    SELECT * FROM json_to_recordset(%(batch)s::json)
        AS i ({", ".join(f"{column} {kind}" for column, kind in _TYPES.items())})
), fence AS (
    SELECT r.id FROM input i CROSS JOIN LATERAL (
        SELECT id FROM surestep_runs
        WHERE id = i.run AND lease_token = i.token AND state = 'running'
        FOR SHARE SKIP LOCKED
    ) AS r
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


def batch_params(checkpoints: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Several checkpoints' values as one JSON array of records, for ``RECORD_STEPS``.
    A float's JSON text is its shortest exact form, so times arrive bit for bit."""
    records = [checkpoint | {"n": n} for n, checkpoint in enumerate(checkpoints)]
    return {"batch": json.dumps(records, ensure_ascii=False)}
