//! The outbox table (`migrations/0011_outbox.sql`): what each person was told, when, and
//! whether it arrived. Messages go in once (their id is derived; a repeat is ignored), are
//! claimed for delivery with a lease (`FOR UPDATE SKIP LOCKED`, so two deliverers never send
//! one message at the same time), and end `sent`, `dead` or `discarded`.

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

pub type Result<T> = std::result::Result<T, sqlx::Error>;

/// What the recipient's data key seals (the associated data of each).
pub const ADDRESS: &str = "outbox.address";
pub const MESSAGE: &str = "outbox.message";

/// A message to insert.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: Uuid,
    pub template: String,
    pub recipient: Uuid,
    /// Sealed with the recipient's data key ([`ADDRESS`]).
    pub address: Vec<u8>,
    pub locale: String,
    pub marketing: bool,
    pub booking_id: Option<Uuid>,
    pub subject: String,
    /// Sealed with the recipient's data key ([`MESSAGE`]).
    pub message: Vec<u8>,
    pub event_position: i64,
    pub event_type: String,
    pub created_at: DateTime<Utc>,
    pub deliver_at: DateTime<Utc>,
}

/// Inserts `m` unless a message with its id exists; true when it was new.
pub async fn enqueue(pool: &PgPool, m: &NewMessage) -> Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO outbox (id, template, recipient, address, locale, marketing, booking_id,
                             subject, message, event_position, event_type, created_at,
                             deliver_at, next_attempt_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(m.id)
    .bind(&m.template)
    .bind(m.recipient)
    .bind(&m.address)
    .bind(&m.locale)
    .bind(m.marketing)
    .bind(m.booking_id)
    .bind(&m.subject)
    .bind(&m.message)
    .bind(m.event_position)
    .bind(&m.event_type)
    .bind(m.created_at)
    .bind(m.deliver_at)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Discards `booking`'s pending messages of `templates` (a reminder of a cancelled booking, the
/// hold warning of a paid one); returns how many.
pub async fn discard_pending(
    pool: &PgPool,
    booking: Uuid,
    templates: &[&str],
    note: &str,
) -> Result<u64> {
    discard_pending_but(pool, booking, templates, Uuid::nil(), note).await
}

/// [`discard_pending`], keeping the message `keep` (one that replaces those discarded and may
/// already be written when the event that writes it is delivered again).
pub async fn discard_pending_but(
    pool: &PgPool,
    booking: Uuid,
    templates: &[&str],
    keep: Uuid,
    note: &str,
) -> Result<u64> {
    let templates: Vec<String> = templates.iter().map(|t| (*t).to_owned()).collect();
    Ok(sqlx::query(
        "UPDATE outbox SET status = 'discarded', note = $3
         WHERE booking_id = $1 AND template = ANY($2) AND status = 'pending' AND id <> $4",
    )
    .bind(booking)
    .bind(&templates)
    .bind(note)
    .bind(keep)
    .execute(pool)
    .await?
    .rows_affected())
}

/// After `recipient`'s erasure: nothing more goes to them, and no message state keeps their
/// address or words (the subject keeps only the template's name).
pub async fn erase_recipient(pool: &PgPool, recipient: Uuid) -> Result<u64> {
    Ok(sqlx::query(
        "UPDATE outbox SET address = NULL, message = NULL, subject = '[erased] ' || template,
                last_error = NULL,
                status = CASE WHEN status IN ('pending', 'dead') THEN 'discarded' ELSE status END,
                note = CASE WHEN status IN ('pending', 'dead') THEN 'recipient erased' ELSE note END
         WHERE recipient = $1 AND (address IS NOT NULL OR message IS NOT NULL)",
    )
    .bind(recipient)
    .execute(pool)
    .await?
    .rows_affected())
}

/// A message claimed for one delivery attempt.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub id: Uuid,
    pub recipient: Uuid,
    /// Sealed.
    pub address: Vec<u8>,
    /// Sealed.
    pub message: Vec<u8>,
    /// Attempts including this one.
    pub attempts: i32,
}

