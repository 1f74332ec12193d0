//! Catalog: listings as customers browse them, and every slot with its live availability
//! (capacity, held, confirmed, remaining). The `listing_overview` view adds the next date with
//! free seats and the lowest price, computed when read (they depend on the current time).
//!
//! The seats each booking holds on a slot are rows of their own (`slot_holds`), and the slot's
//! counters move with them: a seat change writes one small hold row and the slot's counters,
//! whatever the number of holds on the slot (a sold-out concert has thousands).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use tessera_domain::booking::BookingEvent;
use tessera_domain::listing::{ListingDetails, ListingEvent};
use tessera_domain::schedule::ScheduleEvent;
use tessera_domain::slot::SlotEvent;
use tessera_log::codec::AnyEvent;
use uuid::Uuid;

use super::{inconsistent, json, keys, keys_to_load};
use crate::SqlProjection;
use crate::envelope::Envelope;
use crate::error::ProjectionError;
use crate::rows::{self, Rows};

#[derive(Debug, Default)]
pub struct Catalog;

const NAME: &str = "catalog";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListingRow {
    pub listing_id: Uuid,
    pub provider_id: Uuid,
    pub kind: String,
    pub title: String,
    pub description: String,
    pub category: String,
    pub destination: String,
    pub country: String,
    pub lat: f64,
    pub lon: f64,
    pub duration_minutes: i64,
    pub includes: serde_json::Value,
    pub itinerary: serde_json::Value,
    pub price_minor: i64,
    pub currency: String,
    pub policy: serde_json::Value,
    pub retired: bool,
    pub scans_tickets: bool,
    pub published_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

/// Seats a booking holds (or has confirmed) on a slot.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct HoldRow {
    pub booking_id: Uuid,
    pub slot_id: Uuid,
    pub seats: i64,
    pub confirmed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlotRow {
    pub slot_id: Uuid,
    pub listing_id: Uuid,
    pub provider_id: Uuid,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub capacity: i64,
    pub held: i64,
    pub confirmed: i64,
    pub remaining: i64,
    pub price_minor: i64,
    pub currency: String,
    pub cancelled: bool,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

impl SlotRow {
    /// Counts a hold's seats in (`sign` 1) or out (-1) of the held or confirmed counter.
    fn count(&mut self, hold: &HoldRow, sign: i64) {
        if hold.confirmed {
            self.confirmed += sign * hold.seats;
        } else {
            self.held += sign * hold.seats;
        }
    }

    fn recount(&mut self) {
        self.remaining = (self.capacity - self.held - self.confirmed).max(0);
    }
}

fn details_row(
    listing_id: Uuid,
    provider_id: Uuid,
    d: &ListingDetails,
    e: &Envelope,
) -> Result<ListingRow, ProjectionError> {
    Ok(ListingRow {
        listing_id,
        provider_id,
        kind: serde_json::to_value(d.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        title: d.title.clone(),
        description: d.description.clone(),
        category: d.category.clone(),
        destination: d.destination.name.clone(),
        country: d.destination.country.clone(),
        lat: d.destination.lat,
        lon: d.destination.lon,
        duration_minutes: i64::from(d.duration_minutes),
        includes: json(NAME, e, &d.includes)?,
        itinerary: json(NAME, e, &d.itinerary)?,
        price_minor: 0,
        currency: String::new(),
        policy: serde_json::Value::Null,
        retired: false,
        scans_tickets: false,
        published_at: e.effective_at,
        updated_at: e.effective_at,
        version: e.pos(),
    })
}

#[async_trait]
impl SqlProjection for Catalog {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> u32 {
        // 2: the holds moved from a jsonb column of `slots` to `slot_holds`.
        // 3: recurring schedules (`schedules`).
        3
    }

    fn ddl(&self) -> String {
        r#"
CREATE TABLE listings (
    listing_id uuid PRIMARY KEY, provider_id uuid NOT NULL, kind text NOT NULL,
    title text NOT NULL, description text NOT NULL, category text NOT NULL,
    destination text NOT NULL, country text NOT NULL, lat float8 NOT NULL, lon float8 NOT NULL,
    duration_minutes bigint NOT NULL, includes jsonb NOT NULL, itinerary jsonb NOT NULL,
    price_minor bigint NOT NULL, currency text NOT NULL, policy jsonb NOT NULL,
    retired boolean NOT NULL, scans_tickets boolean NOT NULL, published_at timestamptz NOT NULL, updated_at timestamptz NOT NULL,
    version bigint NOT NULL
);
CREATE INDEX listings_provider ON listings (provider_id);
CREATE TABLE slots (
    slot_id uuid PRIMARY KEY, listing_id uuid NOT NULL, provider_id uuid NOT NULL,
    starts_at timestamptz NOT NULL, ends_at timestamptz NOT NULL, capacity bigint NOT NULL,
    held bigint NOT NULL, confirmed bigint NOT NULL, remaining bigint NOT NULL,
    price_minor bigint NOT NULL, currency text NOT NULL, cancelled boolean NOT NULL,
    updated_at timestamptz NOT NULL, version bigint NOT NULL
);
CREATE INDEX slots_listing ON slots (listing_id, starts_at);
CREATE TABLE slot_holds (
    booking_id uuid NOT NULL, slot_id uuid NOT NULL, seats bigint NOT NULL,
    confirmed boolean NOT NULL, PRIMARY KEY (booking_id, slot_id)
);
CREATE TABLE schedules (
    schedule_id uuid PRIMARY KEY, listing_id uuid NOT NULL, provider_id uuid NOT NULL,
    rrule text NOT NULL, starts_local timestamp NOT NULL, timezone text NOT NULL,
    duration_minutes bigint NOT NULL, capacity bigint NOT NULL, price_minor bigint NOT NULL,
    currency text NOT NULL, horizon_days bigint NOT NULL, revision bigint NOT NULL,
    exceptions jsonb NOT NULL, slots_generated bigint NOT NULL,
    generated_until timestamptz, ended boolean NOT NULL, end_reason text,
    defined_at timestamptz NOT NULL, updated_at timestamptz NOT NULL, version bigint NOT NULL
);
CREATE INDEX schedules_provider ON schedules (provider_id, defined_at);
CREATE VIEW listing_overview AS
    SELECT l.*, n.next_available_at, n.lowest_price_minor, n.free_seats
    FROM listings l LEFT JOIN LATERAL (
        SELECT min(s.starts_at) AS next_available_at, min(s.price_minor) AS lowest_price_minor,
               sum(s.remaining) AS free_seats
        FROM slots s
        WHERE s.listing_id = l.listing_id AND NOT s.cancelled AND s.remaining > 0
          AND s.starts_at > now()
    ) n ON true;
"#
        .to_owned()
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        batch: &[Envelope],
    ) -> Result<(), ProjectionError> {
        let mut listing_ids = Vec::new();
        let mut slot_ids = Vec::new();
        // A booking's holds, and whether its `BookingPlaced` comes first in the batch: its
        // slot's `SeatsHeld` follows in the same append, so it has no hold row to load yet.
        let mut hold_touches = Vec::new();
        for e in batch {
            match &e.event {
                AnyEvent::Listing(l) => listing_ids.push(listing_of(l)),
                AnyEvent::Slot(s) => {
                    slot_ids.push(slot_of(s));
                    hold_touches.extend(hold_of(s).map(|(booking, _)| (booking, false)));
                }
                AnyEvent::Booking(BookingEvent::BookingPlaced { booking_id, .. }) => {
                    hold_touches.push((booking_id.0, true));
                }
                _ => {}
            }
        }
        for e in batch {
            if let AnyEvent::Schedule(ev) = &e.event {
                apply_schedule(conn, e, ev).await?;
            }
        }
        if listing_ids.is_empty() && slot_ids.is_empty() {
            return Ok(());
        }
        let mut listings: Rows<Uuid, ListingRow> = Rows::default();
        for r in
            rows::load::<ListingRow>(conn, "listings", "listing_id", &keys(listing_ids)).await?
        {
            listings.rows.insert(r.listing_id, r);
        }
        let mut slots: Rows<Uuid, SlotRow> = Rows::default();
        for r in rows::load::<SlotRow>(conn, "slots", "slot_id", &keys(slot_ids)).await? {
            slots.rows.insert(r.slot_id, r);
        }
        let mut holds: Rows<(Uuid, Uuid), HoldRow> = Rows::default();
        for r in rows::load::<HoldRow>(
            conn,
            "slot_holds",
            "booking_id",
            &keys_to_load(hold_touches),
        )
        .await?
        {
            holds.rows.insert((r.booking_id, r.slot_id), r);
        }
        for e in batch {
            match &e.event {
                AnyEvent::Listing(ev) => apply_listing(&mut listings, e, ev)?,
                AnyEvent::Slot(ev) => apply_slot(&mut slots, &mut holds, e, ev)?,
                _ => {}
            }
        }
        rows::upsert(conn, "listings", &["listing_id"], listings.changed()).await?;
        rows::upsert(conn, "slots", &["slot_id"], slots.changed()).await?;
        const HOLD_KEY: &[&str] = &["booking_id", "slot_id"];
        rows::upsert(conn, "slot_holds", HOLD_KEY, holds.changed()).await?;
        rows::delete(conn, "slot_holds", HOLD_KEY, holds.removed()).await?;
        Ok(())
    }
}

/// A schedule's row follows its events one statement at a time (schedules change rarely).
async fn apply_schedule(
    conn: &mut PgConnection,
    e: &Envelope,
    ev: &ScheduleEvent,
) -> Result<(), ProjectionError> {
    let at = e.effective_at;
    let pos = e.pos();
    let done = match ev {
        ScheduleEvent::ScheduleDefined {
            schedule_id,
            listing_id,
            provider_id,
            recurrence,
            template,
            horizon_days,
        } => {
            sqlx::query(
                "INSERT INTO schedules (schedule_id, listing_id, provider_id, rrule, starts_local,
                    timezone, duration_minutes, capacity, price_minor, currency, horizon_days,
                    revision, exceptions, slots_generated, generated_until, ended, end_reason,
                    defined_at, updated_at, version)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 0, '[]', 0, NULL, false,
                    NULL, $12, $12, $13)
                 ON CONFLICT (schedule_id) DO NOTHING",
            )
            .bind(schedule_id.0)
            .bind(listing_id.0)
            .bind(provider_id.0)
            .bind(&recurrence.rrule)
            .bind(recurrence.starts)
            .bind(&recurrence.timezone)
            .bind(i64::from(template.duration_minutes))
            .bind(i64::from(template.capacity))
            .bind(template.price_per_seat.minor)
            .bind(template.price_per_seat.currency.to_string())
            .bind(i64::from(*horizon_days))
            .bind(at)
            .bind(pos)
            .execute(&mut *conn)
            .await
        }
        ScheduleEvent::ScheduleChanged {
            schedule_id,
            recurrence,
            template,
            horizon_days,
            revision,
            ..
        } => {
            sqlx::query(
                "UPDATE schedules SET rrule = $2, starts_local = $3, timezone = $4,
                    duration_minutes = $5, capacity = $6, price_minor = $7, horizon_days = $8,
                    revision = $9, updated_at = $10, version = $11
                 WHERE schedule_id = $1",
            )
            .bind(schedule_id.0)
            .bind(&recurrence.rrule)
            .bind(recurrence.starts)
            .bind(&recurrence.timezone)
            .bind(i64::from(template.duration_minutes))
            .bind(i64::from(template.capacity))
            .bind(template.price_per_seat.minor)
            .bind(i64::from(*horizon_days))
            .bind(i64::from(*revision))
            .bind(at)
            .bind(pos)
            .execute(&mut *conn)
            .await
        }
        ScheduleEvent::ScheduleSlotsGenerated {
            schedule_id, slots, ..
        } => {
            let until = slots.iter().map(|g| g.starts_at).max();
            sqlx::query(
                "UPDATE schedules SET slots_generated = slots_generated + $2,
                    generated_until = GREATEST(generated_until, $3), updated_at = $4, version = $5
                 WHERE schedule_id = $1",
            )
            .bind(schedule_id.0)
            .bind(slots.len() as i64)
            .bind(until)
            .bind(at)
            .bind(pos)
            .execute(&mut *conn)
            .await
        }
        ScheduleEvent::ScheduleExceptionAdded { schedule_id, date } => {
            sqlx::query(
                "UPDATE schedules SET exceptions = (SELECT jsonb_agg(d ORDER BY d)
                    FROM (SELECT DISTINCT d FROM jsonb_array_elements_text(exceptions || to_jsonb($2::text)) d) x),
                    updated_at = $3, version = $4
                 WHERE schedule_id = $1",
            )
            .bind(schedule_id.0)
            .bind(date.to_string())
            .bind(at)
            .bind(pos)
            .execute(&mut *conn)
            .await
        }
        ScheduleEvent::ScheduleExceptionRemoved {
            schedule_id,
            date,
            revision,
        } => {
            sqlx::query(
                "UPDATE schedules SET exceptions = exceptions - $2::text, revision = $3,
                    updated_at = $4, version = $5
                 WHERE schedule_id = $1",
            )
            .bind(schedule_id.0)
            .bind(date.to_string())
            .bind(i64::from(*revision))
            .bind(at)
            .bind(pos)
            .execute(&mut *conn)
            .await
        }
        ScheduleEvent::ScheduleEnded {
            schedule_id,
            reason,
        } => {
            sqlx::query(
                "UPDATE schedules SET ended = true, end_reason = $2, updated_at = $3, version = $4
                 WHERE schedule_id = $1",
            )
            .bind(schedule_id.0)
            .bind(reason)
            .bind(at)
            .bind(pos)
            .execute(&mut *conn)
            .await
        }
    };
    done.map(|_| ())
        .map_err(|err| inconsistent(NAME, e, format!("schedule: {err}")))
}

