-- surestep schema 10: the trace a run belongs to, as a W3C traceparent
-- ("00-<trace id>-<span id>-<flags>"), so that every execution slice of the run, on any
-- worker and on any day, is a span of the same trace (docs/traces.md). NULL when the run
-- was started with tracing off and no caller's traceparent.

ALTER TABLE surestep_runs ADD COLUMN trace_context TEXT;

-- The run of a trace id, for an operator coming from a trace backend:
--   SELECT run_id FROM surestep_run_traces WHERE trace_id = '4bf92f3577b34da6a3ce929d0e0e4736';
CREATE VIEW surestep_run_traces AS
    SELECT id AS run_id, workflow, substr(trace_context, 4, 32) AS trace_id
    FROM surestep_runs WHERE trace_context IS NOT NULL;
