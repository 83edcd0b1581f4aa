-- surestep schema 14: fan-out. One row per map a parent run started (surestep.map): how
-- many children it has, how many may run at once, how many have been let run, and how
-- many have finished. A child's end updates its map's row in the transaction that ends
-- it: it lets the next held child run and, when the last one finishes (or the first
-- fails, with fail_fast), wakes the parent. Held children are pending runs due at
-- HELD (1e18): never claimed until released.
CREATE TABLE surestep_maps (
    parent_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    workflow TEXT NOT NULL,
    total INTEGER NOT NULL,
    concurrency INTEGER NOT NULL,
    released INTEGER NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    fail_fast INTEGER NOT NULL DEFAULT 0,
    width INTEGER NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (parent_id, position)
);
