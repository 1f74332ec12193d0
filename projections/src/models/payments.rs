//! Payments and the double-entry ledger: a balance per payment (charged − refunded, with
//! refunds still in flight; the `booking_balances` view sums them per booking), and one row per
//! ledger entry of every money event, as [`tessera_domain::ledger::posting`] posts it (each
//! event's entries sum to zero; provider statements and the admin's balances read them).
//! Also the numbered documents (receipts, credit notes, providers' commission invoices) and the
//! payouts providers received.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use tessera_domain::ledger::Account;
use tessera_domain::payment::PaymentEvent;
use tessera_log::codec::AnyEvent;
use uuid::Uuid;

use super::{inconsistent, keys};
use crate::SqlProjection;
use crate::envelope::Envelope;
use crate::error::ProjectionError;
use crate::rows::{self, Rows};

#[derive(Debug, Default)]
pub struct Payments;

const NAME: &str = "payments";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PaymentRow {
    pub payment_id: Uuid,
    pub booking_id: Uuid,
    pub customer_id: Uuid,
    pub provider: String,
    pub provider_ref: String,
    pub status: String,
    pub currency: String,
    pub amount_minor: i64,
    pub charged_minor: i64,
    pub refunded_minor: i64,
    pub refunds_pending_minor: i64,
    pub balance_minor: i64,
    /// Refund id → amount of refunds requested and not yet settled.
    pub pending: BTreeMap<Uuid, i64>,
    pub updated_at: DateTime<Utc>,
}

/// One entry of a posting: a debit (positive) or credit (negative) to one account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LedgerRow {
    pub position: i64,
    /// The entry's place in its posting.
    pub line: i32,
    /// `payment`, `refund`, `release`, `transfer` or `reversal`.
    pub kind: String,
    pub payment_id: Uuid,
    pub booking_id: Uuid,
    /// `gateway`, `customer_funds`, `commission_revenue` or `provider_payable`.
    pub account: String,
    /// The provider whose share the posting moves (every entry of a release, transfer,
    /// reversal or refund after the release).
    pub provider_id: Option<Uuid>,
    pub currency: String,
    pub amount_minor: i64,
    pub at: DateTime<Utc>,
}

/// A receipt or credit note as issued on the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DocumentRow {
    pub number: String,
    /// `receipt` or `credit_note`.
    pub kind: String,
    pub year: i32,
    pub seq: i64,
    pub payment_id: Uuid,
    pub booking_id: Uuid,
    pub refund_id: Option<Uuid>,
    /// The receipt a credit note corrects.
    pub receipt_number: Option<String>,
    pub currency: String,
    pub amount_minor: i64,
    pub tax_rate_bp: i32,
    pub tax_minor: i64,
    pub issued_at: DateTime<Utc>,
    pub position: i64,
}

/// A payout from a provider's connected account to its bank, as last reported.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PayoutRow {
    pub payout_ref: String,
    pub provider_id: Uuid,
    pub account_ref: String,
    /// `paid` or `failed`.
    pub status: String,
    pub failure: Option<String>,
    pub currency: String,
    pub amount_minor: i64,
    pub updated_at: DateTime<Utc>,
    pub position: i64,
}

fn payment_of(e: &Envelope) -> Option<Uuid> {
    let AnyEvent::Payment(p) = &e.event else {
        return None;
    };
    Some(p.ids().0.0)
}

#[async_trait]
impl SqlProjection for Payments {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> u32 {
        // 2: the ledger is double-entry (one row per entry, every posting summing to zero).
        // 3: receipts, credit notes, payouts and commission invoices.
        3
    }

