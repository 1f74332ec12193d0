//! Bookings by id and by customer: status, amounts, the snapshotted policy, and a timeline of
//! everything that happened to each booking (its own events and its payment's).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use tessera_domain::booking::{BookingEvent, BookingStatus, Canceller};
use tessera_log::codec::AnyEvent;
use uuid::Uuid;

use super::{inconsistent, json, keys_to_load, places_booking};
use crate::SqlProjection;
use crate::envelope::Envelope;
use crate::error::ProjectionError;
use crate::rows::{self, Rows};

#[derive(Debug, Default)]
pub struct Bookings;

const NAME: &str = "bookings";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BookingRow {
    pub booking_id: Uuid,
    pub customer_id: Uuid,
    pub listing_id: Uuid,
    pub slot_id: Uuid,
    pub seats: i64,
    pub status: String,
    pub total_minor: i64,
    pub currency: String,
    pub paid_minor: i64,
    pub refund_due_minor: i64,
    pub refunded_minor: i64,
    pub policy: serde_json::Value,
    pub slot_starts_at: DateTime<Utc>,
    pub slot_ends_at: DateTime<Utc>,
    pub hold_expires_at: DateTime<Utc>,
    pub payment_id: Option<Uuid>,
    pub cancelled_by: Option<String>,
    pub cancel_reason: Option<String>,
    pub checked_in_seats: i64,
    pub move_to_slot_id: Option<Uuid>,
    pub move_payment_id: Option<Uuid>,
    pub move_charge_minor: Option<i64>,
    pub move_expires_at: Option<DateTime<Utc>>,
    pub placed_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TimelineRow {
    pub booking_id: Uuid,
    pub position: i64,
    pub event_type: String,
    pub status: String,
    pub at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub actor: String,
    pub reason: Option<String>,
    pub detail: serde_json::Value,
}

fn status(s: BookingStatus) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn booking_of(e: &Envelope) -> Option<Uuid> {
    match &e.event {
        AnyEvent::Booking(b) => Some(match b {
            BookingEvent::BookingPlaced { booking_id, .. }
            | BookingEvent::BookingPaymentStarted { booking_id, .. }
            | BookingEvent::BookingPaymentFailed { booking_id, .. }
            | BookingEvent::BookingConfirmed { booking_id, .. }
            | BookingEvent::BookingExpired { booking_id }
            | BookingEvent::BookingCancelled { booking_id, .. }
            | BookingEvent::BookingCompleted { booking_id }
            | BookingEvent::LatePaymentAccepted { booking_id, .. }
            | BookingEvent::BookingRefunded { booking_id, .. }
            | BookingEvent::BookingReinstated { booking_id, .. }
            | BookingEvent::TicketCheckedIn { booking_id, .. }
            | BookingEvent::BookingNoShow { booking_id }
            | BookingEvent::BookingRescheduled { booking_id, .. }
            | BookingEvent::BookingMoveRequested { booking_id, .. }
            | BookingEvent::BookingMoveAbandoned { booking_id, .. } => booking_id.0,
        }),
        AnyEvent::Payment(p) => Some(p.ids().1.0),
        _ => None,
    }
}

#[async_trait]
impl SqlProjection for Bookings {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> u32 {
        // 2: no indexes on `listing_id` and `slot_id`; no query reads bookings by them, and each
        // cost two random-key index insertions per booking written.
        // 3: indexes on `slot_id` (manifests) and `(listing_id, slot_starts_at)` (providers'
        // bookings lists), which now read bookings by them.
        // 4: `refund_due_minor` is everything owed back: moves to cheaper slots, refunds made
        // before a cancellation, and the cancellation's refund.
        // 5: a move to a dearer slot waiting for its top-up (`move_*`).
        5
    }

    fn ddl(&self) -> String {
        r#"
CREATE TABLE bookings (
    booking_id uuid PRIMARY KEY, customer_id uuid NOT NULL, listing_id uuid NOT NULL,
    slot_id uuid NOT NULL, seats bigint NOT NULL, status text NOT NULL,
    total_minor bigint NOT NULL, currency text NOT NULL, paid_minor bigint NOT NULL,
    refund_due_minor bigint NOT NULL, refunded_minor bigint NOT NULL, policy jsonb NOT NULL,
    slot_starts_at timestamptz NOT NULL, slot_ends_at timestamptz NOT NULL,
    hold_expires_at timestamptz NOT NULL, payment_id uuid, cancelled_by text, cancel_reason text,
    checked_in_seats bigint NOT NULL, move_to_slot_id uuid, move_payment_id uuid,
    move_charge_minor bigint, move_expires_at timestamptz,
    placed_at timestamptz NOT NULL, updated_at timestamptz NOT NULL, version bigint NOT NULL
);
CREATE INDEX bookings_customer ON bookings (customer_id, placed_at DESC, booking_id);
CREATE INDEX bookings_slot ON bookings (slot_id, placed_at);
CREATE INDEX bookings_listing ON bookings (listing_id, slot_starts_at);
CREATE TABLE booking_timeline (
    booking_id uuid NOT NULL, position bigint NOT NULL, event_type text NOT NULL,
    status text NOT NULL, at timestamptz NOT NULL, recorded_at timestamptz NOT NULL,
    actor text NOT NULL, reason text, detail jsonb NOT NULL,
    PRIMARY KEY (booking_id, position)
);
"#
        .to_owned()
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        batch: &[Envelope],
    ) -> Result<(), ProjectionError> {
        let touches: Vec<(Uuid, bool)> = batch
            .iter()
            .filter_map(|e| Some((booking_of(e)?, places_booking(e))))
            .collect();
        if touches.is_empty() {
            return Ok(());
        }
        let ids = keys_to_load(touches);
        let mut bookings: Rows<Uuid, BookingRow> = Rows::default();
        for r in rows::load::<BookingRow>(conn, "bookings", "booking_id", &ids).await? {
            bookings.rows.insert(r.booking_id, r);
        }
        let mut timeline = Vec::new();
        for e in batch {
            let Some(id) = booking_of(e) else { continue };
            if let AnyEvent::Booking(BookingEvent::BookingPlaced {
                customer_id,
                listing_id,
                slot_id,
                seats,
                total,
                policy,
                slot_starts_at,
                slot_ends_at,
                hold_expires_at,
                ..
            }) = &e.event
            {
                bookings.put(
                    id,
                    BookingRow {
                        booking_id: id,
                        customer_id: customer_id.0,
                        listing_id: listing_id.0,
                        slot_id: slot_id.0,
                        seats: i64::from(*seats),
                        status: status(BookingStatus::Held),
                        total_minor: total.minor,
                        currency: total.currency.to_string(),
                        paid_minor: 0,
                        refund_due_minor: 0,
                        refunded_minor: 0,
                        policy: json(NAME, e, policy)?,
                        slot_starts_at: *slot_starts_at,
                        slot_ends_at: *slot_ends_at,
                        hold_expires_at: *hold_expires_at,
                        payment_id: None,
                        cancelled_by: None,
                        cancel_reason: None,
                        checked_in_seats: 0,
                        move_to_slot_id: None,
                        move_payment_id: None,
                        move_charge_minor: None,
                        move_expires_at: None,
                        placed_at: e.effective_at,
                        updated_at: e.effective_at,
                        version: e.pos(),
                    },
                );
            }
            let Some(row) = bookings.get_mut(&id) else {
                return Err(inconsistent(
                    NAME,
                    e,
                    format!("booking {id} was never placed"),
                ));
            };
            if let AnyEvent::Booking(b) = &e.event {
                apply_booking(row, b);
            }
            row.updated_at = e.effective_at;
            row.version = e.pos();
            timeline.push(TimelineRow {
                booking_id: id,
                position: e.pos(),
                event_type: e.event_type.clone(),
                status: row.status.clone(),
                at: e.effective_at,
                recorded_at: e.recorded_at,
                actor: e.metadata.actor.clone(),
                reason: e.metadata.reason.clone(),
                detail: detail(e)?,
            });
        }
        rows::upsert(conn, "bookings", &["booking_id"], bookings.changed()).await?;
        rows::insert(conn, "booking_timeline", &timeline).await?;
        Ok(())
    }
}

fn apply_booking(row: &mut BookingRow, b: &BookingEvent) {
    match b {
        BookingEvent::BookingPlaced { .. } => {}
        BookingEvent::BookingPaymentStarted { payment_id, .. } => {
            row.status = status(BookingStatus::PaymentPending);
            row.payment_id = Some(payment_id.0);
        }
        BookingEvent::BookingPaymentFailed { .. } => row.status = status(BookingStatus::Held),
        BookingEvent::BookingConfirmed {
            payment_id,
            amount_paid,
            ..
        }
        | BookingEvent::LatePaymentAccepted {
            payment_id,
            amount_paid,
            ..
        } => {
            row.status = status(BookingStatus::Confirmed);
            row.payment_id = Some(payment_id.0);
            row.paid_minor = amount_paid.minor;
        }
        BookingEvent::BookingExpired { .. } => row.status = status(BookingStatus::Expired),
        BookingEvent::BookingCancelled {
            by,
            reason,
            refund_due,
            ..
        } => {
            row.status = status(BookingStatus::Cancelled);
            // What is owed back in all: a move to a cheaper slot may have owed some already.
            row.refund_due_minor += refund_due.minor;
            row.cancelled_by = Some(
                match by {
                    Canceller::Customer(_) => "customer",
                    Canceller::Provider(_) => "provider",
                    Canceller::Admin(_) => "admin",
                }
                .to_owned(),
            );
            row.cancel_reason.clone_from(reason);
            // A move waiting for its top-up ends with the booking.
            clear_move(row);
        }
        BookingEvent::BookingCompleted { .. } => row.status = status(BookingStatus::Completed),
        BookingEvent::BookingRefunded { total_refunded, .. } => {
            row.refunded_minor = total_refunded.minor;
            // The domain's rules: a cancelled booking is refunded once what was due is paid
            // back; before a cancellation, a refund beyond what moves owed is owed and paid.
            let cancelled = status(BookingStatus::Cancelled);
            if row.status == cancelled {
                if row.refunded_minor >= row.refund_due_minor {
                    row.status = status(BookingStatus::Refunded);
                }
            } else if row.status != status(BookingStatus::Refunded) {
                row.refund_due_minor = row.refund_due_minor.max(row.refunded_minor);
            }
        }
        BookingEvent::BookingReinstated {
            hold_expires_at, ..
        } => {
            row.status = status(BookingStatus::Held);
            row.hold_expires_at = *hold_expires_at;
            row.payment_id = None;
        }
        BookingEvent::TicketCheckedIn { .. } => row.checked_in_seats += 1,
        BookingEvent::BookingNoShow { .. } => row.status = status(BookingStatus::NoShow),
        BookingEvent::BookingRescheduled {
            to_slot,
            slot_starts_at,
            slot_ends_at,
            total,
            refund,
            top_up,
            ..
        } => {
            row.slot_id = to_slot.0;
            row.slot_starts_at = *slot_starts_at;
            row.slot_ends_at = *slot_ends_at;
            row.total_minor = total.minor;
            row.refund_due_minor += refund.minor;
            // A dearer slot's difference was paid by a top-up: `paid_minor` counts every payment.
            if let Some(t) = top_up {
                row.paid_minor += t.amount.minor;
            }
            clear_move(row);
        }
        // A move waiting for its top-up; it changes the booking only when it completes.
        BookingEvent::BookingMoveRequested {
            payment_id,
            to_slot,
            charge,
            expires_at,
            ..
        } => {
            row.move_to_slot_id = Some(to_slot.0);
            row.move_payment_id = Some(payment_id.0);
            row.move_charge_minor = Some(charge.minor);
            row.move_expires_at = Some(*expires_at);
        }
        BookingEvent::BookingMoveAbandoned { .. } => clear_move(row),
    }
}

fn clear_move(row: &mut BookingRow) {
    row.move_to_slot_id = None;
    row.move_payment_id = None;
    row.move_charge_minor = None;
    row.move_expires_at = None;
}

/// The event's own data, for the timeline.
fn detail(e: &Envelope) -> Result<serde_json::Value, ProjectionError> {
    let v = json(NAME, e, &e.event)?;
    Ok(v.get("data").cloned().unwrap_or(serde_json::Value::Null))
}

// ---------------------------------------------------------------------------------------------
// Queries: what the API reads from this read model (through the `read` views of the active
// generation), with the views it answers with.

/// A booking as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BookingView {
    pub booking_id: Uuid,
    pub customer_id: Uuid,
    pub listing_id: Uuid,
    pub slot_id: Uuid,
    pub seats: i64,
    pub status: String,
    pub total_minor: i64,
    pub currency: String,
    pub paid_minor: i64,
    /// Everything owed back: moves to cheaper slots, refunds before a cancellation, and the
    /// cancellation's refund.
    pub refund_due_minor: i64,
    pub refunded_minor: i64,
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub policy: serde_json::Value,
    pub slot_starts_at: DateTime<Utc>,
    pub slot_ends_at: DateTime<Utc>,
    pub hold_expires_at: DateTime<Utc>,
    pub payment_id: Option<Uuid>,
    pub cancelled_by: Option<String>,
    pub cancel_reason: Option<String>,
    /// Seats whose ticket was checked in at the door.
    pub checked_in_seats: i64,
    /// A move to a dearer slot waiting for its top-up: the slot, the top-up payment, what it
    /// charges and when the move lapses if unpaid (all null when no move waits).
    pub move_to_slot_id: Option<Uuid>,
    pub move_payment_id: Option<Uuid>,
    pub move_charge_minor: Option<i64>,
    pub move_expires_at: Option<DateTime<Utc>>,
    pub placed_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const BOOKING_COLUMNS: &str = "booking_id, customer_id, listing_id, slot_id, seats, status, \
    total_minor, currency, paid_minor, refund_due_minor, refunded_minor, policy, slot_starts_at, \
    slot_ends_at, hold_expires_at, payment_id, cancelled_by, cancel_reason, checked_in_seats, \
    move_to_slot_id, move_payment_id, move_charge_minor, move_expires_at, placed_at, updated_at";

/// One state change of a booking, as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TimelineEntry {
    pub position: i64,
    pub event_type: String,
    pub status: String,
    /// Business time of the change.
    pub at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub actor: String,
    pub reason: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub detail: serde_json::Value,
}

