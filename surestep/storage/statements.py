"""The run store's statements on the per-step path, in portable SQL (``?`` placeholders;
the PostgreSQL store translates them)."""

from __future__ import annotations

#: What a claim reads of each due run (``available_at`` last, to order by).
CLAIM_COLUMNS = (
    "id, state, workflow, workflow_version, inputs, lease_token, parent_id, compensating,"
    " trace_context, available_at"
)

#: One event of the append-only log.
EVENT_INSERT = (
    "INSERT INTO surestep_events"
    " (run_id, position, step, from_state, to_state, at, actor, reason, attempt)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

#: A step's attempt recorded over the step's row (the PostgreSQL checkpoint statements
#: say the same with their own values).
STEP_CONFLICT = (
    "ON CONFLICT (run_id, position) DO UPDATE SET state = excluded.state,"
    " output = excluded.output, error = excluded.error, attempts = excluded.attempts,"
    " finished_at = excluded.finished_at, next_attempt_at = excluded.next_attempt_at,"
    " compensation = excluded.compensation, inputs = excluded.inputs"
)

STEP_UPSERT = (
    "INSERT INTO surestep_steps (run_id, position, name, state, output, error, attempts,"
    " started_at, finished_at, next_attempt_at, compensation, inputs)"
    f" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) {STEP_CONFLICT}"
)

#: An attempt, inserted only if the run is still held under the lease token given.
FENCED_ATTEMPT_INSERT = (
    "INSERT INTO surestep_attempts"
    " (run_id, position, attempt, state, started_at, finished_at, worker, error)"
    " SELECT ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM surestep_runs"
    " WHERE id = ? AND lease_token = ? AND state = 'running' {lock})"
    " ON CONFLICT (run_id, position, attempt) DO NOTHING"
)

#: A step attempt's two transitions (into running, and out of it) in one statement.
TWO_EVENTS_INSERT = (
    "INSERT INTO surestep_events"
    " (run_id, position, step, from_state, to_state, at, actor, reason, attempt)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

#: What a run owns, by the column that names it: ``prune`` deletes it with the run
#: (each through an index that leads with that column).
PRUNED_WITH_RUN = (
    ("surestep_steps", "run_id"),
    ("surestep_attempts", "run_id"),
    ("surestep_events", "run_id"),
    ("surestep_llm_calls", "run_id"),
    ("surestep_messages", "run_id"),
    ("surestep_maps", "parent_id"),
    ("surestep_map_shards", "parent_id"),
)
