//! Webhooks for integrators, after the Standard Webhooks convention (as Svix and Stripe do):
//! providers register HTTPS endpoints for events of their own listings, admins for every event.
//!
//! - The [`WebhookReactor`] follows the log and writes one delivery per (event, endpoint), its id
//!   derived from both (`ON CONFLICT DO NOTHING`: a replay or rebuild delivers nothing anew).
//! - The [`WebhookDeliverer`] sends each endpoint's deliveries **in log order** (the oldest
//!   pending one first; a later one waits until it went through), signed with
//!   `webhook-id`, `webhook-timestamp` and `webhook-signature` (HMAC-SHA256 over
//!   `id.timestamp.body`, one signature per valid secret while a rotated one overlaps).
//!   Failures back off exponentially with jitter, the same id on every retry; an endpoint that
//!   has failed for `disable_after` (a day by default) is disabled and its owner told.
//! - Endpoints may point only at public addresses unless the settings allow private ones: the
//!   URL is checked when registered, and every connection resolves through [`GuardedResolver`],
//!   which refuses loopback, private, link-local and other internal ranges (so a provider cannot
//!   make the platform call its own admin port, also not through DNS tricks or redirects).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_lc_rs::hmac;
use base64::Engine;
use chrono::{DateTime, TimeDelta, Utc};
use rand::{Rng, RngCore};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::PgPool;
use tessera_commands::error::CommandError;
use tessera_commands::handler::{load, stream_of};
use tessera_commands::reactor::Reactor;
use tessera_domain::booking::{BookingAggregate, BookingEvent};
use tessera_domain::provider::ProviderEvent;
use tessera_domain::slot::{SlotAggregate, SlotEvent, SlotState};
use tessera_domain::values::{Money, UserId};
use tessera_log::clock::Clock;
use tessera_log::codec::AnyEvent;
use tessera_log::store::{EventStore, RecordedEvent, StoreError};
use uuid::Uuid;

/// Every event type an endpoint can subscribe to.
pub const EVENT_TYPES: &[&str] = &[
    "booking.placed",
    "booking.confirmed",
    "booking.cancelled",
    "booking.expired",
    "booking.refunded",
    "booking.checked_in",
    "booking.no_show",
    "booking.rescheduled",
    "slot.cancelled",
    "payout.paid",
    "payout.failed",
];

/// The version of every payload's shape (in the payload, and in the OpenAPI document).
pub const PAYLOAD_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{0}")]
    Url(String),
    #[error("unknown event type {0:?}")]
    EventType(String),
    #[error("an endpoint subscribes to at least one event type")]
    NoEventTypes,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

fn db(e: sqlx::Error) -> CommandError {
    CommandError::Store(StoreError::from(e))
}

// ---------------------------------------------------------------------------------------------
// Where endpoints may point.

/// What the settings allow endpoints to point at.
#[derive(Debug, Clone, Copy, Default)]
pub struct UrlPolicy {
    /// `http://` as well as `https://` (local development, tests).
    pub allow_http: bool,
    /// Loopback, private and link-local addresses (local development, tests).
    pub allow_private: bool,
}

/// Whether an address is outside every internal range (or the policy allows internal ones).
pub fn ip_allowed(ip: IpAddr, policy: UrlPolicy) -> bool {
    if policy.allow_private {
        return true;
    }
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])) // shared address space (CGNAT)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
                || o[0] >= 240) // reserved
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return ip_allowed(IpAddr::V4(v4), policy);
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] == 0x2001 && s[1] == 0x0db8)) // documentation
        }
    }
}