fn listing_of(e: &ListingEvent) -> Uuid {
    match e {
        ListingEvent::ListingPublished { listing_id, .. }
        | ListingEvent::ListingUpdated { listing_id, .. }
        | ListingEvent::ListingRepriced { listing_id, .. }
        | ListingEvent::CancellationPolicyChanged { listing_id, .. }
        | ListingEvent::ListingRetired { listing_id, .. }
        | ListingEvent::TicketScanningSet { listing_id, .. } => listing_id.0,
    }
}

fn slot_of(e: &SlotEvent) -> Uuid {
    match e {
        SlotEvent::SlotScheduled { slot_id, .. }
        | SlotEvent::SlotCapacityChanged { slot_id, .. }
        | SlotEvent::SlotRepriced { slot_id, .. }
        | SlotEvent::SeatsHeld { slot_id, .. }
        | SlotEvent::SeatsConfirmed { slot_id, .. }
        | SlotEvent::SeatsReleased { slot_id, .. }
        | SlotEvent::SlotCancelled { slot_id, .. } => slot_id.0,
    }
}

/// The (booking, slot) of a seat change.
fn hold_of(e: &SlotEvent) -> Option<(Uuid, Uuid)> {
    match e {
        SlotEvent::SeatsHeld {
            slot_id,
            booking_id,
            ..
        }
        | SlotEvent::SeatsConfirmed {
            slot_id,
            booking_id,
            ..
        }
        | SlotEvent::SeatsReleased {
            slot_id,
            booking_id,
            ..
        } => Some((booking_id.0, slot_id.0)),
        SlotEvent::SlotScheduled { .. }
        | SlotEvent::SlotCapacityChanged { .. }
        | SlotEvent::SlotRepriced { .. }
        | SlotEvent::SlotCancelled { .. } => None,
    }
}

