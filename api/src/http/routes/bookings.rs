//! Customers' bookings: hold seats, pay, quote and cancel, review; the Stripe webhook.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tessera_commands::booking::{self as commands, PlaceBooking};
use tessera_domain::booking::{BookingStatus, Canceller};
use tessera_domain::user::Role;
use tessera_domain::values::{BookingId, Seats, SlotId, derived_id};
use tessera_log::clock::new_command_id;
use tessera_log::store::Position;
pub use tessera_projections::models::bookings::{self, BookingView, TimelineEntry};
use tessera_projections::models::loyalty::{self, PointsEntry};
pub use tessera_projections::models::payments::{self, PaymentView};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{CommandResult, IdempotencyKey, answered, context, once};
use crate::http::auth::Caller;
use crate::http::auth::Require;
use crate::http::auth::roles::Customer;
use crate::http::error::{ApiError, FieldError, Problem};
use crate::http::positions::{MinPosition, MinPositionHeader, reads};
use crate::http::{ApiJson, ApiPath, ApiQuery, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(my_bookings, place))
        .routes(routes!(booking))
        .routes(routes!(pay))
        .routes(routes!(quote))
        .routes(routes!(cancel))
        .routes(routes!(reschedule))
        .routes(routes!(withdraw_move))
        .routes(routes!(review))
        .routes(routes!(stripe_webhook))
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceRequest {
    pub slot_id: Uuid,
    /// 1 to 50 seats.
    #[schema(minimum = 1, maximum = 50)]
    pub seats: u32,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Placed {
    pub booking_id: Uuid,
    /// Pay before this time, or the hold lapses and the seats go back.
    pub hold_expires_at: DateTime<Utc>,
    #[serde(flatten)]
    pub result: CommandResult,
}

/// Place a booking: holds seats on the slot while the customer pays. Requires an
/// `Idempotency-Key`: a retry with the same key returns the first answer. Holds on one slot
/// wait in its queue and are decided first come, first served (ADR 0014).
#[utoipa::path(post, path = "/bookings", tag = "bookings", security(("bearer" = [])),
    request_body = PlaceRequest,
    params(("Idempotency-Key" = String, Header, description = "Required; a retry with the same key places nothing twice")),
    responses(
        (status = 201, description = "Seats held", body = Placed),
        (status = 409, description = "Sold out, slot started or cancelled", body = Problem, content_type = "application/problem+json"),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`service.busy`: the slot's queue is full (a rush on one slot); nothing was done, retry after `Retry-After` with the same key", body = Problem, content_type = "application/problem+json"),
    ))]
