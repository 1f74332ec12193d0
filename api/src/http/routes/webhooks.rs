//! Webhook endpoints for integrators: providers subscribe to events of their own listings,
//! admins to every event. Payloads are documented in the OpenAPI document's `webhooks`;
//! signatures follow Standard Webhooks (docs/notifications.md). A caller sees only their own
//! endpoints (admins every one); anyone else's is a 404.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use tessera_domain::user::Role;
use tessera_notify::webhooks::{self, EVENT_TYPES, WebhookError};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::http::auth::Require;
use crate::http::auth::roles::ProviderOrAdmin;
use crate::http::codes;
use crate::http::error::{ApiError, FieldError, Problem};
use crate::http::{ApiJson, ApiPath, ApiQuery, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_endpoints, create_endpoint))
        .routes(routes!(get_endpoint, delete_endpoint))
        .routes(routes!(enable_endpoint))
        .routes(routes!(endpoint_secret))
        .routes(routes!(rotate_secret))
        .routes(routes!(list_deliveries))
        .routes(routes!(get_delivery))
        .routes(routes!(redeliver))
}

/// How long a rotated secret keeps signing beside the new one.
const ROTATION_OVERLAP: TimeDelta = TimeDelta::hours(24);

fn db(e: sqlx::Error) -> ApiError {
    tessera_projections::ProjectionError::from(e).into()
}

fn invalid(field: &str, message: String) -> ApiError {
    ApiError::Invalid(vec![FieldError {
        field: field.into(),
        message,
    }])
}

fn not_found(id: Uuid) -> ApiError {
    ApiError::NotFound {
        what: "webhook endpoint",
        id: id.to_string(),
    }
}

/// A webhook endpoint (its secret is fetched apart).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookEndpoint {
    pub id: Uuid,
    pub owner: Uuid,
    /// `provider` (events of the owner's listings) or `all` (an admin's: every event).
    pub scope: String,
    pub url: String,
    pub event_types: Vec<String>,
    pub description: String,
    /// `enabled` or `disabled`.
    pub status: String,
    /// Why it was disabled (after failing for a day).
    pub disabled_reason: Option<String>,
    /// Since when it fails (none: its last attempt succeeded).
    pub failing_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl From<webhooks::Endpoint> for WebhookEndpoint {
    fn from(e: webhooks::Endpoint) -> Self {
        Self {
            id: e.id,
            owner: e.owner,
            scope: e.scope,
            url: e.url,
            event_types: e.event_types,
            description: e.description,
            status: e.status,
            disabled_reason: e.disabled_reason,
            failing_since: e.failing_since,
            created_at: e.created_at,
        }
    }
}

/// The caller's endpoint `id` (an admin's: any), or 404.
async fn owned(
    state: &AppState,
    caller: &Require<ProviderOrAdmin>,
    id: Uuid,
) -> Result<webhooks::Endpoint, ApiError> {
    match webhooks::get(&state.pool, id).await.map_err(db)? {
        Some(e) if e.owner == caller.user_id.0 || caller.has(Role::Admin) => Ok(e),
        _ => Err(not_found(id)),
    }
}

/// The caller's endpoints (an admin's: every one).
#[utoipa::path(get, path = "/webhooks", tag = "webhooks", security(("bearer" = [])),
    responses(
        (status = 200, description = "The endpoints", body = Vec<WebhookEndpoint>),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_endpoints(
    State(state): State<AppState>,
    caller: Require<ProviderOrAdmin>,
) -> Result<Json<Vec<WebhookEndpoint>>, ApiError> {
    let owner = (!caller.has(Role::Admin)).then_some(caller.user_id.0);
    let list = webhooks::list(&state.pool, owner).await.map_err(db)?;
    Ok(Json(list.into_iter().map(Into::into).collect()))
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    /// Where to POST events: `https://` and a public address.
    pub url: String,
    /// Any of `booking.placed`, `booking.confirmed`, `booking.cancelled`, `booking.expired`,
    /// `booking.refunded`, `booking.checked_in`, `booking.no_show`, `booking.rescheduled`,
    /// `slot.cancelled`, `payout.paid`, `payout.failed`.
    pub event_types: Vec<String>,
    #[serde(default)]
    pub description: String,
}

/// A new endpoint and its signing secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedEndpoint {
    pub endpoint: WebhookEndpoint,
    /// `whsec_…`: verify `webhook-signature` with it.
    pub secret: String,
}

