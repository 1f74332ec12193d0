-- Console sessions: the browser holds a random token in an HttpOnly, SameSite=Strict cookie;
-- only its SHA-256 is kept, so a copy of this table opens no session. Each session has its own
-- CSRF token, which every console form carries. Logging out deletes the row.
CREATE TABLE console_sessions (
    token_hash  bytea       PRIMARY KEY,
    user_id     uuid        NOT NULL,
    csrf        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);

CREATE INDEX console_sessions_user ON console_sessions (user_id);

-- Log verifications started from the console: who asked, how far it got, what it found. The
-- integrity page shows the latest one, live while it runs.
CREATE TABLE verify_runs (
    id           bigserial   PRIMARY KEY,
    started_by   text        NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    done         bigint      NOT NULL DEFAULT 0,
    total        bigint      NOT NULL DEFAULT 0,
    ok           boolean,
    report       jsonb,
    error        text
);