async fn place(
    State(state): State<AppState>,
    caller: Require<Customer>,
    key: IdempotencyKey,
    ApiJson(req): ApiJson<PlaceRequest>,
) -> Result<Response, ApiError> {
    key.required()?;
    let seats = Seats::new(req.seats).map_err(|e| {
        ApiError::Invalid(vec![FieldError {
            field: "seats".into(),
            message: e.to_string(),
        }])
    })?;
    once(&state, &caller, "booking.place", key, &req, async |ctx| {
        let booking_id = BookingId(derived_id(ctx.command_id, b"booking"));
        let request = PlaceBooking {
            booking_id,
            customer_id: caller.user_id,
            slot_id: SlotId(req.slot_id),
            seats,
        };
        // Through the slot's queue (decided in batches, ADR 0014) when there is one.
        let placed = match &state.queues {
            Some(queues) => queues.place(request, ctx).await?,
            None => {
                commands::place_booking_cached(
                    &*state.store,
                    state.aggregates.as_ref(),
                    &state.booking,
                    &request,
                    &ctx,
                )
                .await?
            }
        };
        Ok((
            StatusCode::CREATED,
            placed.executed.position.0 as i64,
            Placed {
                booking_id: booking_id.0,
                // As recorded (capped at the slot's start), also when this is a replay.
                hold_expires_at: placed.hold_expires_at,
                result: CommandResult::from(&placed.executed),
            },
        ))
    })
    .await
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BookingsQuery {
    /// held | payment_pending | confirmed | completed | no_show | expired | cancelled | refunded
    pub status: Option<String>,
    /// 1 to 100 (default 20).
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

/// My bookings, newest first.
#[utoipa::path(get, path = "/bookings", tag = "bookings", security(("bearer" = [])),
    params(BookingsQuery, MinPositionHeader),
    responses(
        (status = 200, description = "Bookings", body = Vec<BookingView>),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn my_bookings(
    State(state): State<AppState>,
    caller: Require<Customer>,
    min: MinPosition,
    ApiQuery(q): ApiQuery<BookingsQuery>,
) -> Result<axum::Json<Vec<BookingView>>, ApiError> {
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::Invalid(vec![FieldError {
            field: "limit".into(),
            message: "limit is 1 to 100".into(),
        }]));
    }
    let status = q
        .status
        .as_deref()
        .map(super::provider::known_status)
        .transpose()?;
    state.read_after(reads::BOOKINGS, min).await?;
    let rows = bookings::customer_bookings(
        &state.pool,
        caller.user_id.0,
        status,
        limit,
        q.offset.unwrap_or(0).max(0),
    )
    .await?;
    Ok(axum::Json(rows))
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BookingDetail {
    pub booking: BookingView,
    /// Every state change, in log order.
    pub timeline: Vec<TimelineEntry>,
    pub payments: Vec<PaymentView>,
    /// Points awarded for this booking and reversed when it was refunded (what the booking did
    /// to the customer's loyalty balance).
    pub points: Vec<PointsEntry>,
}

/// Loads a booking the caller may see: its customer, admins and auditors. Others get 404.
pub(crate) async fn visible_booking(
    state: &AppState,
    caller: &Caller,
    booking_id: Uuid,
) -> Result<BookingView, ApiError> {
    match bookings::booking(&state.pool, booking_id).await? {
        Some(v)
            if v.customer_id == caller.user_id.0
                || caller.has(Role::Admin)
                || caller.has(Role::Auditor) =>
        {
            Ok(v)
        }
        _ => Err(ApiError::NotFound {
            what: "booking",
            id: booking_id.to_string(),
        }),
    }
}

/// One booking with its timeline and payments (its customer, admins, auditors).
#[utoipa::path(get, path = "/bookings/{booking_id}", tag = "bookings", security(("bearer" = [])),
    params(("booking_id" = Uuid, Path, description = "The booking"),
           MinPositionHeader),
    responses(
        (status = 200, description = "The booking", body = BookingDetail),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn booking(
    State(state): State<AppState>,
    caller: Caller,
    min: MinPosition,
    ApiPath(booking_id): ApiPath<Uuid>,
) -> Result<axum::Json<BookingDetail>, ApiError> {
    state.read_after(reads::BOOKING_DETAIL, min).await?;
    let booking = visible_booking(&state, &caller, booking_id).await?;
    let timeline = bookings::timeline(&state.pool, booking_id).await?;
    let payments = payments::booking_payments(&state.pool, booking_id).await?;
    let points = loyalty::booking_points(&state.pool, booking_id).await?;
    Ok(axum::Json(BookingDetail {
        booking,
        timeline,
        payments,
        points,
    }))
}

/// The caller's own booking, from the write side (for commands on it).
async fn own_booking(
    state: &AppState,
    caller: &Caller,
    booking_id: Uuid,
) -> Result<(tessera_domain::booking::Booking, Position), ApiError> {
    let (b, at) = commands::current_booking(&*state.store, BookingId(booking_id)).await?;
    if b.customer_id != caller.user_id {
        return Err(ApiError::NotFound {
            what: "booking",
            id: booking_id.to_string(),
        });
    }
    Ok((b, at))
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayRequest {
    /// Simulated gateway only: `4242424242424242` succeeds, `4000000000000002` is declined.
    #[serde(default)]
    pub card: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PaymentStarted {
    pub payment_id: Uuid,
    /// `stripe` or `simulated`.
    pub provider: String,
    pub provider_ref: String,
    /// Stripe: what the browser needs to confirm the payment.
    pub client_secret: Option<String>,
    /// The booking's status after the call: `payment_pending` while the provider decides
    /// (Stripe reports through its webhook), or the simulated gateway's outcome (`confirmed`,
    /// `held` after a decline).
    pub booking_status: String,
    #[serde(flatten)]
    pub result: CommandResult,
}

/// The simulated gateway decides a payment at once and reports it like a webhook, just after
/// answering: the booking once `decided` holds for it (waited on for at most 2 s), with the
/// position of its last event. Other gateways report later, through their webhook: `None`.
async fn simulated_outcome(
    state: &AppState,
    caller: &Caller,
    booking_id: Uuid,
    decided: impl Fn(&tessera_domain::booking::Booking) -> bool,
) -> Result<Option<(tessera_domain::booking::Booking, Position)>, ApiError> {
    if state.gateway.name() != "simulated" {
        return Ok(None);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let (b, at) = own_booking(state, caller, booking_id).await?;
        if decided(&b) || Instant::now() >= deadline {
            return Ok(Some((b, at)));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub(crate) fn status_name(s: BookingStatus) -> String {
    let debug = format!("{s:?}");
    let mut out = String::new();
    for (i, c) in debug.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.extend(c.to_lowercase());
    }
    out
}

/// Pay for a held booking. With Stripe, returns the client secret; with the simulated gateway,
/// waits (bounded) for its outcome and returns the booking's new status.
#[utoipa::path(post, path = "/bookings/{booking_id}/pay", tag = "bookings", security(("bearer" = [])),
    request_body = PayRequest,
    params(("booking_id" = Uuid, Path, description = "The booking"),
           ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key pay once")),
    responses(
        (status = 200, description = "Payment started (and, simulated, decided)", body = PaymentStarted),
        (status = 402, description = "The card was refused", body = Problem, content_type = "application/problem+json"),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn pay(
    State(state): State<AppState>,
    caller: Require<Customer>,
    key: IdempotencyKey,
    ApiPath(booking_id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<PayRequest>,
) -> Result<Response, ApiError> {
    let request = (booking_id, &req);
    once(&state, &caller, "booking.pay", key, &request, async |ctx| {
        own_booking(&state, &caller, booking_id).await?;
        let started = tessera_commands::payment::start_payment(
            &*state.store,
            &*state.gateway,
            BookingId(booking_id),
            req.card.clone(),
            &ctx,
        )
        .await?;
        let mut position = started.executed.position;
        let mut status = BookingStatus::PaymentPending;
        if let Some((b, at)) = simulated_outcome(&state, &caller, booking_id, |b| {
            b.status != BookingStatus::PaymentPending
        })
        .await?
        {
            status = b.status;
            position = position.max(at);
        }
        Ok((
            StatusCode::OK,
            position.0 as i64,
            PaymentStarted {
                payment_id: started.payment_id.0,
                provider: state.gateway.name().to_owned(),
                provider_ref: started.provider_ref,
                client_secret: started.client_secret,
                booking_status: status_name(status),
                result: CommandResult {
                    position: position.0 as i64,
                    replayed: started.executed.replayed,
                },
            },
        ))
    })
    .await
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Quote {
    pub booking_id: Uuid,
    /// What cancelling now would refund.
    pub refund_minor: i64,
    pub currency: String,
    pub paid_minor: i64,
    pub hours_before_start: i64,
}

/// What cancelling now would refund, under the booking's policy.
#[utoipa::path(get, path = "/bookings/{booking_id}/cancellation-quote", tag = "bookings", security(("bearer" = [])),
    params(("booking_id" = Uuid, Path, description = "The booking")),
    responses(
        (status = 200, description = "The quote", body = Quote),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn quote(
    State(state): State<AppState>,
    caller: Require<Customer>,
    ApiPath(booking_id): ApiPath<Uuid>,
) -> Result<axum::Json<Quote>, ApiError> {
    let (b, _) = own_booking(&state, &caller, booking_id).await?;
    let ctx = context(&state, &caller, new_command_id());
    let refund = commands::cancellation_quote(
        &*state.store,
        BookingId(booking_id),
        Canceller::Customer(caller.user_id),
        false,
        &ctx,
    )
    .await?;
    Ok(axum::Json(Quote {
        booking_id,
        refund_minor: refund.minor,
        currency: refund.currency.to_string(),
        paid_minor: b.paid.minor,
        hours_before_start: b.hours_before_start(ctx.now),
    }))
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    #[serde(default)]
    pub reason: Option<String>,
}

/// Cancel my booking; the refund follows the booking's policy (see the quote).
#[utoipa::path(post, path = "/bookings/{booking_id}/cancel", tag = "bookings", security(("bearer" = [])),
    request_body = CancelRequest,
    params(("booking_id" = Uuid, Path, description = "The booking")),
    responses(
        (status = 200, description = "Cancelled", body = CommandResult),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn cancel(
    State(state): State<AppState>,
    caller: Require<Customer>,
    key: IdempotencyKey,
    ApiPath(booking_id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<CancelRequest>,
) -> Result<Response, ApiError> {
    let request = (booking_id, &req);
    once(
        &state,
        &caller,
        "booking.cancel",
        key,
        &request,
        async |ctx| {
            own_booking(&state, &caller, booking_id).await?;
            let mut ctx = ctx;
            if let Some(r) = req.reason.as_deref().filter(|r| !r.trim().is_empty()) {
                ctx = ctx.with_reason(r);
            }
            let executed = commands::cancel_booking_cached(
                &*state.store,
                state.aggregates.as_ref(),
                BookingId(booking_id),
                Canceller::Customer(caller.user_id),
                false,
                &ctx,
            )
            .await?;
            Ok(answered(StatusCode::OK, &executed))
        },
    )
    .await
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RescheduleRequest {
    /// Another slot of the booking's listing.
    pub slot_id: Uuid,
    /// A dearer slot is paid by a second payment (a top-up) for the difference. Simulated
    /// gateway only: `4242424242424242` succeeds, `4000000000000002` is declined.
    #[serde(default)]
    pub card: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Rescheduled {
    pub booking_id: Uuid,
    pub slot_id: Uuid,
    pub slot_starts_at: DateTime<Utc>,
    pub slot_ends_at: DateTime<Utc>,
    /// The booking's price on the new slot.
    pub total_minor: i64,
    /// What the move refunds (the new slot costs less); the refund follows through the gateway.
    pub refund_minor: i64,
    pub currency: String,
    #[serde(flatten)]
    pub result: CommandResult,
}

/// A move to a dearer slot: the new slot holds the seats while the difference is paid.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MoveAwaitingPayment {
    pub booking_id: Uuid,
    /// The slot the booking moves to once the top-up succeeds.
    pub to_slot_id: Uuid,
    /// What the top-up charges: the new price less the booking's current one.
    pub charge_minor: i64,
    pub currency: String,
    /// The move lapses then if unpaid (the new slot's seats go back).
    pub expires_at: DateTime<Utc>,
    /// `awaiting_payment` while the provider decides (Stripe: confirm with `client_secret`),
    /// or the simulated gateway's outcome: `moved`, or `abandoned` after a decline.
    pub move_status: String,
    pub payment_id: Uuid,
    /// `stripe` or `simulated`.
    pub provider: String,
    pub provider_ref: String,
    /// Stripe: what the browser needs to confirm the top-up.
    pub client_secret: Option<String>,
    #[serde(flatten)]
    pub result: CommandResult,
}

/// What a move answers: moved at once (200), or waiting for the top-up (202).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum RescheduleOutcome {
    Moved(Rescheduled),
    AwaitingPayment(MoveAwaitingPayment),
}

/// Move my confirmed booking to another slot of the same listing, in one atomic step (the old
/// seats go back, the new ones are taken, or nothing happens). Allowed while the booking's
/// policy still refunds something. A cheaper slot refunds the difference. A dearer slot
/// answers 202: its seats are held and a second payment (a top-up) for the difference is
/// started; its success moves the booking in one step, its failure or the move's expiry (the
/// booking's hold time) gives the new seats back and leaves the booking where it was. Old
/// tickets stop working once moved; the booking's tickets are for the new slot.
#[utoipa::path(post, path = "/bookings/{booking_id}/reschedule", tag = "bookings", security(("bearer" = [])),
    request_body = RescheduleRequest,
    params(("booking_id" = Uuid, Path, description = "The booking"),
        ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key moves nothing twice")),
    responses(
        (status = 200, description = "Moved", body = Rescheduled),
        (status = 202, description = "Dearer: the new seats are held and the top-up payment started", body = MoveAwaitingPayment),
        (status = 402, description = "The card was refused", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The new slot is full, started or cancelled; the booking is not confirmed, attended, past its policy's window, or already waiting for a move's payment", body = Problem, content_type = "application/problem+json"),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn reschedule(
    State(state): State<AppState>,
    caller: Require<Customer>,
    key: IdempotencyKey,
    ApiPath(booking_id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<RescheduleRequest>,
) -> Result<Response, ApiError> {
    let request = (booking_id, &req);
    once(
        &state,
        &caller,
        "booking.reschedule",
        key,
        &request,
        async |ctx| {
            let (before, _) = own_booking(&state, &caller, booking_id).await?;
            let payer = commands::TopUpPayer {
                gateway: &*state.gateway,
                card: req.card.as_deref(),
                move_ttl: state.booking.hold_ttl,
            };
            let moved = commands::reschedule_booking(
                &*state.store,
                BookingId(booking_id),
                SlotId(req.slot_id),
                Some(payer),
                &ctx,
            )
            .await?;
            let (started, charge, expires_at) = match moved {
                commands::Moved::AwaitingPayment {
                    started,
                    charge,
                    expires_at,
                } => (started, charge, expires_at),
                commands::Moved::Done(executed) => {
                    let (b, _) =
                        commands::current_booking(&*state.store, BookingId(booking_id)).await?;
                    return Ok((
                        StatusCode::OK,
                        executed.position.0 as i64,
                        RescheduleOutcome::Moved(Rescheduled {
                            booking_id,
                            slot_id: b.slot_id.0,
                            slot_starts_at: b.slot_starts_at,
                            slot_ends_at: b.slot_ends_at,
                            total_minor: b.total.minor,
                            refund_minor: (before.total.minor - b.total.minor).max(0),
                            currency: b.total.currency.to_string(),
                            result: CommandResult::from(&executed),
                        }),
                    ));
                }
            };
            let mut position = started.executed.position;
            let mut move_status = "awaiting_payment";
            let waiting = |b: &tessera_domain::booking::Booking| {
                b.pending_move
                    .is_some_and(|m| m.payment_id == started.payment_id)
            };
            if let Some((b, at)) =
                simulated_outcome(&state, &caller, booking_id, |b| !waiting(b)).await?
            {
                position = position.max(at);
                if !waiting(&b) {
                    move_status = if b.slot_id == SlotId(req.slot_id) {
                        "moved"
                    } else {
                        "abandoned"
                    };
                }
            }
            Ok((
                StatusCode::ACCEPTED,
                position.0 as i64,
                RescheduleOutcome::AwaitingPayment(MoveAwaitingPayment {
                    booking_id,
                    to_slot_id: req.slot_id,
                    charge_minor: charge.minor,
                    currency: charge.currency.to_string(),
                    expires_at,
                    move_status: move_status.to_owned(),
                    payment_id: started.payment_id.0,
                    provider: state.gateway.name().to_owned(),
                    provider_ref: started.provider_ref,
                    client_secret: started.client_secret,
                    result: CommandResult {
                        position: position.0 as i64,
                        replayed: started.executed.replayed,
                    },
                }),
            ))
        },
    )
    .await
}

/// Withdraw my move to a dearer slot while it waits for its top-up: the new slot's seats go
/// back and the booking stays where it is. The top-up is canceled at the gateway (one the
/// gateway had already decided, if it succeeds, is refunded in full).
#[utoipa::path(delete, path = "/bookings/{booking_id}/move", tag = "bookings", security(("bearer" = [])),
    params(("booking_id" = Uuid, Path, description = "The booking"),
        ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key answers the same")),
    responses(
        (status = 200, description = "Withdrawn", body = CommandResult),
        (status = 409, description = "No move of the booking waits for a payment", body = Problem, content_type = "application/problem+json"),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn withdraw_move(
    State(state): State<AppState>,
    caller: Require<Customer>,
    key: IdempotencyKey,
    ApiPath(booking_id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    once(
        &state,
        &caller,
        "booking.withdraw_move",
        key,
        &booking_id,
        async |ctx| {
            own_booking(&state, &caller, booking_id).await?;
            let executed = commands::abandon_move(
                &*state.store,
                BookingId(booking_id),
                None,
                tessera_domain::booking::MoveAbandoned::Withdrawn,
                &ctx,
            )
            .await?;
            Ok(answered(StatusCode::OK, &executed))
        },
    )
    .await
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewRequest {
    /// 1 to 5.
    pub rating: u8,
    pub text: String,
}

/// Review my completed booking (once).
#[utoipa::path(post, path = "/bookings/{booking_id}/review", tag = "bookings", security(("bearer" = [])),
    request_body = ReviewRequest,
    params(("booking_id" = Uuid, Path, description = "The booking")),
    responses(
        (status = 201, description = "Reviewed", body = CommandResult),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn review(
    State(state): State<AppState>,
    caller: Require<Customer>,
    key: IdempotencyKey,
    ApiPath(booking_id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<ReviewRequest>,
) -> Result<Response, ApiError> {
    let request = (booking_id, &req);
    once(
        &state,
        &caller,
        "booking.review",
        key,
        &request,
        async |ctx| {
            let executed = commands::write_review(
                &*state.store,
                BookingId(booking_id),
                caller.user_id,
                req.rating,
                &req.text,
                &ctx,
            )
            .await?;
            Ok(answered(StatusCode::CREATED, &executed))
        },
    )
    .await
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookReceived {
    pub received: bool,
}

/// Stripe's webhook: the `Stripe-Signature` header is verified over the raw body (300 s
/// tolerance); a redelivered event (same Stripe event id) changes nothing.
#[utoipa::path(post, path = "/payments/stripe/webhook", tag = "payments",
    request_body(content = String, description = "Stripe event JSON, verbatim", content_type = "application/json"),
    params(("Stripe-Signature" = String, Header, description = "Stripe's HMAC signature header")),
    responses(
        (status = 200, description = "Processed", body = WebhookReceived),
        (status = 400, description = "Bad signature or payload", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Stripe is not configured", body = Problem, content_type = "application/problem+json"),
    ))]
async fn stripe_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<axum::Json<WebhookReceived>, ApiError> {
    let stripe = state.stripe.as_ref().ok_or_else(|| ApiError::NotFound {
        what: "payment_provider",
        id: "stripe".into(),
    })?;
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::BadRequest {
            code: &crate::http::codes::PAYMENT_SIGNATURE_MISSING,
            detail: "the Stripe-Signature header is missing".into(),
        })?;
    let body = std::str::from_utf8(&body).map_err(|e| ApiError::BadRequest {
        code: &crate::http::codes::PAYMENT_INVALID_WEBHOOK,
        detail: format!("the webhook body is not UTF-8: {e}"),
    })?;
    let now = state.clock.now();
    let event = stripe
        .verify_webhook(body, signature, now.timestamp())
        .map_err(|e| ApiError::BadRequest {
            code: &crate::http::codes::PAYMENT_INVALID_WEBHOOK,
            detail: e.to_string(),
        })?;
    // Account events arrive in any order: the account as Stripe has it now decides, not the
    // snapshot in this event (a late "restricted" never undoes a later activation).
    let event = match event {
        tessera_commands::gateway::GatewayEvent::AccountUpdated {
            event_id,
            provider_id,
            account_ref,
            ..
        } => {
            let (active, reason) =
                tessera_commands::gateway::PaymentGateway::account_state(&**stripe, &account_ref)
                    .await
                    .map_err(tessera_commands::error::CommandError::from)?;
            tessera_commands::gateway::GatewayEvent::AccountUpdated {
                event_id,
                provider_id,
                account_ref,
                active,
                reason,
            }
        }
        // A connected account's payout names the account; its metadata names the provider.
        tessera_commands::gateway::GatewayEvent::PayoutUpdated {
            event_id,
            provider_id: None,
            account_ref,
            payout_ref,
            amount,
            failure,
        } => tessera_commands::gateway::GatewayEvent::PayoutUpdated {
            provider_id: tessera_commands::gateway::PaymentGateway::account_owner(
                &**stripe,
                &account_ref,
            )
            .await
            .map_err(tessera_commands::error::CommandError::from)?,
            event_id,
            account_ref,
            payout_ref,
            amount,
            failure,
        },
        other => other,
    };
    tessera_commands::reactor::handle_gateway_event_cached(
        &*state.store,
        state.aggregates.as_ref(),
        &event,
        now,
    )
    .await?;
    Ok(axum::Json(WebhookReceived { received: true }))
}
