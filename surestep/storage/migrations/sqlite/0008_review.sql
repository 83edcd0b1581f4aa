-- surestep schema 8: human review. A review task waits at a position of a run (or, for
-- a breached run deadline, at the run itself); its candidates are kept in an inbox table
-- so that one reviewer's inbox is an index range per user or group; decisions are an
-- append-only, hash-chained audit log.

CREATE TABLE surestep_review_tasks (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id        TEXT NOT NULL,
    -- the run's position the task answers; NULL for a task about the whole run
    position      INTEGER,
    kind          TEXT NOT NULL,
    workflow      TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('open', 'decided', 'expired', 'cancelled')),
    payload       TEXT NOT NULL,
    sensitive     TEXT NOT NULL DEFAULT '[]',
    proposal      TEXT,
    confidence    REAL,
    form          TEXT,
    instructions  TEXT,
    -- what a step that exhausted its retries left: step, inputs, error, attempts
    context       TEXT,
    assignee      TEXT,
    groups        TEXT NOT NULL DEFAULT '[]',
    escalate_to   TEXT NOT NULL DEFAULT '[]',
    level         INTEGER NOT NULL DEFAULT 0,
    priority      INTEGER NOT NULL,
    sla           REAL,
    due_at        REAL,
    on_expiry     TEXT NOT NULL,
    overdue_since REAL,
    follow_up_at  REAL,
    claimed_by    TEXT,
    claimed_at    REAL,
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL,
    outcome       TEXT,
    data          TEXT,
    reviewer      TEXT,
    comment       TEXT,
    decided_at    REAL
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
    due_at    REAL,
    task_id   INTEGER NOT NULL,
    kind      TEXT NOT NULL,
    PRIMARY KEY (principal, task_id)
);
CREATE INDEX surestep_review_inbox_order
    ON surestep_review_inbox (principal, priority DESC, due_at, task_id);
CREATE INDEX surestep_review_inbox_by_task ON surestep_review_inbox (task_id);

CREATE TABLE surestep_review_decisions (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id    INTEGER NOT NULL,
    run_id     TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    record     TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL,
    UNIQUE (run_id, seq)
);
CREATE INDEX surestep_review_decisions_by_task ON surestep_review_decisions (task_id);

CREATE TRIGGER surestep_review_decisions_no_update BEFORE UPDATE ON surestep_review_decisions
BEGIN
    SELECT RAISE(ABORT, 'surestep_review_decisions is append-only');
END;
CREATE TRIGGER surestep_review_decisions_no_delete BEFORE DELETE ON surestep_review_decisions
    WHEN EXISTS (SELECT 1 FROM surestep_runs WHERE id = OLD.run_id)
BEGIN
    SELECT RAISE(ABORT, 'surestep_review_decisions is append-only while its run exists');
END;

-- A step's arguments as a reviewer edited them, used by its next attempt.
ALTER TABLE surestep_steps ADD COLUMN review_inputs TEXT;

-- A run's deadline still applies while it waits for a person: the deadline index covers
-- needs_review too.
DROP INDEX surestep_runs_deadlines;
CREATE INDEX surestep_runs_deadlines ON surestep_runs (deadline_at)
    WHERE deadline_at IS NOT NULL
    AND state IN ('pending', 'running', 'waiting', 'dead_letter', 'needs_review');
