-- Crypto-shredding: one data key per person, wrapped (AES-256-GCM) by the master key from
-- configuration. Erasure sets wrapped_key to NULL: the person's data in the log is then
-- unreadable for good, while the log and its hashes stay untouched.
CREATE TABLE pii_keys (
    subject_id  uuid PRIMARY KEY,
    wrapped_key bytea,
    created_at  timestamptz NOT NULL DEFAULT now(),
    erased_at   timestamptz,
    erased_by   text,
    CHECK ((wrapped_key IS NULL) = (erased_at IS NOT NULL))
);
