-- The notification outbox: one row per message the notification reactor derived from the log.
-- A message's id is derived from (event, template, recipient), so a redelivered event, a
-- replay of the reactor from position 0 or a rebuild of the read side inserts nothing new
-- (ON CONFLICT DO NOTHING) and sends nothing twice. Not a projection: it is never rebuilt, it
-- is the record of what each person was told and when. The address and the message are
-- personal data: sealed with the recipient's data key (AES-256-GCM, see pii.rs), so an erasure
-- (which destroys the key) leaves nothing readable even before the rows are cleared.
CREATE TABLE outbox (
    id              uuid        PRIMARY KEY,
    template        text        NOT NULL,
    recipient       uuid        NOT NULL,             -- the user written to
    address         bytea,                            -- sealed; NULL once the recipient is erased
    locale          text        NOT NULL,
    marketing       boolean     NOT NULL,             -- optional: follows the opt-out
    booking_id      uuid,
    subject         text        NOT NULL,
    message         bytea,                            -- sealed MIME message; NULL once erased
    event_position  bigint      NOT NULL,
    event_type      text        NOT NULL,
    created_at      timestamptz NOT NULL,
    deliver_at      timestamptz NOT NULL,             -- not before (a reminder: 24 h before)
    status          text        NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sent', 'dead', 'discarded')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,             -- also the lease of a claimed message
    last_error      text,
    sent_at         timestamptz,
    note            text                              -- why discarded or retried, and by whom
);

CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE status = 'pending';
CREATE INDEX outbox_recipient ON outbox (recipient);
CREATE INDEX outbox_booking ON outbox (booking_id) WHERE booking_id IS NOT NULL;
CREATE INDEX outbox_dead ON outbox (created_at) WHERE status = 'dead';
