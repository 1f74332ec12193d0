//! Reading the log as an auditor: one booking's full history across streams (following
//! causation links), the state of any aggregate as of a position or a moment (replayed through
//! the pure domain, never read from read models), and browsing the global log with a cursor.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sqlx::PgPool;
use tessera_domain::aggregate::Aggregate;
use tessera_domain::booking::BookingAggregate;
use tessera_domain::listing::ListingAggregate;
use tessera_domain::loyalty::LoyaltyAggregate;
use tessera_domain::payment::PaymentAggregate;
use tessera_domain::review::ReviewAggregate;
use tessera_domain::slot::SlotAggregate;
use tessera_domain::user::{EmailReservationAggregate, UserAggregate};
use uuid::Uuid;

use super::AuditError;
use crate::codec;
use crate::store::postgres::EventRow;
use crate::store::{RecordedEvent, StreamId};

/// A moment of the log: a position, or a time (what the log had recorded by then).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AsOf {
    Head,
    Position(u64),
    Time(DateTime<Utc>),
}

impl AsOf {
    fn includes(&self, e: &RecordedEvent) -> bool {
        match self {
            Self::Head => true,
            Self::Position(p) => e.position.0 <= *p,
            Self::Time(t) => e.recorded_at <= *t,
        }
    }
}

/// One event as auditors see it: every stored field, the payload byte for byte, and why it
/// belongs to the history being read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogEntry {
    pub position: u64,
    pub stream: String,
    pub version: u64,
    pub event_type: String,
    pub schema_version: u32,
    pub event_id: Uuid,
    /// The stored JSON payload, exactly as hashed.
    pub data: Box<RawValue>,
    pub actor: String,
    pub reason: Option<String>,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub recorded_at: DateTime<Utc>,
    pub effective_at: DateTime<Utc>,
    /// Hex SHA-256 chain value of this event.
    pub hash: String,
    /// Hash of the previous event of the stream (exports carry it, so that every event can be
    /// checked offline on its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_hash: Option<String>,
    /// For events with personal data: the payload as it reads today, personal fields decrypted,
    /// or placeholders once the person was erased (`data` keeps the stored ciphertext).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal: Option<serde_json::Value>,
    /// Why this event is part of a booking's history (absent in plain log reads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// The type of the event that caused this one, when that event is in the same history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caused_by: Option<String>,
}

impl LogEntry {
    pub fn from_event(e: RecordedEvent) -> Result<Self, AuditError> {
        let data = RawValue::from_string(e.data).map_err(|err| {
            AuditError::Store(crate::store::StoreError::Corrupt {
                position: e.position,
                reason: format!("stored data is not JSON: {err}"),
            })
        })?;
        Ok(Self {
            position: e.position.0,
            stream: e.stream_id.to_string(),
            version: e.stream_version,
            event_type: e.event_type,
            schema_version: e.schema_version,
            event_id: e.event_id,
            data,
            actor: e.metadata.actor,
            reason: e.metadata.reason,
            correlation_id: e.metadata.correlation_id,
            causation_id: e.metadata.causation_id,
            recorded_at: e.recorded_at,
            effective_at: e.effective_at,
            hash: e.hash.to_hex(),
            previous_hash: None,
            personal: None,
            link: None,
            caused_by: None,
        })
    }
}

pub(crate) const COLUMNS: &str = "position, event_id, stream_id, stream_version, event_type, schema_version, \
     data::text AS data, correlation_id, causation_id, actor, reason, recorded_at, effective_at, hash";

async fn fetch(
    pool: &PgPool,
    condition: &str,
    bind: impl FnOnce(
        sqlx::query::QueryAs<'_, sqlx::Postgres, EventRow, sqlx::postgres::PgArguments>,
    )
        -> sqlx::query::QueryAs<'_, sqlx::Postgres, EventRow, sqlx::postgres::PgArguments>,
) -> Result<Vec<RecordedEvent>, AuditError> {
    let sql = format!("SELECT {COLUMNS} FROM events WHERE {condition}");
    let rows = bind(sqlx::query_as(sqlx::AssertSqlSafe(sql)))
        .fetch_all(pool)
        .await?;
    rows.into_iter()
        .map(|r| r.into_event().map_err(AuditError::from))
        .collect()
}

/// Every event that touched a booking, in log order: its own stream, its seat holds on the slot,
/// its payment streams (charges and refunds), the points awarded and reversed for it, its review,
/// every event those caused (badges, refunds run by reactors, …) and the events that caused
/// them (a provider's slot cancellation, an admin's command). `as_of` cuts it at a moment.
pub async fn booking_history(
    pool: &PgPool,
    booking_id: Uuid,
    as_of: AsOf,
) -> Result<Vec<LogEntry>, AuditError> {
    let events = related_events(pool, booking_id, as_of).await?;
    let types: std::collections::HashMap<Uuid, String> = events
        .iter()
        .map(|(e, _)| (e.event_id, e.event_type.clone()))
        .collect();
    events
        .into_iter()
        .map(|(e, link)| {
            let caused_by = e.metadata.causation_id.and_then(|c| types.get(&c).cloned());
            let mut entry = LogEntry::from_event(e)?;
            entry.link = Some(link.to_owned());
            entry.caused_by = caused_by;
            Ok(entry)
        })
        .collect()
}

