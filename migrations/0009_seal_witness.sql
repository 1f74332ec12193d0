-- Seals (format v2) keep a witness of each event they cover: the first 8 bytes of its Merkle
-- leaf, in position order (`leaf_digests`), and the SHA-256 of those bytes (`witness`), which
-- the seal's hash and signature cover. `verify` uses them to name the first position whose
-- event is not the one sealed there, instead of only saying that a seal's roots differ.
-- Seals made before (format v1) have neither.
ALTER TABLE log_seals ADD COLUMN leaf_digests bytea, ADD COLUMN witness bytea;

-- A sealer that finds the range it would seal not dense or not chained refuses to seal it and
-- raises an alert here (logged at error and counted too); `/readyz` reports open alerts as
-- degraded. A later seal of the same range (after the log was repaired) clears them.
CREATE TABLE seal_alerts (
    id            bigserial   PRIMARY KEY,
    raised_at     timestamptz NOT NULL DEFAULT now(),
    from_position bigint      NOT NULL,
    to_position   bigint      NOT NULL,
    problem       text        NOT NULL,
    cleared_at    timestamptz
);