    fn ddl(&self) -> String {
        r#"
CREATE TABLE payments (
    payment_id uuid PRIMARY KEY, booking_id uuid NOT NULL, customer_id uuid NOT NULL,
    provider text NOT NULL, provider_ref text NOT NULL, status text NOT NULL,
    currency text NOT NULL, amount_minor bigint NOT NULL, charged_minor bigint NOT NULL,
    refunded_minor bigint NOT NULL, refunds_pending_minor bigint NOT NULL,
    balance_minor bigint NOT NULL, pending jsonb NOT NULL, updated_at timestamptz NOT NULL
);
CREATE INDEX payments_booking ON payments (booking_id);
CREATE TABLE ledger (
    position bigint NOT NULL, line integer NOT NULL, kind text NOT NULL, payment_id uuid NOT NULL,
    booking_id uuid NOT NULL, account text NOT NULL, provider_id uuid, currency text NOT NULL,
    amount_minor bigint NOT NULL, at timestamptz NOT NULL, PRIMARY KEY (position, line)
);
CREATE INDEX ledger_booking ON ledger (booking_id, position);
CREATE TABLE documents (
    number text PRIMARY KEY, kind text NOT NULL, year integer NOT NULL, seq bigint NOT NULL,
    payment_id uuid NOT NULL, booking_id uuid NOT NULL, refund_id uuid, receipt_number text,
    currency text NOT NULL, amount_minor bigint NOT NULL, tax_rate_bp integer NOT NULL,
    tax_minor bigint NOT NULL, issued_at timestamptz NOT NULL, position bigint NOT NULL
);
CREATE INDEX documents_booking ON documents (booking_id, position);
CREATE TABLE payouts (
    payout_ref text PRIMARY KEY, provider_id uuid NOT NULL, account_ref text NOT NULL,
    status text NOT NULL, failure text, currency text NOT NULL, amount_minor bigint NOT NULL,
    updated_at timestamptz NOT NULL, position bigint NOT NULL
);
CREATE INDEX payouts_provider ON payouts (provider_id, updated_at);
CREATE TABLE invoices (
    number text PRIMARY KEY, provider_id uuid NOT NULL, month text NOT NULL,
    lines jsonb NOT NULL, issued_at timestamptz NOT NULL, position bigint NOT NULL
);
CREATE INDEX invoices_provider ON invoices (provider_id, month);
CREATE INDEX ledger_provider ON ledger (provider_id, at) WHERE provider_id IS NOT NULL;
CREATE VIEW booking_balances AS
    SELECT booking_id, currency, sum(charged_minor) AS charged_minor,
           sum(refunded_minor) AS refunded_minor,
           sum(refunds_pending_minor) AS refunds_pending_minor,
           sum(balance_minor) AS balance_minor
    FROM payments GROUP BY booking_id, currency;
"#
        .to_owned()
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        batch: &[Envelope],
    ) -> Result<(), ProjectionError> {
        let payouts = payouts_of(batch);
        rows::upsert(conn, "payouts", &["payout_ref"], &payouts).await?;
        let invoices: Vec<InvoiceRow> = batch
            .iter()
            .filter_map(|e| match &e.event {
                AnyEvent::Provider(
                    tessera_domain::provider::ProviderEvent::CommissionInvoiced {
                        provider_id,
                        number,
                        month,
                        lines,
                    },
                ) => Some(InvoiceRow {
                    number: number.to_string(),
                    provider_id: provider_id.0,
                    month: month.clone(),
                    lines: lines
                        .iter()
                        .map(|l| InvoiceLineView {
                            currency: l.currency.to_string(),
                            commission_minor: l.commission_minor,
                            entries: i64::from(l.entries),
                        })
                        .collect(),
                    issued_at: e.effective_at,
                    position: e.pos(),
                }),
                _ => None,
            })
            .collect();
        rows::insert(conn, "invoices", &invoices).await?;
        let ids = keys(batch.iter().filter_map(payment_of));
        if ids.is_empty() {
            return Ok(());
        }
        let mut documents = Vec::new();
        let mut payments: Rows<Uuid, PaymentRow> = Rows::default();
        for r in rows::load::<PaymentRow>(conn, "payments", "payment_id", &ids).await? {
            payments.rows.insert(r.payment_id, r);
        }
        let mut ledger = Vec::new();
        for e in batch {
            let AnyEvent::Payment(p) = &e.event else {
                continue;
            };
            let Some(id) = payment_of(e) else { continue };
            if let PaymentEvent::PaymentIntentCreated {
                booking_id,
                customer_id,
                amount,
                provider,
                provider_ref,
                ..
            } = p
            {
                payments.put(
                    id,
                    PaymentRow {
                        payment_id: id,
                        booking_id: booking_id.0,
                        customer_id: customer_id.0,
                        provider: provider.clone(),
                        provider_ref: provider_ref.clone(),
                        status: "pending".into(),
                        currency: amount.currency.to_string(),
                        amount_minor: amount.minor,
                        charged_minor: 0,
                        refunded_minor: 0,
                        refunds_pending_minor: 0,
                        balance_minor: 0,
                        pending: BTreeMap::new(),
                        updated_at: e.effective_at,
                    },
                );
                continue;
            }
            let Some(row) = payments.get_mut(&id) else {
                return Err(inconsistent(NAME, e, format!("payment {id} has no intent")));
            };
            if let Some(posting) = tessera_domain::ledger::posting(p) {
                for (line, (account, amount)) in posting.entries.iter().enumerate() {
                    let account = match account {
                        Account::ProviderPayable(_) => "provider_payable".to_owned(),
                        other => other.to_string(),
                    };
                    let provider_id = posting.provider_id.map(|p| p.0);
                    ledger.push(LedgerRow {
                        position: e.pos(),
                        line: i32::try_from(line).unwrap_or(i32::MAX),
                        kind: posting.kind.as_str().to_owned(),
                        payment_id: id,
                        booking_id: posting.booking_id.0,
                        account,
                        provider_id,
                        currency: posting.currency.to_string(),
                        amount_minor: *amount,
                        at: e.effective_at,
                    });
                }
            }
            match p {
                PaymentEvent::PaymentIntentCreated { .. } => {}
                PaymentEvent::PaymentSucceeded { amount, .. } => {
                    row.status = "succeeded".into();
                    row.charged_minor += amount.minor;
                }
                PaymentEvent::PaymentFailed { .. } => row.status = "failed".into(),
                PaymentEvent::RefundRequested {
                    refund_id, amount, ..
                } => {
                    row.pending.insert(*refund_id, amount.minor);
                }
                PaymentEvent::RefundSucceeded {
                    refund_id, amount, ..
                } => {
                    row.pending.remove(refund_id);
                    row.refunded_minor += amount.minor;
                }
                PaymentEvent::RefundFailed { refund_id, .. } => {
                    row.pending.remove(refund_id);
                }
                PaymentEvent::FundsReleased { .. }
                | PaymentEvent::TransferStarted { .. }
                | PaymentEvent::FundsTransferred { .. }
                | PaymentEvent::TransferFailed { .. }
                | PaymentEvent::ReversalStarted { .. }
                | PaymentEvent::TransferReversed { .. }
                | PaymentEvent::ReversalFailed { .. } => {}
                PaymentEvent::ReceiptIssued {
                    booking_id,
                    number,
                    amount,
                    tax_rate_bp,
                    tax,
                    ..
                } => documents.push(DocumentRow {
                    number: number.to_string(),
                    kind: "receipt".into(),
                    year: number.year,
                    seq: i64::try_from(number.seq).unwrap_or(i64::MAX),
                    payment_id: id,
                    booking_id: booking_id.0,
                    refund_id: None,
                    receipt_number: None,
                    currency: amount.currency.to_string(),
                    amount_minor: amount.minor,
                    tax_rate_bp: i32::try_from(*tax_rate_bp).unwrap_or(i32::MAX),
                    tax_minor: tax.minor,
                    issued_at: e.effective_at,
                    position: e.pos(),
                }),
                PaymentEvent::CreditNoteIssued {
                    booking_id,
                    refund_id,
                    number,
                    receipt,
                    amount,
                    tax_rate_bp,
                    tax,
                    ..
                } => documents.push(DocumentRow {
                    number: number.to_string(),
                    kind: "credit_note".into(),
                    year: number.year,
                    seq: i64::try_from(number.seq).unwrap_or(i64::MAX),
                    payment_id: id,
                    booking_id: booking_id.0,
                    refund_id: Some(*refund_id),
                    receipt_number: Some(receipt.to_string()),
                    currency: amount.currency.to_string(),
                    amount_minor: amount.minor,
                    tax_rate_bp: i32::try_from(*tax_rate_bp).unwrap_or(i32::MAX),
                    tax_minor: tax.minor,
                    issued_at: e.effective_at,
                    position: e.pos(),
                }),
            }
            row.refunds_pending_minor = row.pending.values().sum();
            row.balance_minor = row.charged_minor - row.refunded_minor;
            row.updated_at = e.effective_at;
        }
        rows::upsert(conn, "payments", &["payment_id"], payments.changed()).await?;
        rows::insert(conn, "ledger", &ledger).await?;
        rows::insert(conn, "documents", &documents).await?;
        Ok(())
    }
}

