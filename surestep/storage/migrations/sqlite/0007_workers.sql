-- surestep schema 7: the workers that run, and the workflow versions each serves, so that
-- `surestep versions` and the workers themselves can tell when unfinished runs are of a
-- version no live worker serves (a deploy that dropped it would strand them).
CREATE TABLE surestep_workers (
    id            TEXT PRIMARY KEY,
    host          TEXT NOT NULL,
    pid           INTEGER NOT NULL,
    started_at    REAL NOT NULL,
    heartbeat_at  REAL NOT NULL,
    -- a worker not heard from for its lease length is taken for dead
    lease_seconds REAL NOT NULL,
    -- JSON list of [workflow, version] pairs
    serves        TEXT NOT NULL,
    -- set on a clean shutdown
    stopped_at    REAL
);

-- Unfinished runs counted by workflow, version and state from this index alone, however
-- many finished runs the table holds.
CREATE INDEX surestep_runs_unfinished ON surestep_runs (state, workflow, workflow_version)
    WHERE state IN ('pending', 'running', 'waiting', 'needs_review', 'dead_letter');