/// Checks an endpoint's URL against `policy`: the scheme, no credentials, a host, and (for an
/// address written as such) an allowed address. Names are checked again at every connection.
pub fn check_url(raw: &str, policy: UrlPolicy) -> Result<reqwest::Url, WebhookError> {
    let url = reqwest::Url::parse(raw.trim())
        .map_err(|e| WebhookError::Url(format!("not a URL: {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_http => {}
        other => {
            return Err(WebhookError::Url(format!(
                "endpoints use https (not {other})"
            )));
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(WebhookError::Url("no credentials in the URL".into()));
    }
    let host = url
        .host()
        .ok_or_else(|| WebhookError::Url("the URL names no host".into()))?;
    let literal = match host {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(d) => {
            let d = d.to_ascii_lowercase();
            if !policy.allow_private && (d == "localhost" || d.ends_with(".localhost")) {
                return Err(WebhookError::Url(
                    "endpoints may not point at this machine".into(),
                ));
            }
            None
        }
    };
    if let Some(ip) = literal
        && !ip_allowed(ip, policy)
    {
        return Err(WebhookError::Url(format!(
            "endpoints may not point at internal addresses ({ip})"
        )));
    }
    Ok(url)
}

/// Resolves names like the system does, then drops every address the policy refuses; a name
/// with none left fails to resolve (so DNS cannot lead the platform to an internal address).
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    pub policy: UrlPolicy,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| ip_allowed(a.ip(), policy))
                .collect();
            if found.is_empty() {
                return Err(format!("{host} resolves to no address endpoints may use").into());
            }
            Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The HTTP client deliveries go through: the guarded resolver, no redirects, 10 s per request.
pub fn client(policy: UrlPolicy) -> Result<reqwest::Client, reqwest::Error> {
    // Both ring and aws-lc are compiled in, so rustls cannot choose by itself (CRATES.md); the
    // process's choice stands if one was made already.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver { policy }))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .user_agent("Tessera-Webhooks/1")
        .build()
}

// ---------------------------------------------------------------------------------------------
// Signatures (Standard Webhooks).

/// A fresh secret: `whsec_` and 24 random bytes in base64.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

fn key_of(secret: &str) -> Vec<u8> {
    let raw = secret.strip_prefix("whsec_").unwrap_or(secret);
    base64::engine::general_purpose::STANDARD
        .decode(raw)
        .unwrap_or_else(|_| raw.as_bytes().to_vec())
}

/// `v1,<base64 HMAC-SHA256 of "id.timestamp.body">` under `secret`.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key_of(secret));
    let tag = hmac::sign(&key, format!("{id}.{timestamp}.{body}").as_bytes());
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
    )
}

/// Whether `header` (space-separated `v1,…` signatures) holds a valid signature under `secret`
/// and `timestamp` is within `tolerance` of `now` (what a receiver checks).
pub fn verify(
    secret: &str,
    id: &str,
    timestamp: i64,
    body: &str,
    header: &str,
    now: i64,
    tolerance: i64,
) -> bool {
    if (now - timestamp).abs() > tolerance {
        return false;
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key_of(secret));
    let message = format!("{id}.{timestamp}.{body}");
    header.split_whitespace().any(|sig| {
        sig.strip_prefix("v1,")
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .is_some_and(|tag| hmac::verify(&key, message.as_bytes(), &tag).is_ok())
    })
}

// ---------------------------------------------------------------------------------------------
// Endpoints.

/// An endpoint as its owner sees it (never its secret).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Endpoint {
    pub id: Uuid,
    pub owner: Uuid,
    /// `provider` (events of the owner's listings) or `all` (an admin's).
    pub scope: String,
    pub url: String,
    pub event_types: Vec<String>,
    pub description: String,
    /// `enabled` or `disabled`.
    pub status: String,
    pub disabled_reason: Option<String>,
    pub failing_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

const ENDPOINT: &str = "SELECT id, owner, scope, url, event_types, description, status,
        disabled_reason, failing_since, created_at FROM webhook_endpoints";

/// What registering an endpoint asks for.
#[derive(Debug, Clone)]
pub struct Registration<'a> {
    pub owner: UserId,
    /// Every event (an admin's endpoint), or the owner's listings' only.
    pub all_events: bool,
    pub url: &'a str,
    pub event_types: &'a [String],
    pub description: &'a str,
}