/// Claims up to `limit` due messages, oldest due first; each stays claimed for `lease` (if the
/// deliverer dies meanwhile, the message is due again once the lease ends).
pub async fn claim_due(
    pool: &PgPool,
    now: DateTime<Utc>,
    lease: TimeDelta,
    limit: i64,
) -> Result<Vec<Claimed>> {
    sqlx::query_as(
        "UPDATE outbox o SET attempts = o.attempts + 1, next_attempt_at = $2
         FROM (SELECT id FROM outbox
               WHERE status = 'pending' AND next_attempt_at <= $1
               ORDER BY next_attempt_at, id
               LIMIT $3
               FOR UPDATE SKIP LOCKED) due
         WHERE o.id = due.id AND o.address IS NOT NULL AND o.message IS NOT NULL
         RETURNING o.id, o.recipient, o.address, o.message, o.attempts",
    )
    .bind(now)
    .bind(now + lease)
    .bind(limit)
    .fetch_all(pool)
    .await
}

pub async fn mark_sent(pool: &PgPool, id: Uuid, now: DateTime<Utc>) -> Result<()> {
    sqlx::query(
        "UPDATE outbox SET status = 'sent', sent_at = $2, last_error = NULL
         WHERE id = $1 AND status = 'pending'",
    )
    .bind(id)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records a failed attempt: `retry_at` schedules the next one, `None` dead-letters it.
pub async fn mark_failed(
    pool: &PgPool,
    id: Uuid,
    error: &str,
    retry_at: Option<DateTime<Utc>>,
) -> Result<()> {
    let error: String = error.chars().take(500).collect();
    match retry_at {
        Some(at) => sqlx::query(
            "UPDATE outbox SET last_error = $2, next_attempt_at = $3
             WHERE id = $1 AND status = 'pending'",
        )
        .bind(id)
        .bind(&error)
        .bind(at),
        None => sqlx::query(
            "UPDATE outbox SET last_error = $2, status = 'dead'
             WHERE id = $1 AND status = 'pending'",
        )
        .bind(id)
        .bind(&error),
    }
    .execute(pool)
    .await?;
    Ok(())
}

/// One message as admins and auditors see it (never its body).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Row {
    pub id: Uuid,
    pub template: String,
    pub recipient: Uuid,
    /// The sealed address (`null` once the recipient was erased).
    #[serde(skip)]
    pub sealed_address: Option<Vec<u8>>,
    /// The address, once [`reveal`] opened it (`null` once the recipient was erased).
    pub address: Option<String>,
    pub locale: String,
    pub marketing: bool,
    pub booking_id: Option<Uuid>,
    pub subject: String,
    pub event_position: i64,
    pub event_type: String,
    pub created_at: DateTime<Utc>,
    pub deliver_at: DateTime<Utc>,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
    pub note: Option<String>,
}

/// Which messages to list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub status: Option<String>,
    pub recipient: Option<Uuid>,
    pub booking: Option<Uuid>,
    pub template: Option<String>,
    pub limit: i64,
}

/// Messages matching `filter`, newest first.
pub async fn list(pool: &PgPool, filter: &Filter) -> Result<Vec<Row>> {
    sqlx::query_as(
        "SELECT id, template, recipient, address AS sealed_address, NULL::text AS address, locale, marketing, booking_id, subject,
                event_position, event_type, created_at, deliver_at, status, attempts,
                next_attempt_at, last_error, sent_at, note
         FROM outbox
         WHERE ($1::text IS NULL OR status = $1) AND ($2::uuid IS NULL OR recipient = $2)
           AND ($3::uuid IS NULL OR booking_id = $3) AND ($4::text IS NULL OR template = $4)
         ORDER BY created_at DESC, id
         LIMIT $5",
    )
    .bind(&filter.status)
    .bind(filter.recipient)
    .bind(filter.booking)
    .bind(&filter.template)
    .bind(filter.limit.clamp(1, 1000))
    .fetch_all(pool)
    .await
}

