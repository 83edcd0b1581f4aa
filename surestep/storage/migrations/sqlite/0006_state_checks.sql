-- surestep schema 6: the database refuses what no surestep would write. A state outside
-- the vocabulary made every worker's claim fail; a pending run without a due time, or a
-- running one without a lease expiry, is never claimed or recovered: stuck for good.
-- SQLite cannot add a CHECK to a table, so triggers check each written row of the run
-- table; rows written before this schema are not checked (workers quarantine a corrupt
-- one). The per-step tables (steps, attempts, events) get no triggers here: a trigger
-- costs ~10 us a row, three to four rows a step, on the engine's per-step path. What
-- a worker reads of them is checked when it claims a run (a bad state or column
-- quarantines that run); PostgreSQL checks them natively (CHECK constraints).

CREATE TRIGGER surestep_runs_state_insert BEFORE INSERT ON surestep_runs
    WHEN NEW.state NOT IN ('pending', 'running', 'waiting', 'needs_review', 'success', 'failed', 'dead_letter', 'cancelled')
    OR (NEW.compensating IS NOT NULL AND NEW.compensating NOT IN ('pending', 'running', 'waiting', 'needs_review', 'success', 'failed', 'dead_letter', 'cancelled'))
BEGIN
    SELECT RAISE(ABORT, 'surestep_runs.state and .compensating must be surestep states');
END;

CREATE TRIGGER surestep_runs_state_update BEFORE UPDATE OF state, compensating ON surestep_runs
    WHEN NEW.state NOT IN ('pending', 'running', 'waiting', 'needs_review', 'success', 'failed', 'dead_letter', 'cancelled')
    OR (NEW.compensating IS NOT NULL AND NEW.compensating NOT IN ('pending', 'running', 'waiting', 'needs_review', 'success', 'failed', 'dead_letter', 'cancelled'))
BEGIN
    SELECT RAISE(ABORT, 'surestep_runs.state and .compensating must be surestep states');
END;

CREATE TRIGGER surestep_runs_claimable_insert BEFORE INSERT ON surestep_runs
    WHEN (NEW.state = 'pending' AND NEW.available_at IS NULL)
    OR (NEW.state = 'running' AND NEW.lease_expires_at IS NULL)
BEGIN
    SELECT RAISE(ABORT, 'a pending run needs available_at and a running run needs lease_expires_at');
END;

CREATE TRIGGER surestep_runs_claimable_update BEFORE UPDATE OF state, available_at, lease_expires_at ON surestep_runs
    WHEN (NEW.state = 'pending' AND NEW.available_at IS NULL)
    OR (NEW.state = 'running' AND NEW.lease_expires_at IS NULL)
BEGIN
    SELECT RAISE(ABORT, 'a pending run needs available_at and a running run needs lease_expires_at');
END;
