-- surestep schema 17: queues with global limits, priorities and per-key fairness.
--
-- A run started in a queue carries its queue, its priority (higher is claimed first) and
-- its concurrency key (a tenant, say); a run in no queue has queue NULL and is claimed
-- exactly as before, through surestep_runs_claimable_by_workflow. Every index below is
-- partial on queue IS NOT NULL, so runs in no queue never enter them.
ALTER TABLE surestep_runs ADD COLUMN queue TEXT;
ALTER TABLE surestep_runs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE surestep_runs ADD COLUMN concurrency_key TEXT;

-- A queue's claim: its due runs by priority, then due time (FIFO within a priority).
CREATE INDEX surestep_runs_claimable_by_queue
    ON surestep_runs (queue, priority DESC, available_at)
    WHERE state IN ('pending', 'waiting') AND queue IS NOT NULL;
-- A keyed queue's claim when the head of the queue is all keys at their cap: the keys
-- with claimable runs (a skip scan), then each key's head.
CREATE INDEX surestep_runs_claimable_by_key
    ON surestep_runs (queue, concurrency_key, priority DESC, available_at)
    WHERE state IN ('pending', 'waiting') AND queue IS NOT NULL AND concurrency_key IS NOT NULL;
-- What a queue (and each of its keys) has running: counted by every claim of the queue.
CREATE INDEX surestep_runs_running_by_queue
    ON surestep_runs (queue, concurrency_key)
    WHERE state = 'running' AND queue IS NOT NULL;

-- One row per queue, written by each worker that starts with the queue declared (the code
-- is the truth: the last worker started wins). A queue's claims lock its row, so claims
-- of one queue happen one at a time across every worker; tokens and refilled_at are the
-- token bucket of rate_per_second.
CREATE TABLE surestep_queues (
    name                TEXT PRIMARY KEY,
    concurrency         INTEGER NOT NULL,
    per_key_concurrency INTEGER,
    rate_per_second     DOUBLE PRECISION,
    tokens              DOUBLE PRECISION NOT NULL DEFAULT 0,
    refilled_at         DOUBLE PRECISION NOT NULL DEFAULT 0,
    updated_at          DOUBLE PRECISION NOT NULL
);