fn apply_listing(
    listings: &mut Rows<Uuid, ListingRow>,
    e: &Envelope,
    ev: &ListingEvent,
) -> Result<(), ProjectionError> {
    let id = listing_of(ev);
    if let ListingEvent::ListingPublished {
        provider_id,
        details,
        base_price,
        policy,
        ..
    } = ev
    {
        let mut row = details_row(id, provider_id.0, details, e)?;
        row.price_minor = base_price.minor;
        row.currency = base_price.currency.to_string();
        row.policy = json(NAME, e, policy)?;
        listings.put(id, row);
        return Ok(());
    }
    let Some(row) = listings.get_mut(&id) else {
        return Err(inconsistent(
            NAME,
            e,
            format!("listing {id} was never published"),
        ));
    };
    match ev {
        ListingEvent::ListingPublished { .. } => {}
        ListingEvent::ListingUpdated { details, .. } => {
            let fresh = details_row(id, row.provider_id, details, e)?;
            *row = ListingRow {
                price_minor: row.price_minor,
                currency: std::mem::take(&mut row.currency),
                policy: std::mem::take(&mut row.policy),
                retired: row.retired,
                scans_tickets: row.scans_tickets,
                published_at: row.published_at,
                ..fresh
            };
        }
        ListingEvent::ListingRepriced { base_price, .. } => {
            row.price_minor = base_price.minor;
            row.currency = base_price.currency.to_string();
        }
        ListingEvent::CancellationPolicyChanged { policy, .. } => {
            row.policy = json(NAME, e, policy)?;
        }
        ListingEvent::ListingRetired { .. } => row.retired = true,
        ListingEvent::TicketScanningSet { scans_tickets, .. } => row.scans_tickets = *scans_tickets,
    }
    row.updated_at = e.effective_at;
    row.version = e.pos();
    Ok(())
}