/// The last report of each payout in `batch`.
fn payouts_of(batch: &[Envelope]) -> Vec<PayoutRow> {
    use tessera_domain::provider::ProviderEvent;
    let mut out: BTreeMap<String, PayoutRow> = BTreeMap::new();
    for e in batch {
        let (provider_id, account_ref, payout_ref, amount, status, failure) = match &e.event {
            AnyEvent::Provider(ProviderEvent::PayoutPaid {
                provider_id,
                account_ref,
                payout_ref,
                amount,
            }) => (provider_id, account_ref, payout_ref, amount, "paid", None),
            AnyEvent::Provider(ProviderEvent::PayoutFailed {
                provider_id,
                account_ref,
                payout_ref,
                amount,
                reason,
            }) => (
                provider_id,
                account_ref,
                payout_ref,
                amount,
                "failed",
                Some(reason.clone()),
            ),
            _ => continue,
        };
        out.insert(
            payout_ref.clone(),
            PayoutRow {
                payout_ref: payout_ref.clone(),
                provider_id: provider_id.0,
                account_ref: account_ref.clone(),
                status: status.into(),
                failure,
                currency: amount.currency.to_string(),
                amount_minor: amount.minor,
                updated_at: e.effective_at,
                position: e.pos(),
            },
        );
    }
    out.into_values().collect()
}

