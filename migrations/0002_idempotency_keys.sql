-- Idempotency keys of commands that come from outside (HTTP `Idempotency-Key`, webhooks).
-- The first request with a key claims it (and a command id); its final result is stored; a
-- retry with the same key and the same request gets that result; the same key with another
-- request is refused.
CREATE TABLE idempotency_keys (
    scope        text        NOT NULL,  -- whose key it is (a user id, a webhook source)
    key          text        NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_hash bytea       NOT NULL,  -- SHA-256 of the canonical request
    command_id   uuid        NOT NULL,  -- reused by every retry, so events ids repeat
    response     jsonb,                 -- NULL until the first attempt finished
    created_at   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    PRIMARY KEY (scope, key)
);