fn apply_slot(
    slots: &mut Rows<Uuid, SlotRow>,
    holds: &mut Rows<(Uuid, Uuid), HoldRow>,
    e: &Envelope,
    ev: &SlotEvent,
) -> Result<(), ProjectionError> {
    let id = slot_of(ev);
    if let SlotEvent::SlotScheduled {
        listing_id,
        provider_id,
        starts_at,
        ends_at,
        capacity,
        price_per_seat,
        ..
    } = ev
    {
        let mut row = SlotRow {
            slot_id: id,
            listing_id: listing_id.0,
            provider_id: provider_id.0,
            starts_at: *starts_at,
            ends_at: *ends_at,
            capacity: i64::from(*capacity),
            held: 0,
            confirmed: 0,
            remaining: 0,
            price_minor: price_per_seat.minor,
            currency: price_per_seat.currency.to_string(),
            cancelled: false,
            updated_at: e.effective_at,
            version: e.pos(),
        };
        row.recount();
        slots.put(id, row);
        return Ok(());
    }
    let Some(row) = slots.get_mut(&id) else {
        return Err(inconsistent(
            NAME,
            e,
            format!("slot {id} was never scheduled"),
        ));
    };
    let holds_none = |booking| inconsistent(NAME, e, format!("booking {booking} holds no seats"));
    match ev {
        SlotEvent::SlotScheduled { .. } => {}
        SlotEvent::SlotCapacityChanged { capacity, .. } => row.capacity = i64::from(*capacity),
        SlotEvent::SlotRepriced { price_per_seat, .. } => row.price_minor = price_per_seat.minor,
        SlotEvent::SeatsHeld {
            booking_id, seats, ..
        } => {
            let key = (booking_id.0, id);
            // A hold again by the same booking replaces the earlier one.
            if let Some(earlier) = holds.remove(&key) {
                row.count(earlier, -1);
            }
            let hold = HoldRow {
                booking_id: booking_id.0,
                slot_id: id,
                seats: i64::from(*seats),
                confirmed: false,
            };
            row.count(&hold, 1);
            holds.put(key, hold);
        }
        SlotEvent::SeatsConfirmed { booking_id, .. } => {
            let hold = holds
                .get_mut(&(booking_id.0, id))
                .ok_or_else(|| holds_none(booking_id.0))?;
            if !hold.confirmed {
                row.count(hold, -1);
                hold.confirmed = true;
                row.count(hold, 1);
            }
        }
        SlotEvent::SeatsReleased { booking_id, .. } => {
            let hold = holds
                .remove(&(booking_id.0, id))
                .ok_or_else(|| holds_none(booking_id.0))?;
            row.count(hold, -1);
        }
        SlotEvent::SlotCancelled { .. } => row.cancelled = true,
    }
    row.recount();
    row.updated_at = e.effective_at;
    row.version = e.pos();
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Queries: what the API reads from this read model, with the views it answers with.

/// A listing as the API shows it: its details, next availability and lowest price, and (for
/// one listing) its rating from the reviews read model.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ListingView {
    pub listing_id: Uuid,
    pub provider_id: Uuid,
    pub kind: String,
    pub title: String,
    pub description: String,
    pub category: String,
    pub destination: String,
    pub country: String,
    pub lat: f64,
    pub lon: f64,
    pub duration_minutes: i64,
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub includes: serde_json::Value,
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub itinerary: serde_json::Value,
    pub price_minor: i64,
    pub currency: String,
    /// Refund tiers: `[{min_hours_before, refund_percent}]`.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub policy: serde_json::Value,
    pub retired: bool,
    /// Tickets are scanned at the door; a booking with none checked in is a no-show.
    pub scans_tickets: bool,
    pub published_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The next slot start with free seats.
    pub next_available_at: Option<DateTime<Utc>>,
    /// The lowest price per seat among upcoming slots with free seats.
    pub lowest_price_minor: Option<i64>,
    pub free_seats: Option<i64>,
    #[sqlx(default)]
    pub review_count: Option<i64>,
    #[sqlx(default)]
    pub rating_avg: Option<f64>,
}

