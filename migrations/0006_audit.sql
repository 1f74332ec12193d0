-- Audit: global seals over the log, and the indexes audit reads use.

-- One row per seal: the Merkle root over the events at positions from..to, chained to the
-- previous seal's hash and signed with Ed25519 (see commands/src/audit/seal.rs).
CREATE TABLE log_seals (
    seq           bigint PRIMARY KEY CHECK (seq > 0),
    from_position bigint NOT NULL CHECK (from_position > 0),
    to_position   bigint NOT NULL UNIQUE,
    event_count   bigint NOT NULL,
    merkle_root   bytea NOT NULL,
    previous_hash bytea NOT NULL,
    seal_hash     bytea NOT NULL,
    signature     bytea NOT NULL,
    public_key    bytea NOT NULL,
    sealed_at     timestamptz NOT NULL
);

-- Following causation links (what an event caused) in a booking's history.
CREATE INDEX events_causation ON events (causation_id) WHERE causation_id IS NOT NULL;
-- Browsing the log by time: recorded_at grows with position, which a BRIN index exploits at
-- almost no cost to appends.
CREATE INDEX events_recorded_at ON events USING brin (recorded_at);
