-- Webhooks for integrators (Standard Webhooks): endpoints registered by providers (events of
-- their own listings) and admins (every event), and one delivery per (event, endpoint), its id
-- derived from both, so a replay of the webhook reactor or a rebuild never delivers anew.
CREATE TABLE webhook_endpoints (
    id                  uuid        PRIMARY KEY,
    owner               uuid        NOT NULL,          -- the user who registered it
    scope               text        NOT NULL CHECK (scope IN ('provider', 'all')),
    url                 text        NOT NULL,
    event_types         text[]      NOT NULL,
    description         text        NOT NULL DEFAULT '',
    secret              text        NOT NULL,          -- whsec_…
    previous_secret     text,                          -- still signs until previous_expires_at
    previous_expires_at timestamptz,
    status              text        NOT NULL DEFAULT 'enabled'
                        CHECK (status IN ('enabled', 'disabled', 'deleted')),
    disabled_reason     text,
    failing_since       timestamptz,                   -- first failure since the last success
    lease_until         timestamptz,                   -- a deliverer works on it until then
    created_at          timestamptz NOT NULL
);
CREATE INDEX webhook_endpoints_owner ON webhook_endpoints (owner);

CREATE TABLE webhook_deliveries (
    id              uuid        PRIMARY KEY,           -- webhook-id: msg_<id>
    endpoint_id     uuid        NOT NULL REFERENCES webhook_endpoints (id),
    event_position  bigint      NOT NULL,
    event_type      text        NOT NULL,              -- booking.confirmed, …
    payload         text        NOT NULL,              -- the JSON body, signed as is
    created_at      timestamptz NOT NULL,
    status          text        NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    delivered_at    timestamptz,
    last_status     integer,                           -- the endpoint's HTTP status
    last_latency_ms integer,
    last_response   text,                              -- its first 500 characters, or the error
    UNIQUE (endpoint_id, event_position, event_type)
);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (endpoint_id, event_position)
    WHERE status = 'pending';

-- Every attempt, for the delivery log.
CREATE TABLE webhook_attempts (
    delivery_id uuid        NOT NULL REFERENCES webhook_deliveries (id),
    attempt     integer     NOT NULL,
    at          timestamptz NOT NULL,
    status      integer,
    latency_ms  integer     NOT NULL,
    response    text,
    PRIMARY KEY (delivery_id, attempt)
);