const LISTING_COLUMNS: &str = "l.listing_id, l.provider_id, l.kind, l.title, l.description, \
    l.category, l.destination, l.country, l.lat, l.lon, l.duration_minutes, l.includes, \
    l.itinerary, l.price_minor, l.currency, l.policy, l.retired, l.scans_tickets, l.published_at, \
    l.updated_at, \
    l.next_available_at, l.lowest_price_minor, l.free_seats::int8 AS free_seats";

/// A slot with live availability, as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SlotView {
    pub slot_id: Uuid,
    pub listing_id: Uuid,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub capacity: i64,
    pub held: i64,
    pub confirmed: i64,
    pub remaining: i64,
    pub price_minor: i64,
    pub currency: String,
    pub cancelled: bool,
}

/// Which of a listing's slots to list.
#[derive(Debug, Clone, Copy, Default)]
pub struct SlotFilter {
    /// Slots starting from this time (default: now).
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Include cancelled and full slots.
    pub all: bool,
}

/// One listing with its rating (from the reviews read model's `listing_ratings`).
pub async fn listing(
    pool: &sqlx::PgPool,
    listing_id: Uuid,
) -> Result<Option<ListingView>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {LISTING_COLUMNS}, r.review_count, r.rating_avg::float8 AS rating_avg
           FROM read.listing_overview l LEFT JOIN read.listing_ratings r USING (listing_id)
          WHERE l.listing_id = $1"
    )))
    .bind(listing_id)
    .fetch_optional(pool)
    .await
}

