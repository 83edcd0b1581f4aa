-- surestep schema 20: prune deletes a run's messages (events sent to it) with the run;
-- the index on unconsumed messages does not cover the consumed ones, so this one does.
CREATE INDEX surestep_messages_by_run ON surestep_messages (run_id);
