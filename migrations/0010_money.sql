-- The simulated gateway's own book (what it charged, refunded, transferred and reversed), kept
-- apart from the log so `tessera ledger check` can reconcile the ledger with it as it would with
-- Stripe's records. Written idempotently: one row per gateway object.
CREATE TABLE simulated_gateway_book (
    object_ref  text        PRIMARY KEY,           -- sim_pi_… | sim_re_… | sim_tr_… | sim_trr_…
    kind        text        NOT NULL,              -- 'charge' | 'refund' | 'transfer' | 'reversal'
    parent_ref  text,                              -- refund: its intent; reversal: its transfer
    destination text,                              -- transfer: the connected account
    amount      bigint      NOT NULL CHECK (amount >= 0),
    currency    text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