/// Register an endpoint (providers: events of their listings; admins: every event).
#[utoipa::path(post, path = "/webhooks", tag = "webhooks", security(("bearer" = [])),
    request_body = NewEndpoint,
    responses(
        (status = 201, description = "Registered", body = CreatedEndpoint),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create_endpoint(
    State(state): State<AppState>,
    caller: Require<ProviderOrAdmin>,
    ApiJson(req): ApiJson<NewEndpoint>,
) -> Result<(StatusCode, Json<CreatedEndpoint>), ApiError> {
    crate::http::error::storable("url", &req.url)?;
    crate::http::error::storable("description", &req.description)?;
    if req.description.chars().count() > 500 {
        return Err(invalid("description", "at most 500 characters".into()));
    }
    let created = webhooks::create(
        &state.pool,
        &webhooks::Registration {
            owner: caller.user_id,
            all_events: caller.has(Role::Admin),
            url: &req.url,
            event_types: &req.event_types,
            description: &req.description,
        },
        state.webhook_urls,
        state.clock.now(),
    )
    .await;
    let (endpoint, secret) = match created {
        Ok(c) => c,
        Err(WebhookError::Url(why)) => return Err(invalid("url", why)),
        Err(e @ (WebhookError::EventType(_) | WebhookError::NoEventTypes)) => {
            return Err(invalid(
                "event_types",
                format!("{e}; one or more of: {}", EVENT_TYPES.join(", ")),
            ));
        }
        Err(WebhookError::Db(e)) => return Err(db(e)),
    };
    Ok((
        StatusCode::CREATED,
        Json(CreatedEndpoint {
            endpoint: endpoint.into(),
            secret,
        }),
    ))
}

/// One endpoint.
#[utoipa::path(get, path = "/webhooks/{endpoint_id}", tag = "webhooks", security(("bearer" = [])),
    params(("endpoint_id" = Uuid, Path, description = "The endpoint")),
    responses(
        (status = 200, description = "The endpoint", body = WebhookEndpoint),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_endpoint(
    State(state): State<AppState>,
    caller: Require<ProviderOrAdmin>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<WebhookEndpoint>, ApiError> {
    Ok(Json(owned(&state, &caller, id).await?.into()))
}

/// Delete an endpoint: nothing more is sent to it (its delivery log stays).
#[utoipa::path(delete, path = "/webhooks/{endpoint_id}", tag = "webhooks", security(("bearer" = [])),
    params(("endpoint_id" = Uuid, Path, description = "The endpoint")),
    responses(
        (status = 204, description = "Deleted"),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn delete_endpoint(
    State(state): State<AppState>,
    caller: Require<ProviderOrAdmin>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    owned(&state, &caller, id).await?;
    webhooks::delete(&state.pool, id).await.map_err(db)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Enable a disabled endpoint again: its waiting events go out, in order.
#[utoipa::path(post, path = "/webhooks/{endpoint_id}/enable", tag = "webhooks", security(("bearer" = [])),
    params(("endpoint_id" = Uuid, Path, description = "The endpoint")),
    responses(
        (status = 200, description = "Enabled", body = WebhookEndpoint),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn enable_endpoint(
    State(state): State<AppState>,
    caller: Require<ProviderOrAdmin>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<WebhookEndpoint>, ApiError> {
    owned(&state, &caller, id).await?;
    if !webhooks::enable(&state.pool, id, state.clock.now())
        .await
        .map_err(db)?
    {
        return Err(ApiError::Conflict {
            code: &codes::WEBHOOK_NOT_DISABLED,
            detail: format!("endpoint {id} is not disabled"),
        });
    }
    Ok(Json(owned(&state, &caller, id).await?.into()))
}

/// An endpoint's signing secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EndpointSecret {
    /// `whsec_…`.
    pub secret: String,
    /// After a rotation: until when the previous secret still signs too.
    pub previous_valid_until: Option<DateTime<Utc>>,
}

/// The endpoint's current signing secret.
#[utoipa::path(get, path = "/webhooks/{endpoint_id}/secret", tag = "webhooks", security(("bearer" = [])),
    params(("endpoint_id" = Uuid, Path, description = "The endpoint")),
    responses(
        (status = 200, description = "The secret", body = EndpointSecret),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn endpoint_secret(
    State(state): State<AppState>,
    caller: Require<ProviderOrAdmin>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<EndpointSecret>, ApiError> {
    owned(&state, &caller, id).await?;
    let (secret, previous) = webhooks::secret(&state.pool, id)
        .await
        .map_err(db)?
        .ok_or_else(|| not_found(id))?;
    Ok(Json(EndpointSecret {
        secret,
        previous_valid_until: previous.filter(|until| *until > state.clock.now()),
    }))
}

/// A new signing secret; the previous one keeps signing beside it for 24 hours.
#[utoipa::path(post, path = "/webhooks/{endpoint_id}/rotate-secret", tag = "webhooks", security(("bearer" = [])),
    params(("endpoint_id" = Uuid, Path, description = "The endpoint")),
    responses(
        (status = 200, description = "The new secret", body = EndpointSecret),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn rotate_secret(
    State(state): State<AppState>,
    caller: Require<ProviderOrAdmin>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<EndpointSecret>, ApiError> {
    owned(&state, &caller, id).await?;
    let now = state.clock.now();
    let secret = webhooks::rotate(&state.pool, id, now, ROTATION_OVERLAP)
        .await
        .map_err(db)?
        .ok_or_else(|| not_found(id))?;
    Ok(Json(EndpointSecret {
        secret,
        previous_valid_until: Some(now + ROTATION_OVERLAP),
    }))
}

/// One delivery of an event to an endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookDelivery {
    /// Its `webhook-id` is `msg_` and this id without dashes.
    pub id: Uuid,
    pub endpoint_id: Uuid,
    pub event_position: i64,
    pub event_type: String,
    /// The JSON body, exactly as signed and sent.
    pub payload: String,
    pub created_at: DateTime<Utc>,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// The endpoint's last HTTP status (none: no answer).
    pub last_status: Option<i32>,
    pub last_latency_ms: Option<i32>,
    /// The last answer's first 500 characters, or why there was none.
    pub last_response: Option<String>,
}

impl From<webhooks::Delivery> for WebhookDelivery {
    fn from(d: webhooks::Delivery) -> Self {
        Self {
            id: d.id,
            endpoint_id: d.endpoint_id,
            event_position: d.event_position,
            event_type: d.event_type,
            payload: d.payload,
            created_at: d.created_at,
            status: d.status,
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at,
            delivered_at: d.delivered_at,
            last_status: d.last_status,
            last_latency_ms: d.last_latency_ms,
            last_response: d.last_response,
        }
    }
}

#[derive(Debug, Clone, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// At most this many, newest first (1 to 1000; default 100).
    pub limit: Option<i64>,
}

/// The endpoint's delivery log, newest first.
#[utoipa::path(get, path = "/webhooks/{endpoint_id}/deliveries", tag = "webhooks", security(("bearer" = [])),
    params(("endpoint_id" = Uuid, Path, description = "The endpoint"), DeliveriesQuery),
    responses(
        (status = 200, description = "Deliveries", body = Vec<WebhookDelivery>),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_deliveries(
    State(state): State<AppState>,
    caller: Require<ProviderOrAdmin>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<DeliveriesQuery>,
) -> Result<Json<Vec<WebhookDelivery>>, ApiError> {
    owned(&state, &caller, id).await?;
    let list = webhooks::deliveries(&state.pool, id, q.limit.unwrap_or(100))
        .await
        .map_err(db)?;
    Ok(Json(list.into_iter().map(Into::into).collect()))
}

/// One attempt of a delivery.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookAttempt {
    pub attempt: i32,
    pub at: DateTime<Utc>,
    pub status: Option<i32>,
    pub latency_ms: i32,
    pub response: Option<String>,
}

/// A delivery with every attempt.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookDeliveryDetail {
    pub delivery: WebhookDelivery,
    pub attempts: Vec<WebhookAttempt>,
}

/// One delivery and its attempts (status, latency, the answer's start).
#[utoipa::path(get, path = "/webhooks/{endpoint_id}/deliveries/{delivery_id}", tag = "webhooks", security(("bearer" = [])),
    params(("endpoint_id" = Uuid, Path, description = "The endpoint"), ("delivery_id" = Uuid, Path, description = "The delivery")),
    responses(
        (status = 200, description = "The delivery", body = WebhookDeliveryDetail),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_delivery(
    State(state): State<AppState>,
    caller: Require<ProviderOrAdmin>,
    ApiPath((id, delivery)): ApiPath<(Uuid, Uuid)>,
) -> Result<Json<WebhookDeliveryDetail>, ApiError> {
    owned(&state, &caller, id).await?;
    let (d, attempts) = webhooks::delivery(&state.pool, id, delivery)
        .await
        .map_err(db)?
        .ok_or(ApiError::NotFound {
            what: "webhook delivery",
            id: delivery.to_string(),
        })?;
    Ok(Json(WebhookDeliveryDetail {
        delivery: d.into(),
        attempts: attempts
            .into_iter()
            .map(|a| WebhookAttempt {
                attempt: a.attempt,
                at: a.at,
                status: a.status,
                latency_ms: a.latency_ms,
                response: a.response,
            })
            .collect(),
    }))
}

/// Send a delivery again: same id, same body, due now (before the endpoint's later events).
#[utoipa::path(post, path = "/webhooks/{endpoint_id}/deliveries/{delivery_id}/redeliver", tag = "webhooks", security(("bearer" = [])),
    params(("endpoint_id" = Uuid, Path, description = "The endpoint"), ("delivery_id" = Uuid, Path, description = "The delivery")),
    responses(
        (status = 202, description = "Queued"),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn redeliver(
    State(state): State<AppState>,
    caller: Require<ProviderOrAdmin>,
    ApiPath((id, delivery)): ApiPath<(Uuid, Uuid)>,
) -> Result<StatusCode, ApiError> {
    owned(&state, &caller, id).await?;
    if !webhooks::redeliver(&state.pool, id, delivery, state.clock.now())
        .await
        .map_err(db)?
    {
        return Err(ApiError::NotFound {
            what: "webhook delivery",
            id: delivery.to_string(),
        });
    }
    Ok(StatusCode::ACCEPTED)
}

/// Money in a payload.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PayloadMoney {
    pub amount_minor: i64,
    pub currency: String,
}

/// `data` of the `booking.*` events. Besides these fields: `amount_paid` (confirmed),
/// `cancelled_by`, `refund_due`, `reason` (cancelled), `amount`, `total_refunded` (refunded).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BookingEventData {
    pub booking_id: Uuid,
    pub listing_id: Uuid,
    pub slot_id: Uuid,
    pub customer_id: Uuid,
    pub seats: u32,
    pub total: PayloadMoney,
    pub slot_starts_at: DateTime<Utc>,
    pub slot_ends_at: DateTime<Utc>,
    pub amount_paid: Option<PayloadMoney>,
    pub refund_due: Option<PayloadMoney>,
    pub amount: Option<PayloadMoney>,
    pub total_refunded: Option<PayloadMoney>,
    pub reason: Option<String>,
    /// `booking.checked_in`: the seat whose ticket was scanned, who scanned it and when.
    pub seat: Option<u32>,
    pub checked_in_by: Option<Uuid>,
    pub checked_in_at: Option<DateTime<Utc>>,
    /// `booking.rescheduled`: the slots it moved from and to, its new price, and what the
    /// move refunds (a cheaper slot).
    pub from_slot_id: Option<Uuid>,
    pub to_slot_id: Option<Uuid>,
    pub new_total: Option<PayloadMoney>,
    pub refund: Option<PayloadMoney>,
}

/// `data` of `slot.cancelled`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SlotCancelledData {
    pub slot_id: Uuid,
    pub listing_id: Uuid,
    pub starts_at: DateTime<Utc>,
    pub reason: String,
    /// The bookings that held seats (each also gets its `booking.cancelled`).
    pub affected_bookings: Vec<Uuid>,
}

/// `data` of `payout.paid` and `payout.failed`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PayoutData {
    pub provider_id: Uuid,
    pub payout_ref: String,
    pub amount: PayloadMoney,
    /// `payout.failed` only.
    pub reason: Option<String>,
}

/// The body of every webhook (version 1), signed with the headers `webhook-id`,
/// `webhook-timestamp` and `webhook-signature` (`v1,<base64 HMAC-SHA256 of
/// "id.timestamp.body">` under the endpoint's secret; space-separated, one per valid secret).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookPayload<T> {
    /// The event type, e.g. `booking.confirmed`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The payload's version: 1.
    pub version: u32,
    /// The same as the `webhook-id` header (stable across retries: deduplicate by it).
    pub id: String,
    /// When the event happened.
    pub timestamp: DateTime<Utc>,
    /// The event's position in the log (increasing per endpoint: deliveries come in this order).
    pub event_position: i64,
    pub data: T,
}

/// Adds the `webhooks` section: one entry per event type, with its payload.
pub fn document(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::PartialSchema;
    use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem};
    use utoipa::openapi::request_body::RequestBodyBuilder;
    use utoipa::openapi::{ContentBuilder, PathsBuilder, ResponseBuilder};
    let components = openapi.components.get_or_insert_with(Default::default);
    for (name, schema) in [
        ("PayloadMoney", PayloadMoney::schema()),
        ("BookingEventData", BookingEventData::schema()),
        ("SlotCancelledData", SlotCancelledData::schema()),
        ("PayoutData", PayoutData::schema()),
    ] {
        components.schemas.insert(name.into(), schema);
    }
    let mut paths = PathsBuilder::new();
    for kind in EVENT_TYPES {
        let (schema, what) = match *kind {
            k if k.starts_with("booking.") => (
                WebhookPayload::<BookingEventData>::schema(),
                "a booking of the endpoint's scope",
            ),
            "slot.cancelled" => (
                WebhookPayload::<SlotCancelledData>::schema(),
                "a slot the provider cancelled",
            ),
            _ => (
                WebhookPayload::<PayoutData>::schema(),
                "a payout to the provider's bank",
            ),
        };
        let operation = OperationBuilder::new()
            .tag("webhooks")
            .operation_id(Some(format!("webhook_{}", kind.replace('.', "_"))))
            .summary(Some(format!("`{kind}`: {what}")))
            .description(Some(
                "POSTed to each subscribed endpoint, in log order per endpoint, at least once \
                 (the same `webhook-id` on every retry). Answer 2xx within 10 s; anything else is \
                 retried with exponential backoff, and an endpoint failing for a day is disabled.",
            ))
            .request_body(Some(
                RequestBodyBuilder::new()
                    .content(
                        "application/json",
                        ContentBuilder::new().schema(Some(schema)).build(),
                    )
                    .required(Some(utoipa::openapi::Required::True))
                    .build(),
            ))
            .response(
                "2XX",
                ResponseBuilder::new()
                    .description("Received (any other answer is retried)")
                    .build(),
            );
        paths = paths.path(*kind, PathItem::new(HttpMethod::Post, operation));
    }
    openapi.webhooks = Some(paths.build());
}
