-- surestep schema 18 on PostgreSQL: the web console's sign-in sessions. The browser holds a random
-- secret in an HttpOnly cookie; only its SHA-256 is stored (like a token: 256 random
-- bits leave nothing to guess), so a copy of the database signs no one in. A session
-- also remembers the hash of the token it was opened with: rotating or disabling the
-- user's token ends it. Expired rows are deleted when the next session is opened.
CREATE TABLE surestep_console_sessions (
    id_hash    TEXT PRIMARY KEY,
    user_name  TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX surestep_console_sessions_by_expiry ON surestep_console_sessions (expires_at);
