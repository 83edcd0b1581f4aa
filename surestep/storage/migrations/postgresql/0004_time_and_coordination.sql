-- surestep schema 4: deadlines, waits for events and children, sagas.

-- A deadline and what happens when it passes; when it was breached (counted).
ALTER TABLE surestep_runs ADD COLUMN deadline_at DOUBLE PRECISION;
ALTER TABLE surestep_runs ADD COLUMN on_deadline TEXT;
ALTER TABLE surestep_runs ADD COLUMN deadline_breached_at DOUBLE PRECISION;
-- What a waiting run waits for (JSON list of "event:NAME" and "child:RUN_ID"), so that
-- a message or a finishing child wakes exactly the runs that wait for it.
ALTER TABLE surestep_runs ADD COLUMN waiting_for TEXT;
-- Set while a run undoes its completed steps: the state it ends in afterwards.
ALTER TABLE surestep_runs ADD COLUMN compensating TEXT;
-- The error the run ends with once undone, kept apart from `error`, which shows the
-- current trouble (an undo that failed, say) meanwhile.
ALTER TABLE surestep_runs ADD COLUMN compensating_error TEXT;

-- A step's compensation (a registered step's name) and the arguments to call it with,
-- kept only for steps declared with compensate=.
ALTER TABLE surestep_steps ADD COLUMN compensation TEXT;
ALTER TABLE surestep_steps ADD COLUMN inputs TEXT;

CREATE INDEX surestep_runs_deadlines ON surestep_runs (deadline_at)
    WHERE deadline_at IS NOT NULL AND state IN ('pending', 'running', 'waiting', 'dead_letter');
CREATE INDEX surestep_runs_children ON surestep_runs (parent_id) WHERE parent_id IS NOT NULL;

-- Events sent to runs (`app.send_event`), buffered until a wait consumes them.
CREATE TABLE surestep_messages (
    id                BIGSERIAL PRIMARY KEY,
    run_id            TEXT NOT NULL,
    name              TEXT NOT NULL,
    payload           TEXT NOT NULL,
    sent_at           DOUBLE PRECISION NOT NULL,
    sender            TEXT NOT NULL,
    consumed_at       DOUBLE PRECISION,
    consumed_position INTEGER
);
CREATE INDEX surestep_messages_unconsumed ON surestep_messages (run_id, name, id)
    WHERE consumed_at IS NULL;
