-- surestep schema 6: the database refuses what no surestep would write. A state outside
-- the vocabulary made every worker's claim fail; a pending run without a due time, or a
-- running one without a lease expiry, is never claimed or recovered: stuck for good.
-- NOT VALID: rows written before this schema are not checked (a corrupt one must not
-- stop the upgrade; workers quarantine such runs), every row written from now on is.
ALTER TABLE surestep_runs ADD CONSTRAINT surestep_runs_state CHECK (
    state IN ('pending', 'running', 'waiting', 'needs_review', 'success', 'failed', 'dead_letter', 'cancelled')
    AND (compensating IS NULL OR compensating IN ('pending', 'running', 'waiting', 'needs_review', 'success', 'failed', 'dead_letter', 'cancelled'))
) NOT VALID;
ALTER TABLE surestep_runs ADD CONSTRAINT surestep_runs_claimable CHECK (
    (state <> 'pending' OR available_at IS NOT NULL)
    AND (state <> 'running' OR lease_expires_at IS NOT NULL)
) NOT VALID;
ALTER TABLE surestep_steps ADD CONSTRAINT surestep_steps_state CHECK (
    state IN ('pending', 'running', 'waiting', 'needs_review', 'success', 'failed', 'dead_letter', 'cancelled')
) NOT VALID;
ALTER TABLE surestep_attempts ADD CONSTRAINT surestep_attempts_state CHECK (
    state IN ('pending', 'running', 'waiting', 'needs_review', 'success', 'failed', 'dead_letter', 'cancelled')
) NOT VALID;
ALTER TABLE surestep_events ADD CONSTRAINT surestep_events_state CHECK (
    to_state IN ('pending', 'running', 'waiting', 'needs_review', 'success', 'failed', 'dead_letter', 'cancelled')
    AND (from_state IS NULL OR from_state IN ('pending', 'running', 'waiting', 'needs_review', 'success', 'failed', 'dead_letter', 'cancelled'))
) NOT VALID;
