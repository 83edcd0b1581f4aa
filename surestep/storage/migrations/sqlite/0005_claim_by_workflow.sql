-- surestep schema 5: claimable runs indexed by (workflow, version, due time), so a worker
-- reads only the runs of the workflows it serves: a backlog of another workflow's due
-- runs no longer slows its claims. It replaces the index on due time alone.
CREATE INDEX surestep_runs_claimable_by_workflow
    ON surestep_runs (workflow, workflow_version, available_at)
    WHERE state IN ('pending', 'waiting');
DROP INDEX surestep_runs_claimable;