// ---------------------------------------------------------------------------------------------
// Queries: what the API reads from this read model, with the views it answers with.

/// A payment as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PaymentView {
    pub payment_id: Uuid,
    pub provider: String,
    pub provider_ref: String,
    pub status: String,
    pub currency: String,
    pub amount_minor: i64,
    pub charged_minor: i64,
    pub refunded_minor: i64,
    pub refunds_pending_minor: i64,
    pub balance_minor: i64,
}

/// A booking's payments.
pub async fn booking_payments(
    pool: &sqlx::PgPool,
    booking_id: Uuid,
) -> Result<Vec<PaymentView>, sqlx::Error> {
    sqlx::query_as(
        "SELECT payment_id, provider, provider_ref, status, currency, amount_minor, charged_minor,
                refunded_minor, refunds_pending_minor, balance_minor
           FROM read.payments WHERE booking_id = $1 ORDER BY payment_id",
    )
    .bind(booking_id)
    .fetch_all(pool)
    .await
}

/// A provider's statement for a period, per currency: what the platform owed it at the start,
/// what it earned (released shares, net of commission), gave back (refunds after the release),
/// was transferred, and owes at the end.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatementTotals {
    pub currency: String,
    /// Owed and not yet transferred at the start of the period.
    pub opening_minor: i64,
    /// What was released: paid and not refunded, for delivered bookings (share + commission).
    pub bookings_minor: i64,
    /// The platform's commission on what was released.
    pub commission_minor: i64,
    /// Commission the platform gave back with refunds after the release (not the provider's
    /// money: shown for the record, outside the balance).
    pub commission_returned_minor: i64,
    /// The provider's part of refunds after the release (given back).
    pub refunds_minor: i64,
    /// Transferred to the provider's account, net of reversals.
    pub transferred_minor: i64,
    /// Owed and not yet transferred at the end of the period.
    pub closing_minor: i64,
}

