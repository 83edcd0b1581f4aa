-- surestep schema 15: confidence drift of LLM steps (surestep.observe.drift).
--
-- The drift check compares the confidences of the answers used in the last hour with
-- those of the 7 days before, per (step, model). The (started_at, workflow) index of
-- schema 12 would find one step's answers only by reading every call of those 7 days;
-- this partial index holds only answers used that carry a confidence, in the order the
-- check reads them, so a check costs one short range per (step, model) however many
-- calls the ledger holds. The confidence is its last column so that the check reads the
-- index alone, not the table. Its predicate is repeated verbatim by the queries that use it.
CREATE INDEX surestep_llm_calls_confidence
    ON surestep_llm_calls (step, provider, model, started_at, confidence)
    WHERE chosen AND confidence IS NOT NULL;

-- Whether each (step, model) was last judged drifted. The drift watch of every worker
-- process flips a row only when the verdict changes, and fires on_drift only if its own
-- update flipped it: once per crossing across the cluster, and not again after a restart.
CREATE TABLE surestep_llm_drift (
    step       TEXT NOT NULL,
    model      TEXT NOT NULL,  -- provider:model
    drifted    BOOLEAN NOT NULL,
    psi        DOUBLE PRECISION NOT NULL,
    changed_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (step, model)
);
