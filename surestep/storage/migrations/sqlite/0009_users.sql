-- surestep schema 9: the users of the REST API. A token is stored only as its SHA-256
-- (a token is 256 random bits, so a plain hash is enough: there is nothing to guess);
-- the unique index finds the user of a presented token in one lookup.

CREATE TABLE surestep_users (
    name        TEXT PRIMARY KEY,
    role        TEXT NOT NULL CHECK (role IN ('reviewer', 'operator', 'admin')),
    -- a JSON list of group names
    groups      TEXT NOT NULL DEFAULT '[]',
    token_hash  TEXT NOT NULL,
    created_at  REAL NOT NULL,
    disabled_at REAL,
    rotated_at  REAL
);
CREATE UNIQUE INDEX surestep_users_by_token ON surestep_users (token_hash);
