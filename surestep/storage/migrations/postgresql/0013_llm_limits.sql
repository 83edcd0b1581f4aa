-- surestep schema 13: rate limits shared by every worker process (app.rate_limit), and the
-- opt-in cache of model replies.
--
-- One row per limited key ("openai:gpt-4o-mini"). On PostgreSQL a reservation locks its
-- key's row (SELECT ... FOR UPDATE) so that reservations of one key, from any process or
-- machine, are decided one at a time; on SQLite the write transaction already does that.
CREATE TABLE surestep_llm_rate_keys (
    key TEXT PRIMARY KEY
);

-- The requests admitted in the last minute, per key, with their tokens (the estimate
-- until reconciled with the actual usage). Entries older than the window are pruned by
-- the next reservation of their key, so the table holds at most rpm rows per key.
CREATE TABLE surestep_llm_rate_reservations (
    id          TEXT PRIMARY KEY,
    key         TEXT NOT NULL,
    reserved_at DOUBLE PRECISION NOT NULL,
    tokens      BIGINT NOT NULL
);
CREATE INDEX surestep_llm_rate_reservations_by_key
    ON surestep_llm_rate_reservations (key, reserved_at);

-- Model replies keyed by a digest of (model, prompt hash, schema hash, parameters).
-- An entry past expires_at is a miss; purge deletes them by this index.
CREATE TABLE surestep_llm_cache (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    stored_at  DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX surestep_llm_cache_by_expiry ON surestep_llm_cache (expires_at);