/// Registers an endpoint; returns it and its secret.
pub async fn create(
    pool: &PgPool,
    r: &Registration<'_>,
    policy: UrlPolicy,
    now: DateTime<Utc>,
) -> Result<(Endpoint, String), WebhookError> {
    let Registration {
        owner,
        all_events,
        url,
        event_types,
        description,
    } = *r;
    let url = check_url(url, policy)?;
    if event_types.is_empty() {
        return Err(WebhookError::NoEventTypes);
    }
    if let Some(t) = event_types
        .iter()
        .find(|t| !EVENT_TYPES.contains(&t.as_str()))
    {
        return Err(WebhookError::EventType(t.clone()));
    }
    let mut types = event_types.to_vec();
    types.sort();
    types.dedup();
    let secret = new_secret();
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO webhook_endpoints (id, owner, scope, url, event_types, description, secret,
                                        created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(owner.0)
    .bind(if all_events { "all" } else { "provider" })
    .bind(url.as_str())
    .bind(&types)
    .bind(description.trim())
    .bind(&secret)
    .bind(now)
    .execute(pool)
    .await?;
    let endpoint = get(pool, id).await?.ok_or(sqlx::Error::RowNotFound)?;
    Ok((endpoint, secret))
}

/// An endpoint that was not deleted.
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<Endpoint>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{ENDPOINT} WHERE id = $1 AND status <> 'deleted'"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// `owner`'s endpoints (every one for `None`), oldest first.
pub async fn list(pool: &PgPool, owner: Option<Uuid>) -> Result<Vec<Endpoint>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{ENDPOINT} WHERE status <> 'deleted' AND ($1::uuid IS NULL OR owner = $1)
         ORDER BY created_at, id"
    )))
    .bind(owner)
    .fetch_all(pool)
    .await
}

/// Deletes an endpoint (its delivery log stays, nothing more is sent).
pub async fn delete(pool: &PgPool, id: Uuid) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE webhook_endpoints SET status = 'deleted' WHERE id = $1 AND status <> 'deleted'",
    )
    .bind(id)
    .execute(pool)
    .await?
    .rows_affected()
        == 1)
}

/// Enables a disabled endpoint again; its waiting deliveries go out in order.
pub async fn enable(pool: &PgPool, id: Uuid, now: DateTime<Utc>) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let changed = sqlx::query(
        "UPDATE webhook_endpoints SET status = 'enabled', disabled_reason = NULL,
                failing_since = NULL
         WHERE id = $1 AND status = 'disabled'",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query(
        "UPDATE webhook_deliveries SET next_attempt_at = $2
         WHERE endpoint_id = $1 AND status = 'pending'",
    )
    .bind(id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(changed == 1)
}

/// A new secret; the old one keeps signing (beside it) for `overlap`.
pub async fn rotate(
    pool: &PgPool,
    id: Uuid,
    now: DateTime<Utc>,
    overlap: TimeDelta,
) -> Result<Option<String>, sqlx::Error> {
    let secret = new_secret();
    let changed = sqlx::query(
        "UPDATE webhook_endpoints SET previous_secret = secret, previous_expires_at = $3,
                secret = $2
         WHERE id = $1 AND status <> 'deleted'",
    )
    .bind(id)
    .bind(&secret)
    .bind(now + overlap)
    .execute(pool)
    .await?
    .rows_affected();
    Ok((changed == 1).then_some(secret))
}

/// The endpoint's current secret, and until when the previous one still signs beside it.
pub async fn secret(
    pool: &PgPool,
    id: Uuid,
) -> Result<Option<(String, Option<DateTime<Utc>>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT secret, previous_expires_at FROM webhook_endpoints
         WHERE id = $1 AND status <> 'deleted'",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// One delivery, as the delivery log shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Delivery {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    pub event_position: i64,
    pub event_type: String,
    pub payload: String,
    pub created_at: DateTime<Utc>,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub last_status: Option<i32>,
    pub last_latency_ms: Option<i32>,
    pub last_response: Option<String>,
}

const DELIVERY: &str = "SELECT id, endpoint_id, event_position, event_type, payload, created_at,
        status, attempts, next_attempt_at, delivered_at, last_status, last_latency_ms,
        last_response FROM webhook_deliveries";

