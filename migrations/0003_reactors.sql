-- Reactors (process managers): where each one is in the log, and the deadlines it keeps.

CREATE TABLE reactor_checkpoints (
    name       text        PRIMARY KEY,
    position   bigint      NOT NULL CHECK (position >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Business deadlines (a hold lapses, a slot ends), fired by the clock, not by sleeping.
CREATE TABLE deadlines (
    kind       text        NOT NULL,  -- 'expire-hold' | 'complete'
    booking_id uuid        NOT NULL,
    due_at     timestamptz NOT NULL,
    done_at    timestamptz,
    PRIMARY KEY (kind, booking_id)
);
CREATE INDEX deadlines_due ON deadlines (due_at) WHERE done_at IS NULL;
