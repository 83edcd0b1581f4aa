-- surestep schema 6: the database refuses what no surestep would write. A state outside
-- the vocabulary made every worker's claim fail; a pending run without a due time, or a
-- running one without a lease expiry, is never claimed or recovered: stuck for good.
-- SQLite cannot add a CHECK to a table, so triggers check each written row; rows written
-- before this schema are not checked (workers quarantine a corrupt one).

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

CREATE TRIGGER surestep_steps_state_insert BEFORE INSERT ON surestep_steps
    WHEN NEW.state NOT IN ('pending', 'running', 'waiting', 'needs_review', 'success', 'failed', 'dead_letter', 'cancelled')
BEGIN
    SELECT RAISE(ABORT, 'surestep_steps.state must be a surestep state');
END;

CREATE TRIGGER surestep_steps_state_update BEFORE UPDATE OF state ON surestep_steps
    WHEN NEW.state NOT IN ('pending', 'running', 'waiting', 'needs_review', 'success', 'failed', 'dead_letter', 'cancelled')
BEGIN
    SELECT RAISE(ABORT, 'surestep_steps.state must be a surestep state');
END;

CREATE TRIGGER surestep_attempts_state_insert BEFORE INSERT ON surestep_attempts
    WHEN NEW.state NOT IN ('pending', 'running', 'waiting', 'needs_review', 'success', 'failed', 'dead_letter', 'cancelled')
BEGIN
    SELECT RAISE(ABORT, 'surestep_attempts.state must be a surestep state');
END;

CREATE TRIGGER surestep_attempts_state_update BEFORE UPDATE OF state ON surestep_attempts
    WHEN NEW.state NOT IN ('pending', 'running', 'waiting', 'needs_review', 'success', 'failed', 'dead_letter', 'cancelled')
BEGIN
    SELECT RAISE(ABORT, 'surestep_attempts.state must be a surestep state');
END;

CREATE TRIGGER surestep_events_state_insert BEFORE INSERT ON surestep_events
    WHEN NEW.to_state NOT IN ('pending', 'running', 'waiting', 'needs_review', 'success', 'failed', 'dead_letter', 'cancelled')
    OR (NEW.from_state IS NOT NULL AND NEW.from_state NOT IN ('pending', 'running', 'waiting', 'needs_review', 'success', 'failed', 'dead_letter', 'cancelled'))
BEGIN
    SELECT RAISE(ABORT, 'surestep_events states must be surestep states');
END;
