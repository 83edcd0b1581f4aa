-- surestep schema 11: the cluster-wide figures (`surestep metrics`, `surestep stats`) read
-- recent activity by time, so that a scrape costs what the window holds, not what the
-- tables hold. Finished runs by (finish time, workflow, state): the window's counts are
-- one range of this index, read from it alone (it serves prune's range too).
CREATE INDEX surestep_runs_finished_recent ON surestep_runs (updated_at, workflow, state)
    WHERE state IN ('success', 'failed', 'cancelled');
-- Attempts by finish time, with their state and number, so that failures and recoveries
-- over a window are counted from the index alone: step durations, retries and
-- auto-recovery. One more index entry per attempt on the per-step write.
CREATE INDEX surestep_attempts_by_finished ON surestep_attempts (finished_at, state, attempt);
