-- surestep schema 8 on PostgreSQL: human review. A review task waits at a position of a
-- run (or, for a breached run deadline, at the run itself); its candidates are kept in an
-- inbox table so that one reviewer's inbox is an index range per user or group;
-- decisions are an append-only, hash-chained audit log.

CREATE TABLE surestep_review_tasks (
    id            BIGSERIAL PRIMARY KEY,
    run_id        TEXT NOT NULL,
    -- the run's position the task answers; NULL for a task about the whole run
    position      INTEGER,
    kind          TEXT NOT NULL,
    workflow      TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('open', 'decided', 'expired', 'cancelled')),
    payload       TEXT NOT NULL,
    sensitive     TEXT NOT NULL DEFAULT '[]',
    proposal      TEXT,
    confidence    DOUBLE PRECISION,
    form          TEXT,
    instructions  TEXT,
    -- what a step that exhausted its retries left: step, inputs, error, attempts
    context       TEXT,
    assignee      TEXT,
    groups        TEXT NOT NULL DEFAULT '[]',
    escalate_to   TEXT NOT NULL DEFAULT '[]',
    level         INTEGER NOT NULL DEFAULT 0,
    priority      INTEGER NOT NULL,
    sla           DOUBLE PRECISION,
    due_at        DOUBLE PRECISION,
    on_expiry     TEXT NOT NULL,
    overdue_since DOUBLE PRECISION,
    follow_up_at  DOUBLE PRECISION,
    claimed_by    TEXT,
    claimed_at    DOUBLE PRECISION,
    created_at    DOUBLE PRECISION NOT NULL,
    updated_at    DOUBLE PRECISION NOT NULL,
    outcome       TEXT,
    data          TEXT,
    reviewer      TEXT,
    comment       TEXT,
    decided_at    DOUBLE PRECISION
);
-- One open task per position: a replay finds the task it opened instead of another.
CREATE UNIQUE INDEX surestep_review_tasks_open_at ON surestep_review_tasks (run_id, position)
    WHERE state = 'open';
CREATE INDEX surestep_review_tasks_by_run ON surestep_review_tasks (run_id);
-- The SLA sweep reads only open tasks that still have a due time to act on.
CREATE INDEX surestep_review_tasks_due ON surestep_review_tasks (due_at)
    WHERE state = 'open' AND overdue_since IS NULL;
CREATE INDEX surestep_review_tasks_by_state
    ON surestep_review_tasks (state, priority DESC, due_at, id);
CREATE INDEX surestep_review_tasks_decided ON surestep_review_tasks (decided_at)
    WHERE decided_at IS NOT NULL;
CREATE INDEX surestep_review_tasks_created ON surestep_review_tasks (created_at);

-- Who may see an open task: one row per principal ('user:alice', 'group:finance'), in
-- inbox order. due_at here is never NULL (no due time sorts last, as 1e18), so that both
-- databases order alike.
CREATE TABLE surestep_review_inbox (
    principal TEXT NOT NULL,
    priority  INTEGER NOT NULL,
    due_at    DOUBLE PRECISION,
    task_id   BIGINT NOT NULL,
    kind      TEXT NOT NULL,
    PRIMARY KEY (principal, task_id)
);
CREATE INDEX surestep_review_inbox_order
    ON surestep_review_inbox (principal, priority DESC, due_at, task_id);
CREATE INDEX surestep_review_inbox_by_task ON surestep_review_inbox (task_id);

CREATE TABLE surestep_review_decisions (
    id         BIGSERIAL PRIMARY KEY,
    task_id    BIGINT NOT NULL,
    run_id     TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    record     TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL,
    UNIQUE (run_id, seq)
);
CREATE INDEX surestep_review_decisions_by_task ON surestep_review_decisions (task_id);

CREATE FUNCTION surestep_review_decisions_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION 'surestep_review_decisions is append-only';
    END IF;
    IF EXISTS (SELECT 1 FROM surestep_runs WHERE id = OLD.run_id) THEN
        RAISE EXCEPTION 'surestep_review_decisions is append-only while its run exists';
    END IF;
    RETURN OLD;
END
$$;
CREATE TRIGGER surestep_review_decisions_append_only
    BEFORE UPDATE OR DELETE ON surestep_review_decisions
    FOR EACH ROW EXECUTE FUNCTION surestep_review_decisions_append_only();

-- A step's arguments as a reviewer edited them, used by its next attempt.
ALTER TABLE surestep_steps ADD COLUMN review_inputs TEXT;

-- A run's deadline still applies while it waits for a person: the deadline index covers
-- needs_review too.
DROP INDEX surestep_runs_deadlines;
CREATE INDEX surestep_runs_deadlines ON surestep_runs (deadline_at)
    WHERE deadline_at IS NOT NULL
    AND state IN ('pending', 'running', 'waiting', 'dead_letter', 'needs_review');