/// The endpoint's deliveries, newest first.
pub async fn deliveries(
    pool: &PgPool,
    endpoint: Uuid,
    limit: i64,
) -> Result<Vec<Delivery>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{DELIVERY} WHERE endpoint_id = $1 ORDER BY event_position DESC, id LIMIT $2"
    )))
    .bind(endpoint)
    .bind(limit.clamp(1, 1000))
    .fetch_all(pool)
    .await
}

/// One attempt of a delivery.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Attempt {
    pub attempt: i32,
    pub at: DateTime<Utc>,
    /// The endpoint's HTTP status (none: no answer).
    pub status: Option<i32>,
    pub latency_ms: i32,
    /// The answer's first 500 characters, or why there was none.
    pub response: Option<String>,
}

pub async fn delivery(
    pool: &PgPool,
    endpoint: Uuid,
    id: Uuid,
) -> Result<Option<(Delivery, Vec<Attempt>)>, sqlx::Error> {
    let Some(d): Option<Delivery> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{DELIVERY} WHERE endpoint_id = $1 AND id = $2"
    )))
    .bind(endpoint)
    .bind(id)
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let attempts = sqlx::query_as(
        "SELECT attempt, at, status, latency_ms, response FROM webhook_attempts
         WHERE delivery_id = $1 ORDER BY attempt",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    Ok(Some((d, attempts)))
}

/// Sends a delivery again (same id, same body), due now.
pub async fn redeliver(
    pool: &PgPool,
    endpoint: Uuid,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $3
         WHERE endpoint_id = $1 AND id = $2",
    )
    .bind(endpoint)
    .bind(id)
    .bind(now)
    .execute(pool)
    .await?
    .rows_affected()
        == 1)
}

// ---------------------------------------------------------------------------------------------
// Events in, deliveries out.

fn money(m: &Money) -> Value {
    json!({ "amount_minor": m.minor, "currency": m.currency.as_str() })
}

/// Derives deliveries from the log.
#[derive(Debug)]
pub struct WebhookReactor {
    pub store: Arc<dyn EventStore>,
    pub pool: PgPool,
    /// Events older than this when first seen deliver nothing.
    pub max_age: TimeDelta,
}