/// Listings by id with their ratings, in one query (those that do not exist are left out).
pub async fn listings(
    pool: &sqlx::PgPool,
    listing_ids: &[Uuid],
) -> Result<Vec<ListingView>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {LISTING_COLUMNS}, r.review_count, r.rating_avg::float8 AS rating_avg
           FROM read.listing_overview l LEFT JOIN read.listing_ratings r USING (listing_id)
          WHERE l.listing_id = ANY($1)"
    )))
    .bind(listing_ids)
    .fetch_all(pool)
    .await
}

/// A provider's listings, newest first.
pub async fn provider_listings(
    pool: &sqlx::PgPool,
    provider_id: Uuid,
) -> Result<Vec<ListingView>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {LISTING_COLUMNS} FROM read.listing_overview l
          WHERE l.provider_id = $1 ORDER BY l.published_at DESC, l.listing_id LIMIT 500"
    )))
    .bind(provider_id)
    .fetch_all(pool)
    .await
}

/// Whether a listing was ever published.
pub async fn listing_exists(pool: &sqlx::PgPool, listing_id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM read.listings WHERE listing_id = $1)")
        .bind(listing_id)
        .fetch_one(pool)
        .await
}

/// The currency a listing is priced in.
pub async fn listing_currency(
    pool: &sqlx::PgPool,
    listing_id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT currency FROM read.listings WHERE listing_id = $1")
        .bind(listing_id)
        .fetch_optional(pool)
        .await
}

