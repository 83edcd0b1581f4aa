-- surestep schema 19: a map's finished children counted in shards. A child's end adds
-- itself to one of its map's shard rows (child index modulo 64), not to the map's own
-- row, so that the children of one map end concurrently instead of one commit after
-- another (on PostgreSQL each end held the map's row locked until its commit). The end
-- that finishes a shard counts it in the map's row (shards_done); the one that finishes
-- the last shard wakes the parent. Maps created before this migration have shards = 0
-- and keep counting in their own row (done, failed).
CREATE TABLE surestep_map_shards (
    parent_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    shard INTEGER NOT NULL,
    total INTEGER NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (parent_id, position, shard)
);
ALTER TABLE surestep_maps ADD COLUMN shards INTEGER NOT NULL DEFAULT 0;
ALTER TABLE surestep_maps ADD COLUMN shards_done INTEGER NOT NULL DEFAULT 0;