/// One message by id.
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<Row>> {
    sqlx::query_as(
        "SELECT id, template, recipient, address AS sealed_address, NULL::text AS address, locale, marketing, booking_id, subject,
                event_position, event_type, created_at, deliver_at, status, attempts,
                next_attempt_at, last_error, sent_at, note
         FROM outbox WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Opens the addresses of `rows` for people who may see them (admins, auditors).
pub async fn reveal(
    vault: &tessera_log::pii::Vault,
    rows: &mut [Row],
) -> std::result::Result<(), tessera_log::store::StoreError> {
    for r in rows {
        if let Some(sealed) = &r.sealed_address {
            r.address = vault
                .open_for(r.recipient, ADDRESS, sealed)
                .await?
                .and_then(|a| String::from_utf8(a).ok());
        }
    }
    Ok(())
}

/// Discards a message whose recipient can no longer be read (erased meanwhile).
pub async fn discard_unreadable(pool: &PgPool, id: Uuid) -> Result<()> {
    sqlx::query(
        "UPDATE outbox SET status = 'discarded', note = 'recipient erased', address = NULL,
                message = NULL
         WHERE id = $1 AND status = 'pending'",
    )
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

/// What an admin's retry or discard found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Done,
    /// The message is not in a state that allows it (its status is returned by [`get`]).
    NotAllowed,
    NotFound,
}

/// Puts a dead or discarded message back in the queue, due now, with fresh attempts.
pub async fn retry(pool: &PgPool, id: Uuid, now: DateTime<Utc>, note: &str) -> Result<Change> {
    let changed = sqlx::query(
        "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = $2, note = $3
         WHERE id = $1 AND status IN ('dead', 'discarded') AND message IS NOT NULL",
    )
    .bind(id)
    .bind(now)
    .bind(note)
    .execute(pool)
    .await?
    .rows_affected();
    change(pool, id, changed).await
}

/// Gives up on a pending or dead message.
pub async fn discard(pool: &PgPool, id: Uuid, note: &str) -> Result<Change> {
    let changed = sqlx::query(
        "UPDATE outbox SET status = 'discarded', note = $2
         WHERE id = $1 AND status IN ('pending', 'dead')",
    )
    .bind(id)
    .bind(note)
    .execute(pool)
    .await?
    .rows_affected();
    change(pool, id, changed).await
}

async fn change(pool: &PgPool, id: Uuid, changed: u64) -> Result<Change> {
    if changed == 1 {
        return Ok(Change::Done);
    }
    Ok(match get(pool, id).await? {
        Some(_) => Change::NotAllowed,
        None => Change::NotFound,
    })
}

/// The queue at a glance (also exported as metrics).
#[derive(Debug, Clone, Copy, Default, Serialize, sqlx::FromRow)]
pub struct Stats {
    pub pending: i64,
    /// Pending and due now.
    pub due: i64,
    pub sent: i64,
    pub dead: i64,
    pub discarded: i64,
    /// Seconds since the oldest due message became due (0: none waits).
    pub oldest_due_seconds: i64,
}

pub async fn stats(pool: &PgPool, now: DateTime<Utc>) -> Result<Stats> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
                count(*) FILTER (WHERE status = 'pending' AND deliver_at <= $1) AS due,
                count(*) FILTER (WHERE status = 'sent') AS sent,
                count(*) FILTER (WHERE status = 'dead') AS dead,
                count(*) FILTER (WHERE status = 'discarded') AS discarded,
                coalesce(extract(epoch FROM $1 - min(deliver_at)
                    FILTER (WHERE status = 'pending' AND deliver_at <= $1))::bigint, 0)
                    AS oldest_due_seconds
         FROM outbox",
    )
    .bind(now)
    .fetch_one(pool)
    .await
}