/// A customer's bookings (with `status`, only those), newest first.
pub async fn customer_bookings(
    pool: &sqlx::PgPool,
    customer: Uuid,
    status: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<Vec<BookingView>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {BOOKING_COLUMNS} FROM read.bookings
          WHERE customer_id = $1 AND ($2::text IS NULL OR status = $2)
          ORDER BY placed_at DESC, booking_id LIMIT $3 OFFSET $4"
    )))
    .bind(customer)
    .bind(status)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await
}

/// Which bookings a search returns; every given filter must hold.
#[derive(Debug, Clone, Default)]
pub struct BookingFilter {
    /// Only bookings of this provider's listings.
    pub provider: Option<Uuid>,
    /// Only this customer's bookings.
    pub customer: Option<Uuid>,
    pub listing: Option<Uuid>,
    pub slot: Option<Uuid>,
    pub status: Option<String>,
    /// Slots starting at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Slots starting before this time.
    pub to: Option<DateTime<Utc>>,
}

/// Bookings matching `f`, by their slot's start and then placement (oldest first), a page at
/// a time; with the number of all matches.
pub async fn search_bookings(
    pool: &sqlx::PgPool,
    f: &BookingFilter,
    limit: i64,
    offset: i64,
) -> Result<(Vec<BookingView>, i64), sqlx::Error> {
    const WHERE: &str = "($1::uuid IS NULL OR listing_id IN \
              (SELECT listing_id FROM read.listings WHERE provider_id = $1)) \
          AND ($2::uuid IS NULL OR customer_id = $2) AND ($3::uuid IS NULL OR listing_id = $3) \
          AND ($4::uuid IS NULL OR slot_id = $4) AND ($5::text IS NULL OR status = $5) \
          AND ($6::timestamptz IS NULL OR slot_starts_at >= $6) \
          AND ($7::timestamptz IS NULL OR slot_starts_at < $7)";
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {BOOKING_COLUMNS} FROM read.bookings WHERE {WHERE}
          ORDER BY slot_starts_at, placed_at, booking_id LIMIT $8 OFFSET $9"
    )))
    .bind(f.provider)
    .bind(f.customer)
    .bind(f.listing)
    .bind(f.slot)
    .bind(f.status.as_deref())
    .bind(f.from)
    .bind(f.to)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    let total = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM read.bookings WHERE {WHERE}"
    )))
    .bind(f.provider)
    .bind(f.customer)
    .bind(f.listing)
    .bind(f.slot)
    .bind(f.status.as_deref())
    .bind(f.from)
    .bind(f.to)
    .fetch_one(pool)
    .await?;
    Ok((rows, total))
}

/// Every booking ever placed on a slot, in the order placed.
pub async fn slot_bookings(
    pool: &sqlx::PgPool,
    slot: Uuid,
) -> Result<Vec<BookingView>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {BOOKING_COLUMNS} FROM read.bookings WHERE slot_id = $1
          ORDER BY placed_at, booking_id"
    )))
    .bind(slot)
    .fetch_all(pool)
    .await
}

/// One booking.
pub async fn booking(
    pool: &sqlx::PgPool,
    booking_id: Uuid,
) -> Result<Option<BookingView>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {BOOKING_COLUMNS} FROM read.bookings WHERE booking_id = $1"
    )))
    .bind(booking_id)
    .fetch_optional(pool)
    .await
}

/// Every state change of a booking, in log order.
pub async fn timeline(
    pool: &sqlx::PgPool,
    booking_id: Uuid,
) -> Result<Vec<TimelineEntry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT position, event_type, status, at, recorded_at, actor, reason, detail
           FROM read.booking_timeline WHERE booking_id = $1 ORDER BY position",
    )
    .bind(booking_id)
    .fetch_all(pool)
    .await
}