impl WebhookReactor {
    /// The webhook type, the provider whose endpoints hear it, and the payload's data.
    async fn translate(
        &self,
        decoded: &AnyEvent,
    ) -> Result<Option<(&'static str, Option<UserId>, Value)>, CommandError> {
        let booking = async |id| {
            Ok::<_, CommandError>(
                load::<BookingAggregate>(
                    &*self.store,
                    stream_of::<BookingAggregate>(id),
                    Uuid::nil(),
                )
                .await?
                .state
                .booking()
                .cloned(),
            )
        };
        Ok(match decoded {
            AnyEvent::Booking(e) => {
                let (kind, id, extra) = match e {
                    BookingEvent::BookingPlaced { booking_id, .. } => {
                        ("booking.placed", *booking_id, json!({}))
                    }
                    BookingEvent::BookingConfirmed {
                        booking_id,
                        amount_paid,
                        ..
                    }
                    | BookingEvent::LatePaymentAccepted {
                        booking_id,
                        amount_paid,
                        ..
                    } => (
                        "booking.confirmed",
                        *booking_id,
                        json!({ "amount_paid": money(amount_paid) }),
                    ),
                    BookingEvent::BookingCancelled {
                        booking_id,
                        by,
                        refund_due,
                        reason,
                        ..
                    } => (
                        "booking.cancelled",
                        *booking_id,
                        json!({ "cancelled_by": by, "refund_due": money(refund_due), "reason": reason }),
                    ),
                    BookingEvent::BookingExpired { booking_id } => {
                        ("booking.expired", *booking_id, json!({}))
                    }
                    BookingEvent::TicketCheckedIn {
                        booking_id,
                        seat,
                        by,
                        at,
                    } => (
                        "booking.checked_in",
                        *booking_id,
                        json!({ "seat": seat, "checked_in_by": by.0, "checked_in_at": at }),
                    ),
                    BookingEvent::BookingNoShow { booking_id } => {
                        ("booking.no_show", *booking_id, json!({}))
                    }
                    BookingEvent::BookingRescheduled {
                        booking_id,
                        from_slot,
                        to_slot,
                        total,
                        refund,
                        top_up,
                        ..
                    } => (
                        "booking.rescheduled",
                        *booking_id,
                        json!({
                            "from_slot_id": from_slot.0,
                            "to_slot_id": to_slot.0,
                            "new_total": money(total),
                            "refund": money(refund),
                            "charged": top_up.as_ref().map(|t| money(&t.amount)),
                        }),
                    ),
                    BookingEvent::BookingRefunded {
                        booking_id,
                        amount,
                        total_refunded,
                    } => (
                        "booking.refunded",
                        *booking_id,
                        json!({ "amount": money(amount), "total_refunded": money(total_refunded) }),
                    ),
                    _ => return Ok(None),
                };
                let Some(b) = booking(id).await? else {
                    return Ok(None);
                };
                let mut data = json!({
                    "booking_id": b.id.0,
                    "listing_id": b.listing_id.0,
                    "slot_id": b.slot_id.0,
                    "customer_id": b.customer_id.0,
                    "seats": b.seats,
                    "total": money(&b.total),
                    "slot_starts_at": b.slot_starts_at,
                    "slot_ends_at": b.slot_ends_at,
                });
                if let (Some(d), Some(x)) = (data.as_object_mut(), extra.as_object()) {
                    d.extend(x.clone());
                }
                Some((kind, b.provider_id, data))
            }
            AnyEvent::Slot(SlotEvent::SlotCancelled {
                slot_id,
                reason,
                affected_bookings,
            }) => {
                let slot = load::<SlotAggregate>(
                    &*self.store,
                    stream_of::<SlotAggregate>(*slot_id),
                    Uuid::nil(),
                )
                .await?;
                let SlotState::Scheduled(s) = slot.state else {
                    return Ok(None);
                };
                Some((
                    "slot.cancelled",
                    Some(s.provider_id),
                    json!({
                        "slot_id": slot_id.0,
                        "listing_id": s.listing_id.0,
                        "starts_at": s.starts_at,
                        "reason": reason,
                        "affected_bookings": affected_bookings.iter().map(|b| b.0).collect::<Vec<_>>(),
                    }),
                ))
            }
            AnyEvent::Provider(ProviderEvent::PayoutPaid {
                provider_id,
                payout_ref,
                amount,
                ..
            }) => Some((
                "payout.paid",
                Some(*provider_id),
                json!({ "provider_id": provider_id.0, "payout_ref": payout_ref, "amount": money(amount) }),
            )),
            AnyEvent::Provider(ProviderEvent::PayoutFailed {
                provider_id,
                payout_ref,
                amount,
                reason,
                ..
            }) => Some((
                "payout.failed",
                Some(*provider_id),
                json!({ "provider_id": provider_id.0, "payout_ref": payout_ref, "amount": money(amount), "reason": reason }),
            )),
            _ => None,
        })
    }
}

/// The message id (`webhook-id`) of a delivery.
pub fn message_id(delivery: Uuid) -> String {
    format!("msg_{}", delivery.simple())
}

#[async_trait]
impl Reactor for WebhookReactor {
    fn name(&self) -> &'static str {
        "webhooks"
    }

    async fn react(
        &self,
        event: &RecordedEvent,
        decoded: &AnyEvent,
        now: DateTime<Utc>,
    ) -> Result<(), CommandError> {
        if event.recorded_at < now - self.max_age {
            return Ok(());
        }
        // Cheap first: most events have no subscriber at all.
        let Some(kind) = kind_of(decoded) else {
            return Ok(());
        };
        let endpoints: Vec<(Uuid, String, Uuid)> = sqlx::query_as(
            "SELECT id, scope, owner FROM webhook_endpoints
             WHERE status = 'enabled' AND $1 = ANY(event_types) AND created_at <= $2",
        )
        .bind(kind)
        .bind(event.recorded_at)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        if endpoints.is_empty() {
            return Ok(());
        }
        let Some((kind, provider, data)) = self.translate(decoded).await? else {
            return Ok(());
        };
        for (endpoint, scope, owner) in endpoints {
            if scope != "all" && provider.is_none_or(|p| p.0 != owner) {
                continue;
            }
            let id = Uuid::new_v5(&event.event_id, format!("webhook:{endpoint}").as_bytes());
            let payload = json!({
                "type": kind,
                "version": PAYLOAD_VERSION,
                "id": message_id(id),
                "timestamp": event.recorded_at,
                "event_position": event.position.0,
                "data": data,
            });
            sqlx::query(
                "INSERT INTO webhook_deliveries (id, endpoint_id, event_position, event_type,
                                                 payload, created_at, next_attempt_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $6)
                 ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .bind(endpoint)
            .bind(event.position.0 as i64)
            .bind(kind)
            .bind(payload.to_string())
            .bind(event.recorded_at)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        }
        Ok(())
    }
}

