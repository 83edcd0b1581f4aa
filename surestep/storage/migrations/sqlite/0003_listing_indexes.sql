-- surestep schema 3: `surestep runs` lists newest first without scanning the table, and
-- `surestep dlq --workflow W` (state and workflow) reads one index range.
CREATE INDEX surestep_runs_by_created ON surestep_runs (created_at);
CREATE INDEX surestep_runs_by_state_workflow ON surestep_runs (state, workflow, created_at);
