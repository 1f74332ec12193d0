-- The event store: the log and the global write lock / position counter.
-- See docs/adr/0001-global-order.md for why positions are assigned under the log_head row lock.

-- One row. Its lock is the global write lock (held by an append transaction until commit); its
-- position is that of the last stored event (so positions are dense), and write_token changes
-- with every write, so a writer can state exactly which state of the log it planned against.
CREATE TABLE log_head (
    id          smallint PRIMARY KEY CHECK (id = 1),
    position    bigint   NOT NULL CHECK (position >= 0),
    write_token uuid     NOT NULL
);
INSERT INTO log_head (id, position, write_token)
VALUES (1, 0, '00000000-0000-0000-0000-000000000000');

CREATE TABLE events (
    position       bigint      PRIMARY KEY CHECK (position > 0),
    event_id       uuid        NOT NULL UNIQUE,
    stream_id      text        NOT NULL,
    stream_version bigint      NOT NULL CHECK (stream_version > 0),
    event_type     text        NOT NULL,
    schema_version integer     NOT NULL,
    -- `json`, not `jsonb`: the text is kept byte for byte, so the hash chain re-derives from it.
    data           json        NOT NULL,
    correlation_id uuid        NOT NULL,
    causation_id   uuid,
    actor          text        NOT NULL,
    reason         text,
    recorded_at    timestamptz NOT NULL,
    effective_at   timestamptz NOT NULL,
    -- SHA-256 over the previous event's hash in the stream and this event's stored fields.
    hash           bytea       NOT NULL CHECK (length(hash) = 32),
    -- Also the index that finds a stream's head (its highest version).
    UNIQUE (stream_id, stream_version)
);
