-- surestep schema 20.
--
-- prune deletes a run's messages (events sent to it) with the run; the index on
-- unconsumed messages does not cover the consumed ones, so this one does.
CREATE INDEX surestep_messages_by_run ON surestep_messages (run_id);

-- A keyed queue's claim past a backlog reads each key's head, and the head of the runs
-- without a key. The key index left those out (concurrency_key IS NOT NULL), so that last
-- read scanned the whole queue (26 ms at 100,000 due runs on PostgreSQL); now every due
-- queued run is in it, runs without a key under NULL.
DROP INDEX surestep_runs_claimable_by_key;
CREATE INDEX surestep_runs_claimable_by_key
    ON surestep_runs (queue, concurrency_key, priority DESC, available_at)
    WHERE state IN ('pending', 'waiting') AND queue IS NOT NULL;
