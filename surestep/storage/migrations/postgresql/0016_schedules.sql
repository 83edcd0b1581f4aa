-- surestep schema 16: cron schedules (app.schedule). One row per schedule, by its stable
-- name; the workers that declare it write it when they start (cron, time zone, catch-up
-- policy and workflow version as the code says) and move next_fire_at on after each fire.
-- A fire starts the run "schedule:<name>:<fire time>", so workers that race over one fire
-- start one run between them; next_fire_at moves only from the value a worker read
-- (compare-and-set), after its runs are stored, so a crash in between repeats nothing.
CREATE TABLE surestep_schedules (
    name             TEXT PRIMARY KEY,
    cron             TEXT NOT NULL,
    timezone         TEXT NOT NULL,
    catch_up         TEXT NOT NULL CHECK (catch_up IN ('latest', 'all', 'none')),
    -- the version of the workflow a fire starts (`surestep schedules trigger` needs it)
    workflow_version TEXT NOT NULL,
    next_fire_at     DOUBLE PRECISION NOT NULL,
    -- the latest fire time that started a run, shown by `surestep schedules list`
    last_fire_at     DOUBLE PRECISION,
    -- 1 while paused: no fire starts; resuming skips the fires of the pause
    paused           INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
    updated_at       DOUBLE PRECISION NOT NULL
);
