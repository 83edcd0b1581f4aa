-- surestep schema 2: `surestep prune` finds finished runs by age through this index,
-- so retention stays cheap with millions of runs.
CREATE INDEX surestep_runs_finished ON surestep_runs (updated_at)
    WHERE state IN ('success', 'failed', 'cancelled');