/// The webhook type of an event, without loading anything.
fn kind_of(decoded: &AnyEvent) -> Option<&'static str> {
    Some(match decoded {
        AnyEvent::Booking(BookingEvent::BookingPlaced { .. }) => "booking.placed",
        AnyEvent::Booking(
            BookingEvent::BookingConfirmed { .. } | BookingEvent::LatePaymentAccepted { .. },
        ) => "booking.confirmed",
        AnyEvent::Booking(BookingEvent::BookingCancelled { .. }) => "booking.cancelled",
        AnyEvent::Booking(BookingEvent::BookingExpired { .. }) => "booking.expired",
        AnyEvent::Booking(BookingEvent::BookingRefunded { .. }) => "booking.refunded",
        AnyEvent::Booking(BookingEvent::TicketCheckedIn { .. }) => "booking.checked_in",
        AnyEvent::Booking(BookingEvent::BookingNoShow { .. }) => "booking.no_show",
        AnyEvent::Booking(BookingEvent::BookingRescheduled { .. }) => "booking.rescheduled",
        AnyEvent::Slot(SlotEvent::SlotCancelled { .. }) => "slot.cancelled",
        AnyEvent::Provider(ProviderEvent::PayoutPaid { .. }) => "payout.paid",
        AnyEvent::Provider(ProviderEvent::PayoutFailed { .. }) => "payout.failed",
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// Delivery.

/// When to retry, and when to give up on an endpoint.
#[derive(Debug, Clone, Copy)]
pub struct WebhookPolicy {
    pub base: TimeDelta,
    pub cap: TimeDelta,
    /// An endpoint failing this long (since its last success) is disabled.
    pub disable_after: TimeDelta,
}

impl Default for WebhookPolicy {
    fn default() -> Self {
        Self {
            base: TimeDelta::seconds(30),
            cap: TimeDelta::hours(2),
            disable_after: TimeDelta::hours(24),
        }
    }
}

impl WebhookPolicy {
    /// `base · 2^(attempts-1)` capped, of which a random half (equal jitter).
    pub fn backoff(&self, attempts: i32, rng: &mut impl Rng) -> TimeDelta {
        let exp = self.base * 2i32.saturating_pow((attempts - 1).clamp(0, 20) as u32);
        let full = exp.min(self.cap).num_milliseconds().max(2);
        TimeDelta::milliseconds(full / 2 + rng.random_range(0..=full / 2))
    }
}

/// Told when an endpoint is disabled (the API wires it to its owner's outbox).
#[async_trait]
pub trait OnDisabled: Send + Sync + std::fmt::Debug {
    async fn disabled(&self, endpoint: &Endpoint, reason: &str);
}

/// Sends what is due, endpoint by endpoint, in log order.
#[derive(Debug, Clone)]
pub struct WebhookDeliverer {
    pub pool: PgPool,
    pub client: reqwest::Client,
    pub clock: Arc<dyn Clock>,
    pub policy: WebhookPolicy,
    pub on_disabled: Option<Arc<dyn OnDisabled>>,
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookPass {
    pub delivered: u64,
    pub failed: u64,
    pub disabled: u64,
}

#[derive(sqlx::FromRow)]
struct Leased {
    id: Uuid,
    url: String,
    secret: String,
    previous_secret: Option<String>,
    previous_expires_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct Head {
    id: Uuid,
    payload: String,
    attempts: i32,
    next_attempt_at: DateTime<Utc>,
}

const LEASE: TimeDelta = TimeDelta::minutes(2);

impl WebhookDeliverer {
    /// Delivers every endpoint's due deliveries, oldest first, stopping at an endpoint's first
    /// failure (what follows waits for it).
    pub async fn deliver_due(&self) -> Result<WebhookPass, sqlx::Error> {
        let mut pass = WebhookPass::default();
        let now = self.clock.now();
        let leased: Vec<Leased> = sqlx::query_as(
            "UPDATE webhook_endpoints e SET lease_until = $2
             FROM (SELECT id FROM webhook_endpoints w
                   WHERE status = 'enabled' AND (lease_until IS NULL OR lease_until < $1)
                     AND EXISTS (SELECT 1 FROM webhook_deliveries d
                                 WHERE d.endpoint_id = w.id AND d.status = 'pending'
                                   AND d.next_attempt_at <= $1)
                   ORDER BY id
                   FOR UPDATE SKIP LOCKED) due
             WHERE e.id = due.id
             RETURNING e.id, e.url, e.secret, e.previous_secret, e.previous_expires_at",
        )
        .bind(now)
        .bind(now + LEASE)
        .fetch_all(&self.pool)
        .await?;
        for endpoint in leased {
            let outcome = self.drain(&endpoint, &mut pass).await;
            sqlx::query("UPDATE webhook_endpoints SET lease_until = NULL WHERE id = $1")
                .bind(endpoint.id)
                .execute(&self.pool)
                .await?;
            outcome?;
        }
        Ok(pass)
    }

    async fn drain(&self, e: &Leased, pass: &mut WebhookPass) -> Result<(), sqlx::Error> {
        loop {
            let now = self.clock.now();
            let head: Option<Head> = sqlx::query_as(
                "SELECT id, payload, attempts, next_attempt_at FROM webhook_deliveries
                 WHERE endpoint_id = $1 AND status = 'pending'
                 ORDER BY event_position, id LIMIT 1",
            )
            .bind(e.id)
            .fetch_optional(&self.pool)
            .await?;
            let Some(head) = head else { return Ok(()) };
            if head.next_attempt_at > now {
                return Ok(());
            }
            let attempt = head.attempts + 1;
            let msg = message_id(head.id);
            let ts = now.timestamp();
            let mut signatures = vec![sign(&e.secret, &msg, ts, &head.payload)];
            if let (Some(prev), Some(until)) = (&e.previous_secret, e.previous_expires_at)
                && until > now
            {
                signatures.push(sign(prev, &msg, ts, &head.payload));
            }
            let started = Instant::now();
            let answer = self
                .client
                .post(&e.url)
                .header("content-type", "application/json")
                .header("webhook-id", &msg)
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", signatures.join(" "))
                .body(head.payload.clone())
                .send()
                .await;
            let (status, text) = match answer {
                Ok(r) => {
                    let status = r.status().as_u16() as i32;
                    let text = r.text().await.unwrap_or_default();
                    (Some(status), text)
                }
                Err(err) => (None, format!("no answer: {err}")),
            };
            let latency = started.elapsed().as_millis().min(i32::MAX as u128) as i32;
            let snippet: String = text.chars().take(500).collect();
            let ok = status.is_some_and(|s| (200..300).contains(&s));
            let at = self.clock.now();
            let mut tx = self.pool.begin().await?;
            sqlx::query(
                "INSERT INTO webhook_attempts (delivery_id, attempt, at, status, latency_ms, response)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            )
            .bind(head.id)
            .bind(attempt)
            .bind(at)
            .bind(status)
            .bind(latency)
            .bind(&snippet)
            .execute(&mut *tx)
            .await?;
            if ok {
                sqlx::query(
                    "UPDATE webhook_deliveries SET status = 'delivered', attempts = $2,
                            delivered_at = $3, last_status = $4, last_latency_ms = $5,
                            last_response = $6
                     WHERE id = $1",
                )
                .bind(head.id)
                .bind(attempt)
                .bind(at)
                .bind(status)
                .bind(latency)
                .bind(&snippet)
                .execute(&mut *tx)
                .await?;
                sqlx::query("UPDATE webhook_endpoints SET failing_since = NULL WHERE id = $1")
                    .bind(e.id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                metrics::counter!("tessera_webhooks_delivered_total").increment(1);
                pass.delivered += 1;
                continue;
            }
            let retry_at = at + self.policy.backoff(attempt, &mut rand::rng());
            sqlx::query(
                "UPDATE webhook_deliveries SET attempts = $2, next_attempt_at = $3,
                        last_status = $4, last_latency_ms = $5, last_response = $6
                 WHERE id = $1",
            )
            .bind(head.id)
            .bind(attempt)
            .bind(retry_at)
            .bind(status)
            .bind(latency)
            .bind(&snippet)
            .execute(&mut *tx)
            .await?;
            let failing_since: DateTime<Utc> = sqlx::query_scalar(
                "UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, $2)
                 WHERE id = $1 RETURNING failing_since",
            )
            .bind(e.id)
            .bind(at)
            .fetch_one(&mut *tx)
            .await?;
            metrics::counter!("tessera_webhooks_failed_total").increment(1);
            pass.failed += 1;
            let give_up = at - failing_since >= self.policy.disable_after;
            if give_up {
                let reason = format!(
                    "failing since {} (last answer: {})",
                    failing_since.format("%Y-%m-%d %H:%M UTC"),
                    status.map_or(snippet.clone(), |s| format!("HTTP {s}"))
                );
                sqlx::query(
                    "UPDATE webhook_endpoints SET status = 'disabled', disabled_reason = $2
                     WHERE id = $1",
                )
                .bind(e.id)
                .bind(&reason)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                pass.disabled += 1;
                tracing::warn!(endpoint = %e.id, %reason, "webhook endpoint disabled");
                if let (Some(hook), Some(endpoint)) =
                    (&self.on_disabled, get(&self.pool, e.id).await?)
                {
                    hook.disabled(&endpoint, &reason).await;
                }
            } else {
                tx.commit().await?;
            }
            return Ok(());
        }
    }

    /// Delivers every `every` until `shutdown` turns true.
    pub async fn run(self, every: Duration, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => {}
            }
            if *shutdown.borrow() {
                break;
            }
            if let Err(e) = self.deliver_due().await {
                tracing::warn!(error = %e, "delivering webhooks failed; next pass");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_refused_unless_allowed() {
        let strict = UrlPolicy::default();
        for url in [
            "https://127.0.0.1/hook",
            "https://10.1.2.3/hook",
            "https://192.168.0.10/hook",
            "https://172.16.5.4/hook",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/hook",
            "https://[fd00::1]/hook",
            "https://[::ffff:127.0.0.1]/hook",
            "https://localhost:8080/admin",
            "https://0.0.0.0/",
            "http://example.com/hook",
            "https://user:pw@example.com/hook",
            "ftp://example.com/",
        ] {
            assert!(check_url(url, strict).is_err(), "{url}");
        }
        assert!(check_url("https://hooks.example.com/tessera", strict).is_ok());
        assert!(check_url("https://93.184.215.14/hook", strict).is_ok());
        let local = UrlPolicy {
            allow_http: true,
            allow_private: true,
        };
        assert!(check_url("http://127.0.0.1:9000/hook", local).is_ok());
    }

    #[test]
    fn signatures_follow_standard_webhooks() {
        // The example of the Standard Webhooks specification's reference implementation.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let ts = 1_614_265_330;
        let body = r#"{"test": 2432232314}"#;
        let sig = sign(secret, id, ts, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(verify(
            secret,
            id,
            ts,
            body,
            &format!("v1,bogus {sig}"),
            ts + 10,
            300
        ));
        assert!(
            !verify(secret, id, ts, body, &sig, ts + 400, 300),
            "too old"
        );
        assert!(!verify(secret, id, ts, "{}", &sig, ts, 300), "another body");
        assert!(new_secret().starts_with("whsec_"));
    }
}
