//! Admin statistics (bookings, seats, revenue and refunds per day and listing) and provider
//! earnings net of the platform's commission. Counters are added, never recomputed, so a batch
//! writes each touched row once however many events hit it.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use tessera_domain::booking::BookingEvent;
use tessera_domain::listing::ListingEvent;
use tessera_domain::payment::PaymentEvent;
use tessera_log::codec::AnyEvent;
use uuid::Uuid;

use super::{inconsistent, keys, keys_to_load, places_booking};
use crate::SqlProjection;
use crate::envelope::Envelope;
use crate::error::ProjectionError;
use crate::rows::{self, Rows};

/// The platform's commission on provider revenue, in basis points (15 %).
pub const DEFAULT_COMMISSION_BP: u32 = 1_500;

#[derive(Debug)]
pub struct Stats {
    pub commission_bp: u32,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            commission_bp: DEFAULT_COMMISSION_BP,
        }
    }
}

const NAME: &str = "stats";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ListingRef {
    listing_id: Uuid,
    provider_id: Uuid,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct BookingRef {
    booking_id: Uuid,
    listing_id: Uuid,
    provider_id: Uuid,
    seats: i64,
    currency: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Daily {
    day: NaiveDate,
    listing_id: Uuid,
    currency: String,
    bookings_placed: i64,
    bookings_confirmed: i64,
    bookings_cancelled: i64,
    bookings_expired: i64,
    bookings_completed: i64,
    seats_sold: i64,
    revenue_minor: i64,
    refunds_minor: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct EarningsRow {
    provider_id: Uuid,
    currency: String,
    gross_minor: i64,
    refunds_minor: i64,
}

fn booking_of(e: &Envelope) -> Option<Uuid> {
    match &e.event {
        AnyEvent::Booking(
            BookingEvent::BookingPlaced { booking_id, .. }
            | BookingEvent::BookingConfirmed { booking_id, .. }
            | BookingEvent::LatePaymentAccepted { booking_id, .. }
            | BookingEvent::BookingCancelled { booking_id, .. }
            | BookingEvent::BookingExpired { booking_id }
            | BookingEvent::BookingCompleted { booking_id },
        ) => Some(booking_id.0),
        AnyEvent::Payment(
            PaymentEvent::PaymentSucceeded { booking_id, .. }
            | PaymentEvent::RefundSucceeded { booking_id, .. },
        ) => Some(booking_id.0),
        _ => None,
    }
}

#[async_trait]
impl SqlProjection for Stats {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> u32 {
        1
    }

    fn ddl(&self) -> String {
        format!(
            r#"
CREATE TABLE stats_listings (listing_id uuid PRIMARY KEY, provider_id uuid NOT NULL);
CREATE TABLE stats_bookings (
    booking_id uuid PRIMARY KEY, listing_id uuid NOT NULL, provider_id uuid NOT NULL,
    seats bigint NOT NULL, currency text NOT NULL
);
CREATE TABLE daily_stats (
    day date NOT NULL, listing_id uuid NOT NULL, currency text NOT NULL,
    bookings_placed bigint NOT NULL, bookings_confirmed bigint NOT NULL,
    bookings_cancelled bigint NOT NULL, bookings_expired bigint NOT NULL,
    bookings_completed bigint NOT NULL, seats_sold bigint NOT NULL,
    revenue_minor bigint NOT NULL, refunds_minor bigint NOT NULL,
    PRIMARY KEY (day, listing_id, currency)
);
CREATE TABLE provider_earnings (
    provider_id uuid NOT NULL, currency text NOT NULL, gross_minor bigint NOT NULL,
    refunds_minor bigint NOT NULL,
    commission_bp integer NOT NULL DEFAULT {bp},
    commission_minor bigint GENERATED ALWAYS AS ((gross_minor - refunds_minor) * commission_bp / 10000) STORED,
    net_minor bigint GENERATED ALWAYS AS ((gross_minor - refunds_minor) - (gross_minor - refunds_minor) * commission_bp / 10000) STORED,
    PRIMARY KEY (provider_id, currency)
);
CREATE VIEW stats_by_day AS
    SELECT day, currency, sum(bookings_placed) AS bookings_placed,
           sum(bookings_confirmed) AS bookings_confirmed, sum(bookings_cancelled) AS bookings_cancelled,
           sum(bookings_expired) AS bookings_expired, sum(bookings_completed) AS bookings_completed,
           sum(seats_sold) AS seats_sold, sum(revenue_minor) AS revenue_minor,
           sum(refunds_minor) AS refunds_minor
    FROM daily_stats GROUP BY day, currency;
CREATE VIEW stats_by_listing AS
    SELECT listing_id, currency, sum(bookings_placed) AS bookings_placed,
           sum(bookings_confirmed) AS bookings_confirmed, sum(bookings_cancelled) AS bookings_cancelled,
           sum(bookings_expired) AS bookings_expired, sum(bookings_completed) AS bookings_completed,
           sum(seats_sold) AS seats_sold, sum(revenue_minor) AS revenue_minor,
           sum(refunds_minor) AS refunds_minor
    FROM daily_stats GROUP BY listing_id, currency;
"#,
            bp = self.commission_bp
        )
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        batch: &[Envelope],
    ) -> Result<(), ProjectionError> {
        let mut listing_keys = Vec::new();
        for e in batch {
            match &e.event {
                AnyEvent::Listing(ListingEvent::ListingPublished { listing_id, .. })
                | AnyEvent::Booking(BookingEvent::BookingPlaced { listing_id, .. }) => {
                    listing_keys.push(listing_id.0)
                }
                _ => {}
            }
        }
        let touches: Vec<(Uuid, bool)> = batch
            .iter()
            .filter_map(|e| Some((booking_of(e)?, places_booking(e))))
            .collect();
        if listing_keys.is_empty() && touches.is_empty() {
            return Ok(());
        }
        let booking_keys = keys_to_load(touches);
        let mut listings: Rows<Uuid, ListingRef> = Rows::default();
        for r in rows::load::<ListingRef>(conn, "stats_listings", "listing_id", &keys(listing_keys))
            .await?
        {
            listings.rows.insert(r.listing_id, r);
        }
        let mut bookings: Rows<Uuid, BookingRef> = Rows::default();
        for r in
            rows::load::<BookingRef>(conn, "stats_bookings", "booking_id", &booking_keys).await?
        {
            bookings.rows.insert(r.booking_id, r);
        }
        let mut daily: BTreeMap<(NaiveDate, Uuid, String), Daily> = BTreeMap::new();
        let mut earnings: BTreeMap<(Uuid, String), EarningsRow> = BTreeMap::new();
        for e in batch {
            if let AnyEvent::Listing(ListingEvent::ListingPublished {
                listing_id,
                provider_id,
                ..
            }) = &e.event
            {
                listings.put(
                    listing_id.0,
                    ListingRef {
                        listing_id: listing_id.0,
                        provider_id: provider_id.0,
                    },
                );
                continue;
            }
            if let AnyEvent::Booking(BookingEvent::BookingPlaced {
                booking_id,
                listing_id,
                seats,
                total,
                ..
            }) = &e.event
            {
                let Some(listing) = listings.get(&listing_id.0) else {
                    return Err(inconsistent(
                        NAME,
                        e,
                        format!("listing {listing_id} was never published"),
                    ));
                };
                let provider_id = listing.provider_id;
                bookings.put(
                    booking_id.0,
                    BookingRef {
                        booking_id: booking_id.0,
                        listing_id: listing_id.0,
                        provider_id,
                        seats: i64::from(*seats),
                        currency: total.currency.to_string(),
                    },
                );
            }
            let Some(booking_id) = booking_of(e) else {
                continue;
            };
            let Some(b) = bookings.get(&booking_id) else {
                return Err(inconsistent(
                    NAME,
                    e,
                    format!("booking {booking_id} was never placed"),
                ));
            };
            let day = e.effective_at.date_naive();
            let d = daily
                .entry((day, b.listing_id, b.currency.clone()))
                .or_insert_with(|| Daily {
                    day,
                    listing_id: b.listing_id,
                    currency: b.currency.clone(),
                    ..Daily::default()
                });
            let mut earn = |gross: i64, refunds: i64| {
                let x = earnings
                    .entry((b.provider_id, b.currency.clone()))
                    .or_insert_with(|| EarningsRow {
                        provider_id: b.provider_id,
                        currency: b.currency.clone(),
                        ..EarningsRow::default()
                    });
                x.gross_minor += gross;
                x.refunds_minor += refunds;
            };
            match &e.event {
                AnyEvent::Booking(BookingEvent::BookingPlaced { .. }) => d.bookings_placed += 1,
                AnyEvent::Booking(
                    BookingEvent::BookingConfirmed { .. }
                    | BookingEvent::LatePaymentAccepted { .. },
                ) => {
                    d.bookings_confirmed += 1;
                    d.seats_sold += b.seats;
                }
                AnyEvent::Booking(BookingEvent::BookingCancelled { .. }) => {
                    d.bookings_cancelled += 1
                }
                AnyEvent::Booking(BookingEvent::BookingExpired { .. }) => d.bookings_expired += 1,
                AnyEvent::Booking(BookingEvent::BookingCompleted { .. }) => {
                    d.bookings_completed += 1
                }
                AnyEvent::Payment(PaymentEvent::PaymentSucceeded { amount, .. }) => {
                    d.revenue_minor += amount.minor;
                    earn(amount.minor, 0);
                }
                AnyEvent::Payment(PaymentEvent::RefundSucceeded { amount, .. }) => {
                    d.refunds_minor += amount.minor;
                    earn(0, amount.minor);
                }
                _ => {}
            }
        }
        rows::upsert(conn, "stats_listings", &["listing_id"], listings.changed()).await?;
        rows::upsert(conn, "stats_bookings", &["booking_id"], bookings.changed()).await?;
        rows::add(
            conn,
            "daily_stats",
            &["day", "listing_id", "currency"],
            daily.values(),
        )
        .await?;
        rows::add(
            conn,
            "provider_earnings",
            &["provider_id", "currency"],
            earnings.values(),
        )
        .await?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Queries: what the API reads from this read model, with the views it answers with.

/// Bookings, revenue and refunds of one day in one currency.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DayStats {
    pub day: NaiveDate,
    pub currency: String,
    pub bookings_placed: i64,
    pub bookings_confirmed: i64,
    pub bookings_cancelled: i64,
    pub bookings_expired: i64,
    pub bookings_completed: i64,
    pub seats_sold: i64,
    pub revenue_minor: i64,
    pub refunds_minor: i64,
}

/// Bookings, revenue and refunds of one listing in one currency.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ListingStats {
    pub listing_id: Uuid,
    pub currency: String,
    pub bookings_placed: i64,
    pub bookings_confirmed: i64,
    pub bookings_cancelled: i64,
    pub bookings_expired: i64,
    pub bookings_completed: i64,
    pub seats_sold: i64,
    pub revenue_minor: i64,
    pub refunds_minor: i64,
}

/// A provider's earnings in one currency, after refunds and the platform's commission.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Earnings {
    pub currency: String,
    pub gross_minor: i64,
    pub refunds_minor: i64,
    /// Platform commission in basis points (1500 = 15 %).
    pub commission_bp: i32,
    pub commission_minor: i64,
    pub net_minor: i64,
}

const SUMS: &str = "sum(bookings_placed)::int8 AS bookings_placed, \
    sum(bookings_confirmed)::int8 AS bookings_confirmed, \
    sum(bookings_cancelled)::int8 AS bookings_cancelled, \
    sum(bookings_expired)::int8 AS bookings_expired, \
    sum(bookings_completed)::int8 AS bookings_completed, \
    sum(seats_sold)::int8 AS seats_sold, sum(revenue_minor)::int8 AS revenue_minor, \
    sum(refunds_minor)::int8 AS refunds_minor";

/// Per day and currency, between two days (both included; open ends when `None`).
pub async fn daily(
    pool: &sqlx::PgPool,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> Result<Vec<DayStats>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT day, currency, {SUMS} FROM read.daily_stats
          WHERE ($1::date IS NULL OR day >= $1) AND ($2::date IS NULL OR day <= $2)
          GROUP BY day, currency ORDER BY day, currency LIMIT 5000"
    )))
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
}

/// Per listing and currency between two days, highest revenue first.
pub async fn per_listing(
    pool: &sqlx::PgPool,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> Result<Vec<ListingStats>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT listing_id, currency, {SUMS} FROM read.daily_stats
          WHERE ($1::date IS NULL OR day >= $1) AND ($2::date IS NULL OR day <= $2)
          GROUP BY listing_id, currency ORDER BY revenue_minor DESC, listing_id LIMIT 1000"
    )))
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
}

/// A provider's earnings per currency.
pub async fn provider_earnings(
    pool: &sqlx::PgPool,
    provider_id: Uuid,
) -> Result<Vec<Earnings>, sqlx::Error> {
    sqlx::query_as(
        "SELECT currency, gross_minor, refunds_minor, commission_bp, commission_minor, net_minor
           FROM read.provider_earnings WHERE provider_id = $1 ORDER BY currency",
    )
    .bind(provider_id)
    .fetch_all(pool)
    .await
}