/// A listing's slots, earliest first (upcoming ones with free seats unless `filter.all`).
pub async fn listing_slots(
    pool: &sqlx::PgPool,
    listing_id: Uuid,
    filter: SlotFilter,
) -> Result<Vec<SlotView>, sqlx::Error> {
    sqlx::query_as(
        "SELECT slot_id, listing_id, starts_at, ends_at, capacity, held, confirmed, remaining,
                price_minor, currency, cancelled
           FROM read.slots
          WHERE listing_id = $1 AND starts_at >= coalesce($2, now())
            AND ($3::timestamptz IS NULL OR starts_at <= $3)
            AND ($4 OR (NOT cancelled AND remaining > 0))
          ORDER BY starts_at, slot_id LIMIT 500",
    )
    .bind(listing_id)
    .bind(filter.from)
    .bind(filter.to)
    .bind(filter.all)
    .fetch_all(pool)
    .await
}

/// The categories listings are in, and each destination with its coordinates (what the
/// benchmarks build their searches from).
pub async fn categories_and_destinations(
    pool: &sqlx::PgPool,
) -> Result<(Vec<String>, Vec<(String, f64, f64)>), sqlx::Error> {
    let categories = sqlx::query_scalar("SELECT DISTINCT category FROM read.listings")
        .fetch_all(pool)
        .await?;
    let destinations =
        sqlx::query_as("SELECT DISTINCT ON (destination) destination, lat, lon FROM read.listings")
            .fetch_all(pool)
            .await?;
    Ok((categories, destinations))
}

/// Up to `limit` published listings with their providers, by id.
pub async fn published_listings(
    pool: &sqlx::PgPool,
    limit: i64,
) -> Result<Vec<(Uuid, Uuid)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT listing_id, provider_id FROM read.listings WHERE NOT retired
          ORDER BY listing_id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// A search in plain SQL: the filters of the search index's, matched with `ILIKE` over the
/// listings table (no ranking, no stemming).
#[derive(Debug, Clone, Default)]
pub struct PlainSearch {
    pub text: Option<String>,
    pub kind: Option<String>,
    pub category: Option<String>,
    pub max_price: Option<i64>,
    /// Within 50 km of (lat, lon).
    pub near: Option<(f64, f64)>,
}