/// One posting of a provider's statement.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatementLine {
    pub position: i64,
    pub at: DateTime<Utc>,
    /// `release`, `refund`, `transfer` or `reversal`.
    pub kind: String,
    pub booking_id: Uuid,
    pub payment_id: Uuid,
    pub currency: String,
    /// Released (a release's share plus commission); zero on other lines.
    pub bookings_minor: i64,
    /// Commission kept (release) or given back (refund, negative).
    pub commission_minor: i64,
    /// What the platform owes the provider more (positive) or less (negative) after this line.
    pub owed_minor: i64,
}

/// A provider's statement from `from` (inclusive) to `to` (exclusive).
pub async fn provider_statement(
    pool: &sqlx::PgPool,
    provider: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<(Vec<StatementTotals>, Vec<StatementLine>), sqlx::Error> {
    let totals = sqlx::query_as(
        "SELECT currency,
                coalesce(-sum(amount_minor) FILTER (WHERE at < $2 AND account = 'provider_payable'), 0)::bigint AS opening_minor,
                coalesce(sum(amount_minor) FILTER (WHERE at >= $2 AND kind = 'release' AND account = 'customer_funds'), 0)::bigint AS bookings_minor,
                coalesce(-sum(amount_minor) FILTER (WHERE at >= $2 AND kind = 'release' AND account = 'commission_revenue'), 0)::bigint AS commission_minor,
                coalesce(sum(amount_minor) FILTER (WHERE at >= $2 AND kind = 'refund' AND account = 'commission_revenue'), 0)::bigint AS commission_returned_minor,
                coalesce(sum(amount_minor) FILTER (WHERE at >= $2 AND kind = 'refund' AND account = 'provider_payable'), 0)::bigint AS refunds_minor,
                coalesce(sum(amount_minor) FILTER (WHERE at >= $2 AND kind IN ('transfer', 'reversal') AND account = 'provider_payable'), 0)::bigint AS transferred_minor,
                coalesce(-sum(amount_minor) FILTER (WHERE account = 'provider_payable'), 0)::bigint AS closing_minor
           FROM read.ledger WHERE provider_id = $1 AND at < $3
          GROUP BY currency ORDER BY currency",
    )
    .bind(provider)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    let lines = sqlx::query_as(
        "SELECT position, at, kind, booking_id, payment_id, currency,
                coalesce(sum(amount_minor) FILTER (WHERE kind = 'release' AND account = 'customer_funds'), 0)::bigint AS bookings_minor,
                coalesce(-sum(amount_minor) FILTER (WHERE account = 'commission_revenue'), 0)::bigint AS commission_minor,
                coalesce(-sum(amount_minor) FILTER (WHERE account = 'provider_payable'), 0)::bigint AS owed_minor
           FROM read.ledger WHERE provider_id = $1 AND at >= $2 AND at < $3
          GROUP BY position, at, kind, booking_id, payment_id, currency
          ORDER BY position",
    )
    .bind(provider)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    Ok((totals, lines))
}

/// A receipt or credit note as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DocumentView {
    /// `2026-000123` (receipt) or `CN-2026-000007` (credit note).
    pub number: String,
    /// `receipt` or `credit_note`.
    pub kind: String,
    pub issued_at: DateTime<Utc>,
    pub payment_id: Uuid,
    /// The refund a credit note documents.
    pub refund_id: Option<Uuid>,
    /// The receipt a credit note corrects.
    pub receipt_number: Option<String>,
    pub currency: String,
    /// Paid (receipt) or refunded (credit note), tax included.
    pub amount_minor: i64,
    /// The tax rate the booking snapshotted, in basis points.
    pub tax_rate_bp: i32,
    /// The tax included in `amount_minor`.
    pub tax_minor: i64,
}