/// The booking's own events and its payments', up to `as_of`: what the bookings read model is
/// built from.
pub async fn booking_events(
    pool: &PgPool,
    booking_id: Uuid,
    as_of: AsOf,
) -> Result<Vec<RecordedEvent>, AuditError> {
    Ok(related_events(pool, booking_id, as_of)
        .await?
        .into_iter()
        .filter(|(e, link)| {
            *link != "cause" && matches!(e.stream_id.category(), "booking" | "payment")
        })
        .map(|(e, _)| e)
        .collect())
}

/// Every event related to a booking (see [`booking_history`]) with why, in log order.
async fn related_events(
    pool: &PgPool,
    booking_id: Uuid,
    as_of: AsOf,
) -> Result<Vec<(RecordedEvent, &'static str)>, AuditError> {
    let id = booking_id.to_string();
    let own = fetch(pool, "stream_id = $1 ORDER BY position", |q| {
        q.bind(format!("booking-{id}"))
    })
    .await?;
    if own.is_empty() {
        return Err(AuditError::NotFound {
            what: "booking",
            id,
        });
    }
    // Related streams, named in the booking's own events.
    let mut slot = None;
    let mut customer = None;
    let mut payments = Vec::new();
    for e in &own {
        let v: serde_json::Value = serde_json::from_str(&e.data).unwrap_or_default();
        if let Some(s) = v.get("slot_id").and_then(|s| s.as_str()) {
            slot.get_or_insert_with(|| format!("slot-{s}"));
        }
        if let Some(c) = v.get("customer_id").and_then(|s| s.as_str()) {
            customer.get_or_insert_with(|| format!("loyalty-{c}"));
        }
        if let Some(p) = v.get("payment_id").and_then(|s| s.as_str()) {
            let stream = format!("payment-{p}");
            if !payments.contains(&stream) {
                payments.push(stream);
            }
        }
    }
    let filtered: Vec<String> = slot.into_iter().chain(customer).collect();
    let mut events: Vec<(RecordedEvent, &'static str)> =
        own.into_iter().map(|e| (e, "booking")).collect();
    for e in fetch(
        pool,
        "(stream_id = ANY($1) AND data->>'booking_id' = $2) OR stream_id = ANY($3) OR stream_id = $4 \
         ORDER BY position",
        |q| {
            q.bind(filtered)
                .bind(id.clone())
                .bind(payments)
                .bind(format!("review-{id}"))
        },
    )
    .await?
    {
        let link = match e.stream_id.category() {
            "slot" => "seats",
            "payment" => "payment",
            "loyalty" => "points",
            "review" => "review",
            _ => "related",
        };
        events.push((e, link));
    }
    // Follow causation forward (what these events caused, transitively, a few hops) and one
    // step backward (what caused them), without fanning out from the causes.
    let mut known: std::collections::HashSet<Uuid> =
        events.iter().map(|(e, _)| e.event_id).collect();
    let mut frontier: Vec<Uuid> = known.iter().copied().collect();
    for _ in 0..4 {
        if frontier.is_empty() {
            break;
        }
        let caused = fetch(pool, "causation_id = ANY($1) ORDER BY position", |q| {
            q.bind(frontier.clone())
        })
        .await?;
        frontier.clear();
        for e in caused {
            if known.insert(e.event_id) {
                frontier.push(e.event_id);
                events.push((e, "caused"));
            }
        }
    }
    let causes: Vec<Uuid> = events
        .iter()
        .filter_map(|(e, _)| e.metadata.causation_id)
        .filter(|c| !known.contains(c))
        .collect();
    if !causes.is_empty() {
        for e in fetch(pool, "event_id = ANY($1) ORDER BY position", |q| {
            q.bind(causes)
        })
        .await?
        {
            if known.insert(e.event_id) {
                events.push((e, "cause"));
            }
        }
    }
    events.retain(|(e, _)| as_of.includes(e));
    events.sort_by_key(|(e, _)| e.position);
    Ok(events)
}

/// Fills `personal` for the entries whose events carry personal data.
pub async fn add_personal_views(
    vault: &crate::pii::Vault,
    entries: &mut [LogEntry],
) -> Result<(), AuditError> {
    let items: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e.event_type.as_str(), e.data.get()))
        .collect();
    let opened = vault.readable_payloads(&items).await?;
    for (entry, view) in entries.iter_mut().zip(opened) {
        entry.personal = view.and_then(|v| serde_json::from_str(&v).ok());
    }
    Ok(())
}

