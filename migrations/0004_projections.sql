-- Projections (read side). Each projection's tables live in a schema of their own per
-- generation (`proj_<name>_g<N>`); the `read` schema holds one view per table of the active
-- generation, so a rebuild fills a new generation while the old one serves, and the swap is one
-- transaction that re-points the views.

CREATE SCHEMA IF NOT EXISTS read;

CREATE TABLE projections (
    name              text        PRIMARY KEY,
    -- The generation readers see (NULL until the first one exists).
    active_generation bigint,
    -- Fencing token: the instance that holds the lease. A batch commits only if this still
    -- names its instance, read under the row lock in the batch's own transaction.
    owner             uuid,
    owner_label       text,
    -- 'live' | 'failed' | 'stopped'
    state             text        NOT NULL DEFAULT 'stopped',
    error             text,
    error_position    bigint,
    error_event_type  text,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE projection_generations (
    name         text        NOT NULL REFERENCES projections (name),
    generation   bigint      NOT NULL,
    code_version integer     NOT NULL,
    -- Last log position applied to this generation, committed with the changes it made.
    position     bigint      NOT NULL DEFAULT 0 CHECK (position >= 0),
    -- 'building' | 'active' | 'retired'
    state        text        NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    PRIMARY KEY (name, generation)
);