/// A booking's receipts and credit notes, in the order they were issued.
pub async fn booking_documents(
    pool: &sqlx::PgPool,
    booking_id: Uuid,
) -> Result<Vec<DocumentView>, sqlx::Error> {
    sqlx::query_as(
        "SELECT number, kind, issued_at, payment_id, refund_id, receipt_number, currency,
                amount_minor, tax_rate_bp, tax_minor
           FROM read.documents WHERE booking_id = $1 ORDER BY position",
    )
    .bind(booking_id)
    .fetch_all(pool)
    .await
}

/// A payout as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PayoutView {
    /// The gateway's payout (`po_…`).
    pub payout_ref: String,
    pub account_ref: String,
    /// `paid` or `failed` (a paid payout the bank returned becomes failed).
    pub status: String,
    /// Why it failed, as the gateway said.
    pub failure: Option<String>,
    pub currency: String,
    pub amount_minor: i64,
    pub updated_at: DateTime<Utc>,
}

/// A provider's payouts last reported from `from` (inclusive) to `to` (exclusive), newest
/// first.
pub async fn provider_payouts(
    pool: &sqlx::PgPool,
    provider: Uuid,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Result<Vec<PayoutView>, sqlx::Error> {
    sqlx::query_as(
        "SELECT payout_ref, account_ref, status, failure, currency, amount_minor, updated_at
           FROM read.payouts
          WHERE provider_id = $1 AND ($2::timestamptz IS NULL OR updated_at >= $2)
            AND ($3::timestamptz IS NULL OR updated_at < $3)
          ORDER BY updated_at DESC, payout_ref",
    )
    .bind(provider)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
}

/// A provider's monthly commission invoice from the platform, as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InvoiceRow {
    /// `INV-2026-000003`.
    pub number: String,
    pub provider_id: Uuid,
    /// The month invoiced, `YYYY-MM`.
    pub month: String,
    /// One line per currency.
    #[sqlx(json)]
    pub lines: Vec<InvoiceLineView>,
    pub issued_at: DateTime<Utc>,
    /// Where on the log it was issued.
    pub position: i64,
}

/// The commission of one currency in a month: kept at releases, less what refunds after the
/// release gave back.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InvoiceLineView {
    pub currency: String,
    pub commission_minor: i64,
    /// Releases and refunds it sums.
    pub entries: i64,
}

/// A provider's commission invoices, newest month first.
pub async fn provider_invoices(
    pool: &sqlx::PgPool,
    provider: Uuid,
) -> Result<Vec<InvoiceRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT number, provider_id, month, lines, issued_at, position
           FROM read.invoices WHERE provider_id = $1 ORDER BY month DESC, number",
    )
    .bind(provider)
    .fetch_all(pool)
    .await
}

/// The providers whose commission the ledger shows from `since` on: who may have a month to
/// invoice (the provider's stream decides whether it has).
pub async fn providers_with_commission(
    pool: &sqlx::PgPool,
    since: DateTime<Utc>,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT provider_id FROM read.ledger
          WHERE account = 'commission_revenue' AND provider_id IS NOT NULL AND at >= $1",
    )
    .bind(since)
    .fetch_all(pool)
    .await
}

/// One payout with its provider (the console's money page).
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct ProviderPayout {
    pub provider_id: Uuid,
    pub payout_ref: String,
    pub status: String,
    pub failure: Option<String>,
    pub currency: String,
    pub amount_minor: i64,
    pub updated_at: DateTime<Utc>,
}

/// The latest payouts of every provider, newest first.
pub async fn recent_payouts(
    pool: &sqlx::PgPool,
    limit: i64,
) -> Result<Vec<ProviderPayout>, sqlx::Error> {
    sqlx::query_as(
        "SELECT provider_id, payout_ref, status, failure, currency, amount_minor, updated_at
           FROM read.payouts ORDER BY updated_at DESC, payout_ref LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}