/// An aggregate's state as of a moment, replayed from its events through the domain's `evolve`.
#[derive(Debug, Clone, Serialize)]
pub struct StateAsOf {
    pub stream: String,
    pub as_of: AsOf,
    /// Events of the stream applied (those recorded by the moment asked for).
    pub events_applied: usize,
    /// Position of the last event applied.
    pub last_position: Option<u64>,
    pub last_recorded_at: Option<DateTime<Utc>>,
    pub state: serde_json::Value,
}

fn fold<A: Aggregate>(events: &[RecordedEvent]) -> Result<serde_json::Value, AuditError>
where
    A::Event: DeserializeOwned,
    A::State: Serialize,
{
    let mut state = A::State::default();
    for e in events {
        let event: A::Event =
            codec::decode(&e.event_type, e.schema_version, &e.data).map_err(|err| {
                AuditError::Store(crate::store::StoreError::Corrupt {
                    position: e.position,
                    reason: err.to_string(),
                })
            })?;
        state = A::evolve(state, &event);
    }
    serde_json::to_value(&state).map_err(|e| AuditError::Invalid(e.to_string()))
}

/// The state of the aggregate in `stream` as of `as_of`.
pub async fn state_as_of(
    pool: &PgPool,
    vault: &crate::pii::Vault,
    stream: &StreamId,
    as_of: AsOf,
) -> Result<StateAsOf, AuditError> {
    let mut events = fetch(pool, "stream_id = $1 ORDER BY position", |q| {
        q.bind(stream.to_string())
    })
    .await?;
    if events.is_empty() {
        return Err(AuditError::NotFound {
            what: "stream",
            id: stream.to_string(),
        });
    }
    events.retain(|e| as_of.includes(e));
    // Personal data as it reads today: plaintext, or placeholders once the person was erased.
    let events = vault.open(events).await?;
    let state = match stream.category() {
        "booking" => fold::<BookingAggregate>(&events)?,
        "slot" => fold::<SlotAggregate>(&events)?,
        "listing" => fold::<ListingAggregate>(&events)?,
        "payment" => fold::<PaymentAggregate>(&events)?,
        "loyalty" => fold::<LoyaltyAggregate>(&events)?,
        "review" => fold::<ReviewAggregate>(&events)?,
        "user" => fold::<UserAggregate>(&events)?,
        "email" => fold::<EmailReservationAggregate>(&events)?,
        "schedule" => fold::<tessera_domain::schedule::ScheduleAggregate>(&events)?,
        other => {
            return Err(AuditError::Invalid(format!(
                "no aggregate has the stream category {other:?}"
            )));
        }
    };
    Ok(StateAsOf {
        stream: stream.to_string(),
        as_of,
        events_applied: events.len(),
        last_position: events.last().map(|e| e.position.0),
        last_recorded_at: events.last().map(|e| e.recorded_at),
        state,
    })
}

/// A filtered page of the global log.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LogQuery {
    /// Cursor: events after this position.
    #[serde(default)]
    pub after: u64,
    /// Events per page (1 to 1,000; default 100).
    pub limit: Option<usize>,
    pub event_type: Option<String>,
    pub stream_prefix: Option<String>,
    /// Recorded at or after.
    pub since: Option<DateTime<Utc>>,
    /// Recorded before.
    pub until: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LogPage {
    pub events: Vec<LogEntry>,
    /// Pass as `after` for the next page; absent at the end of the log.
    pub next_after: Option<u64>,
}

/// One page of the global log after a cursor, filtered by type, stream prefix and time.
pub async fn browse(pool: &PgPool, q: &LogQuery) -> Result<LogPage, AuditError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1_000).contains(&limit) {
        return Err(AuditError::Invalid("limit is 1 to 1000".into()));
    }
    let events = fetch(
        pool,
        "position > $1 AND ($2::text IS NULL OR event_type = $2) \
         AND ($3::text IS NULL OR starts_with(stream_id, $3)) \
         AND ($4::timestamptz IS NULL OR recorded_at >= $4) \
         AND ($5::timestamptz IS NULL OR recorded_at < $5) \
         ORDER BY position LIMIT $6",
        |query| {
            query
                .bind(q.after.min(i64::MAX as u64) as i64)
                .bind(q.event_type.clone())
                .bind(q.stream_prefix.clone())
                .bind(q.since)
                .bind(q.until)
                .bind(limit as i64)
        },
    )
    .await?;
    let next_after = (events.len() == limit)
        .then(|| events.last().map(|e| e.position.0))
        .flatten();
    Ok(LogPage {
        events: events
            .into_iter()
            .map(LogEntry::from_event)
            .collect::<Result<_, _>>()?,
        next_after,
    })
}
