-- Password resets: a single-use link sent by e-mail. Only the token's SHA-256 is kept, so a
-- copy of this table opens no account; a token works once and until it expires.
CREATE TABLE password_resets (
    token_hash  bytea       PRIMARY KEY,
    user_id     uuid        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);

CREATE INDEX password_resets_user ON password_resets (user_id, created_at);