/// The nearest plain PostgreSQL read to a search (the benchmarks' baseline for the index):
/// up to 20 matching listings by title; returns how many matched.
pub async fn plain_search(pool: &sqlx::PgPool, search: &PlainSearch) -> Result<usize, sqlx::Error> {
    let pattern = search.text.as_ref().map(|t| format!("%{t}%"));
    let rows = sqlx::query(
        "SELECT listing_id, kind, title, category, destination, country, price_minor,
                currency, duration_minutes, lat, lon
           FROM read.listings
          WHERE NOT retired
            AND ($1::text IS NULL OR title ILIKE $1 OR description ILIKE $1
                 OR destination ILIKE $1 OR category ILIKE $1)
            AND ($2::text IS NULL OR kind = $2)
            AND ($3::text IS NULL OR category = $3)
            AND ($4::int8 IS NULL OR price_minor <= $4)
            AND ($5::float8 IS NULL OR
                 6371 * 2 * asin(sqrt(power(sin(radians(lat - $5) / 2), 2)
                   + cos(radians($5)) * cos(radians(lat))
                   * power(sin(radians(lon - $6) / 2), 2))) <= 50)
          ORDER BY title LIMIT 20",
    )
    .bind(pattern)
    .bind(search.kind.as_deref())
    .bind(search.category.as_deref())
    .bind(search.max_price)
    .bind(search.near.map(|n| n.0))
    .bind(search.near.map(|n| n.1))
    .fetch_all(pool)
    .await?;
    Ok(rows.len())
}

/// One slot of a provider's day (their daily summary).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct ProviderDaySlot {
    pub provider_id: Uuid,
    pub slot_id: Uuid,
    pub title: String,
    pub starts_at: chrono::DateTime<chrono::Utc>,
    pub capacity: i64,
    pub confirmed: i64,
    pub held: i64,
}

/// Every provider's slots starting in `[from, to)` and not cancelled, by provider and time.
pub async fn slots_starting_between(
    pool: &sqlx::PgPool,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<ProviderDaySlot>, sqlx::Error> {
    sqlx::query_as(
        "SELECT s.provider_id, s.slot_id, l.title, s.starts_at, s.capacity, s.confirmed, s.held
           FROM read.slots s JOIN read.listings l USING (listing_id)
          WHERE s.starts_at >= $1 AND s.starts_at < $2 AND NOT s.cancelled
          ORDER BY s.provider_id, s.starts_at, s.slot_id",
    )
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
}

/// A recurring schedule as providers see it.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleView {
    pub schedule_id: Uuid,
    pub listing_id: Uuid,
    pub provider_id: Uuid,
    pub rrule: String,
    /// The first start, in local time (`timezone`).
    pub starts_local: chrono::NaiveDateTime,
    pub timezone: String,
    pub duration_minutes: i64,
    pub capacity: i64,
    pub price_minor: i64,
    pub currency: String,
    pub horizon_days: i64,
    pub revision: i64,
    /// Local dates taken out.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub exceptions: serde_json::Value,
    /// Slots generated so far.
    pub slots_generated: i64,
    /// The latest start generated.
    pub generated_until: Option<DateTime<Utc>>,
    pub ended: bool,
    pub end_reason: Option<String>,
    pub defined_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const SCHEDULE_COLUMNS: &str = "schedule_id, listing_id, provider_id, rrule, starts_local, \
    timezone, duration_minutes, capacity, price_minor, currency, horizon_days, revision, \
    exceptions, slots_generated, generated_until, ended, end_reason, defined_at, updated_at";

/// A provider's schedules (every provider's with `None`), oldest first.
pub async fn schedules(
    pool: &sqlx::PgPool,
    provider: Option<Uuid>,
    listing: Option<Uuid>,
) -> Result<Vec<ScheduleView>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SCHEDULE_COLUMNS} FROM read.schedules
          WHERE ($1::uuid IS NULL OR provider_id = $1) AND ($2::uuid IS NULL OR listing_id = $2)
          ORDER BY defined_at, schedule_id"
    )))
    .bind(provider)
    .bind(listing)
    .fetch_all(pool)
    .await
}

/// One schedule.
pub async fn schedule(pool: &sqlx::PgPool, id: Uuid) -> Result<Option<ScheduleView>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SCHEDULE_COLUMNS} FROM read.schedules WHERE schedule_id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Schedules still generating (not ended), for the periodic generation.
pub async fn active_schedules(pool: &sqlx::PgPool) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT schedule_id FROM read.schedules WHERE NOT ended ORDER BY schedule_id",
    )
    .fetch_all(pool)
    .await
}
