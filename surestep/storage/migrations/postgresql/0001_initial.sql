-- surestep schema 1 on PostgreSQL: runs, steps, attempts and the append-only event log.
-- Times are epoch seconds taken from the App's clock, so tests can inject one.

CREATE TABLE surestep_runs (
    id               TEXT PRIMARY KEY,
    workflow         TEXT NOT NULL,
    workflow_version TEXT NOT NULL,
    state            TEXT NOT NULL,
    inputs           TEXT NOT NULL,
    output           TEXT,
    error            TEXT,
    created_at       DOUBLE PRECISION NOT NULL,
    updated_at       DOUBLE PRECISION NOT NULL,
    -- when a pending or waiting run may be claimed; NULL while running or settled
    available_at     DOUBLE PRECISION,
    lease_owner      TEXT,
    -- bumped on every claim: a write that carries an older token is fenced off
    lease_token      BIGINT NOT NULL DEFAULT 0,
    lease_expires_at DOUBLE PRECISION,
    -- recoveries in a row after which the run made no progress (no new attempt recorded):
    -- a step that crashes its worker every time is dead-lettered, not retried forever
    recoveries       INTEGER NOT NULL DEFAULT 0,
    recovery_mark    INTEGER NOT NULL DEFAULT -1,
    parent_id        TEXT
);

-- The claim query reads only this partial index, however many finished runs there are.
CREATE INDEX surestep_runs_claimable ON surestep_runs (available_at)
    WHERE state IN ('pending', 'waiting');
CREATE INDEX surestep_runs_leased ON surestep_runs (lease_expires_at)
    WHERE state = 'running';
CREATE INDEX surestep_runs_by_state ON surestep_runs (state, created_at);
CREATE INDEX surestep_runs_by_workflow ON surestep_runs (workflow, created_at);

CREATE TABLE surestep_steps (
    run_id          TEXT NOT NULL,
    position        INTEGER NOT NULL,
    name            TEXT NOT NULL,
    state           TEXT NOT NULL,
    output          TEXT,
    error           TEXT,
    attempts        INTEGER NOT NULL,
    -- attempts made before the last redrive; the retry budget counts from here
    retry_base      INTEGER NOT NULL DEFAULT 0,
    started_at      DOUBLE PRECISION NOT NULL,
    finished_at     DOUBLE PRECISION,
    next_attempt_at DOUBLE PRECISION,
    PRIMARY KEY (run_id, position)
);

CREATE TABLE surestep_attempts (
    run_id      TEXT NOT NULL,
    position    INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    state       TEXT NOT NULL,
    started_at  DOUBLE PRECISION NOT NULL,
    finished_at DOUBLE PRECISION NOT NULL,
    worker      TEXT NOT NULL,
    error       TEXT,
    PRIMARY KEY (run_id, position, attempt)
);

CREATE TABLE surestep_events (
    id         BIGSERIAL PRIMARY KEY,
    run_id     TEXT NOT NULL,
    position   INTEGER,
    step       TEXT,
    from_state TEXT,
    to_state   TEXT NOT NULL,
    at         DOUBLE PRECISION NOT NULL,
    actor      TEXT NOT NULL,
    reason     TEXT,
    attempt    INTEGER
);
CREATE INDEX surestep_events_by_run ON surestep_events (run_id, id);

-- The event log is append-only. Events may go only once their run has been deleted
-- (retention), never while the run exists.
CREATE FUNCTION surestep_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION 'surestep_events is append-only';
    END IF;
    IF EXISTS (SELECT 1 FROM surestep_runs WHERE id = OLD.run_id) THEN
        RAISE EXCEPTION 'surestep_events is append-only while its run exists';
    END IF;
    RETURN OLD;
END
$$;
CREATE TRIGGER surestep_events_append_only BEFORE UPDATE OR DELETE ON surestep_events
    FOR EACH ROW EXECUTE FUNCTION surestep_events_append_only();
