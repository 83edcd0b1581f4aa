-- surestep schema 12: LLM steps. Every model call is recorded as it ends, whether its
-- reply was used or not (repairs, fallbacks, low confidence, faults): what it cost, how
-- long it took and why it was not used. A run may carry a budget in USD that its calls
-- must stay within.
ALTER TABLE surestep_runs ADD COLUMN budget_usd REAL;
CREATE TABLE surestep_llm_calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    attempt INTEGER NOT NULL,   -- the step attempt the call belongs to
    seq INTEGER NOT NULL,       -- the call's order within that attempt, from 1
    workflow TEXT NOT NULL,
    step TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_hash TEXT NOT NULL,
    schema_hash TEXT,
    outcome TEXT NOT NULL,      -- ok, invalid, low_confidence, timeout, connection, ...
    error TEXT,
    finish_reason TEXT,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    priced INTEGER NOT NULL DEFAULT 0,
    price_version TEXT,
    latency REAL NOT NULL,
    confidence REAL,
    chosen INTEGER NOT NULL DEFAULT 0,  -- its reply became the step's output
    cached INTEGER NOT NULL DEFAULT 0,  -- answered from the response cache: no call made
    started_at REAL NOT NULL
);
CREATE INDEX surestep_llm_calls_by_run ON surestep_llm_calls (run_id, position, attempt, seq);
CREATE INDEX surestep_llm_calls_by_started ON surestep_llm_calls (started_at, workflow);
