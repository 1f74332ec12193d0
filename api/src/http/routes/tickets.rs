//! Tickets and the door: a confirmed booking's tickets (one per seat, Ed25519-signed tokens
//! with QR codes as PNG and SVG), the public key that verifies them offline, checking a ticket
//! in at a slot's door, and whether a listing scans tickets at all.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tessera_commands::catalog::{self as catalog_commands, ListingChange};
use tessera_commands::tickets::{self, CheckInError, Issued};
use tessera_domain::booking::{BookingError, BookingStatus};
use tessera_domain::user::Role;
use tessera_domain::values::{BookingId, ListingId, SlotId};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::provider::acting;
use super::{CommandResult, IdempotencyKey, answered, once};
use crate::http::auth::roles::{Provider, ProviderOrAdmin};
use crate::http::auth::{Caller, Require};
use crate::http::codes;
use crate::http::error::{ApiError, Problem};
use crate::http::{ApiJson, ApiPath, ApiQuery, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(ticket_key))
        .routes(routes!(booking_tickets))
        .routes(routes!(ticket_qr))
        .routes(routes!(check_in))
        .routes(routes!(list_door_staff))
        .routes(routes!(add_door_staff, remove_door_staff))
        .routes(routes!(ticket_scanning))
}

/// How to verify tickets offline.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TicketKeyView {
    /// Always `Ed25519`.
    pub algorithm: String,
    /// The 32-byte public key, base64url without padding.
    pub public_key: String,
    /// The token's format.
    pub format: String,
}

/// The public key tickets are signed with, to verify them offline.
#[utoipa::path(get, path = "/tickets/key", tag = "bookings",
    responses(
        (status = 200, description = "The ticket key", body = TicketKeyView),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn ticket_key(State(state): State<AppState>) -> Json<TicketKeyView> {
    Json(TicketKeyView {
        algorithm: "Ed25519".into(),
        public_key: URL_SAFE_NO_PAD.encode(state.tickets.public_key()),
        format: "TK1.<base64url(booking id 16 bytes | slot id 16 bytes | seat u16 big-endian)>.\
<base64url(Ed25519 signature of \"tessera-ticket-v1\" followed by those 34 bytes)>"
            .into(),
    })
}

/// One ticket of a booking.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TicketView {
    pub ticket_id: Uuid,
    pub booking_id: Uuid,
    pub slot_id: Uuid,
    /// 1 to the booking's seats.
    pub seat: u32,
    /// The signed token the QR code carries.
    pub token: String,
    pub checked_in_at: Option<DateTime<Utc>>,
    pub checked_in_by: Option<Uuid>,
    /// Path of the QR code as PNG (`format=svg` for SVG).
    pub qr: String,
}

fn view(i: &Issued) -> TicketView {
    TicketView {
        ticket_id: i.ticket.id(),
        booking_id: i.ticket.booking_id.0,
        slot_id: i.ticket.slot_id.0,
        seat: i.ticket.seat,
        token: i.token.clone(),
        checked_in_at: i.checked_in.map(|c| c.at),
        checked_in_by: i.checked_in.map(|c| c.by.0),
        qr: format!(
            "/api/v1/bookings/{}/tickets/{}/qr",
            i.ticket.booking_id, i.ticket.seat
        ),
    }
}

/// The tickets of a booking the caller may see (its customer, admins), from the log.
async fn issued(
    state: &AppState,
    caller: &Caller,
    booking_id: Uuid,
) -> Result<Vec<Issued>, ApiError> {
    let not_found = || ApiError::NotFound {
        what: "booking",
        id: booking_id.to_string(),
    };
    let (b, _) = tessera_commands::booking::current_booking(&*state.store, BookingId(booking_id))
        .await
        .map_err(|_| not_found())?;
    if b.customer_id != caller.user_id && !caller.has(Role::Admin) {
        return Err(not_found());
    }
    tickets::tickets_of(&state.tickets, &b).ok_or_else(|| ApiError::Conflict {
        code: &codes::TICKET_NOT_CONFIRMED,
        detail: format!(
            "a {} booking has no tickets; they come with the confirmation",
            super::bookings::status_name(b.status)
        ),
    })
}

/// A confirmed booking's tickets, one per seat (its customer, admins).
#[utoipa::path(get, path = "/bookings/{booking_id}/tickets", tag = "bookings", security(("bearer" = [])),
    params(("booking_id" = Uuid, Path, description = "The booking")),
    responses(
        (status = 200, description = "The tickets", body = Vec<TicketView>),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn booking_tickets(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(booking_id): ApiPath<Uuid>,
) -> Result<Json<Vec<TicketView>>, ApiError> {
    Ok(Json(
        issued(&state, &caller, booking_id)
            .await?
            .iter()
            .map(view)
            .collect(),
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum QrFormat {
    Png,
    Svg,
}

#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct QrQuery {
    /// `png` (default) or `svg`.
    #[param(inline)]
    pub format: Option<QrFormat>,
}

/// A QR code as PNG: black modules on white, 8 pixels each, with the standard quiet zone.
fn png(code: &qrcode::QrCode) -> Result<Vec<u8>, ApiError> {
    const SCALE: usize = 8;
    const QUIET: usize = 4;
    let modules = code.width();
    let side = (modules + 2 * QUIET) * SCALE;
    let colors = code.to_colors();
    let mut pixels = vec![255u8; side * side];
    for (i, c) in colors.iter().enumerate() {
        if *c == qrcode::Color::Dark {
            let (x, y) = (i % modules + QUIET, i / modules + QUIET);
            for dy in 0..SCALE {
                let row = (y * SCALE + dy) * side;
                pixels[row + x * SCALE..row + (x + 1) * SCALE].fill(0);
            }
        }
    }
    let mut out = Vec::new();
    let fail = |e: png::EncodingError| ApiError::Internal(format!("QR code PNG: {e}"));
    let side = u32::try_from(side).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut encoder = png::Encoder::new(&mut out, side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(fail)?;
    writer.write_image_data(&pixels).map_err(fail)?;
    writer.finish().map_err(fail)?;
    Ok(out)
}

/// One ticket's QR code, as PNG or SVG (its customer, admins).
#[utoipa::path(get, path = "/bookings/{booking_id}/tickets/{seat}/qr", tag = "bookings", security(("bearer" = [])),
    params(("booking_id" = Uuid, Path, description = "The booking"),
           ("seat" = u32, Path, description = "The seat, 1 to the booking's seats"),
           QrQuery),
    responses(
        (status = 200, description = "The QR code", content(
            (Vec<u8> = "image/png"),
            (String = "image/svg+xml"),
        )),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn ticket_qr(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((booking_id, seat)): ApiPath<(Uuid, u32)>,
    ApiQuery(q): ApiQuery<QrQuery>,
) -> Result<Response, ApiError> {
    let all = issued(&state, &caller, booking_id).await?;
    let Some(ticket) = all.iter().find(|i| i.ticket.seat == seat) else {
        return Err(ApiError::NotFound {
            what: "ticket",
            id: format!("{booking_id}/{seat}"),
        });
    };
    let code = qrcode::QrCode::new(ticket.token.as_bytes())
        .map_err(|e| ApiError::Internal(format!("QR code: {e}")))?;
    let name = format!("ticket-{booking_id}-{seat}");
    Ok(match q.format.unwrap_or(QrFormat::Png) {
        QrFormat::Png => (
            [
                (header::CONTENT_TYPE, "image/png".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("inline; filename=\"{name}.png\""),
                ),
            ],
            png(&code)?,
        )
            .into_response(),
        QrFormat::Svg => (
            [
                (header::CONTENT_TYPE, "image/svg+xml".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("inline; filename=\"{name}.svg\""),
                ),
            ],
            code.render::<qrcode::render::svg::Color<'_>>()
                .min_dimensions(240, 240)
                .build(),
        )
            .into_response(),
    })
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckInRequest {
    /// The token a scanner read from the ticket's QR code.
    pub token: String,
}

/// A ticket checked in.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CheckedIn {
    pub ticket_id: Uuid,
    pub booking_id: Uuid,
    pub seat: u32,
    /// The booking's seats, and how many of them are in now.
    pub seats: u32,
    pub checked_in_seats: u32,
    /// Who booked: their name (`[erased]` once erased).
    pub contact_name: String,
    pub checked_in_at: DateTime<Utc>,
    #[serde(flatten)]
    pub result: CommandResult,
}

/// Who checks a ticket in, and for whom: an admin, the slot's provider, or someone the provider
/// made door staff. Decided from the path's slot before the body is read.
#[derive(Debug)]
pub struct DoorKeeper {
    caller: Caller,
    acting: tessera_commands::catalog::Acting,
}

impl axum::extract::FromRequestParts<AppState> for DoorKeeper {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let ApiPath(slot_id) = ApiPath::<Uuid>::from_request_parts(parts, state).await?;
        Self::at(state, caller, slot_id).await
    }
}

impl DoorKeeper {
    /// `caller` at `slot_id`'s door, if they may check tickets in there.
    pub async fn at(state: &AppState, caller: Caller, slot_id: Uuid) -> Result<Self, ApiError> {
        let acting = tickets::door_keeper(
            &*state.store,
            SlotId(slot_id),
            caller.user_id,
            caller.has(Role::Admin),
            caller.has(Role::Provider),
        )
        .await?
        .ok_or_else(|| {
            ApiError::Forbidden(
                "this needs the slot's provider, an admin, or the provider's door staff".into(),
            )
        })?;
        Ok(Self { caller, acting })
    }
}

/// Check a ticket in at a slot's door (its provider, their door staff, or an admin). Exactly one of two scanners
/// checking in the same ticket succeeds; the other learns when and by whom. Refusals:
/// `ticket.forged` (422), `ticket.already_checked_in`, `ticket.wrong_slot`, `ticket.not_valid`
/// (cancelled, refunded…), `ticket.check_in_not_open`, `booking.slot_ended` (409).
#[utoipa::path(post, path = "/provider/slots/{slot_id}/check-in", tag = "provider", security(("bearer" = [])),
    request_body = CheckInRequest,
    params(("slot_id" = Uuid, Path, description = "The slot at whose door the ticket is scanned"),
           ("Idempotency-Key" = Option<String>, Header, description = "A scanner's retry with the same key answers the same")),
    responses(
        (status = 200, description = "Checked in", body = CheckedIn),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn check_in(
    State(state): State<AppState>,
    DoorKeeper { caller, acting }: DoorKeeper,
    key: IdempotencyKey,
    ApiPath(slot_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<CheckInRequest>,
) -> Result<Response, ApiError> {
    check_in_command(&state, DoorKeeper { caller, acting }, key, slot_id, body).await
}

/// `POST /provider/slots/{id}/check-in`'s command (the console's check-in form runs it too).
pub async fn check_in_command(
    state: &AppState,
    DoorKeeper { caller, acting }: DoorKeeper,
    key: IdempotencyKey,
    slot_id: Uuid,
    body: CheckInRequest,
) -> Result<Response, ApiError> {
    let request = (slot_id, &body);
    once(
        state,
        &caller,
        "ticket.check_in",
        key,
        &request,
        async |ctx| {
            let done = tickets::check_in(
                &*state.store,
                &state.tickets,
                acting,
                SlotId(slot_id),
                &body.token,
                caller.user_id,
                &ctx,
            )
            .await;
            let (ticket, booking, executed) = match done {
                Ok(d) => d,
                Err(CheckInError::Forged(f)) => {
                    return Err(ApiError::Status {
                        status: StatusCode::UNPROCESSABLE_ENTITY,
                        code: &codes::TICKET_FORGED,
                        detail: f.to_string(),
                    });
                }
                Err(CheckInError::Command(tessera_commands::error::CommandError::Booking(
                    BookingError::InvalidTransition { from, .. },
                ))) if from != BookingStatus::Confirmed => {
                    return Err(ApiError::Conflict {
                        code: &codes::TICKET_NOT_VALID,
                        detail: format!(
                            "the booking is {}: the ticket admits no one",
                            super::bookings::status_name(from)
                        ),
                    });
                }
                Err(CheckInError::Command(e)) => return Err(e.into()),
            };
            let contact_name =
                match tessera_commands::users::current_user(&*state.store, booking.customer_id)
                    .await
                {
                    Ok(u) => u.display_name,
                    Err(_) => tessera_log::pii::ERASED.to_owned(),
                };
            let checked_in_at = booking
                .checked_in
                .get(&ticket.seat)
                .map_or(ctx.now, |c| c.at);
            let (status, position, result) = answered(StatusCode::OK, &executed);
            Ok((
                status,
                position,
                CheckedIn {
                    ticket_id: ticket.id(),
                    booking_id: booking.id.0,
                    seat: ticket.seat,
                    seats: booking.seats,
                    checked_in_seats: booking.checked_in.len() as u32,
                    contact_name,
                    checked_in_at,
                    result,
                },
            ))
        },
    )
    .await
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TicketScanning {
    /// Whether tickets are scanned at the door: after a slot ends, a booking with no ticket
    /// checked in is a no-show (no completion points, no review invitation) instead of
    /// completed.
    pub scans_tickets: bool,
}

/// Whether a listing's tickets are scanned at the door (its provider, or an admin).
#[utoipa::path(put, path = "/provider/listings/{listing_id}/ticket-scanning", tag = "provider", security(("bearer" = [])),
    request_body = TicketScanning,
    params(("listing_id" = Uuid, Path, description = "The listing")),
    responses(
        (status = 200, description = "Set", body = CommandResult),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn ticket_scanning(
    State(state): State<AppState>,
    caller: Require<ProviderOrAdmin>,
    key: IdempotencyKey,
    ApiPath(listing_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<TicketScanning>,
) -> Result<Response, ApiError> {
    let acting = acting(&caller);
    let request = (listing_id, &body);
    once(
        &state,
        &caller,
        "listing.ticket_scanning",
        key,
        &request,
        async |ctx| {
            let executed = catalog_commands::change_listing(
                &*state.store,
                acting,
                ListingId(listing_id),
                ListingChange::TicketScanning(body.scans_tickets),
                &ctx,
            )
            .await?;
            Ok(answered(StatusCode::OK, &executed))
        },
    )
    .await
}

/// Someone a provider lets check tickets in at their doors.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DoorStaff {
    pub user_id: Uuid,
    /// `[erased]` once the person was erased.
    pub display_name: String,
}

/// My door staff (providers): who may check tickets in at my slots' doors.
#[utoipa::path(get, path = "/provider/staff", tag = "provider", security(("bearer" = [])),
    responses(
        (status = 200, description = "Door staff", body = Vec<DoorStaff>),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_door_staff(
    State(state): State<AppState>,
    caller: Require<Provider>,
) -> Result<Json<Vec<DoorStaff>>, ApiError> {
    let staff = tickets::door_staff(&*state.store, caller.user_id).await?;
    let mut out = Vec::with_capacity(staff.len());
    for user in staff {
        let display_name = match tessera_commands::users::current_user(&*state.store, user).await {
            Ok(u) => u.display_name,
            Err(e) if e.is_refusal() => "[erased]".into(),
            Err(e) => return Err(e.into()),
        };
        out.push(DoorStaff {
            user_id: user.0,
            display_name,
        });
    }
    Ok(Json(out))
}

async fn door_staff_change(
    state: &AppState,
    caller: &Caller,
    user: Uuid,
    add: bool,
) -> Result<Response, ApiError> {
    state.limit_commands(caller.user_id.0)?;
    let ctx = tessera_commands::handler::CommandContext::new(
        tessera_log::clock::new_command_id(),
        caller.actor(),
        state.clock.now(),
    );
    let executed = tickets::set_door_staff(
        &*state.store,
        caller.user_id,
        tessera_domain::values::UserId(user),
        add,
        &ctx,
    )
    .await?;
    Ok(crate::http::Accepted::ok(&executed).into_response())
}

/// Let someone check tickets in at my doors (providers; any account; adding twice changes
/// nothing). They scan with their own login at `POST /provider/slots/{slot_id}/check-in`.
#[utoipa::path(put, path = "/provider/staff/{user_id}", tag = "provider", security(("bearer" = [])),
    params(("user_id" = Uuid, Path, description = "The person")),
    responses(
        (status = 200, description = "Door staff", body = CommandResult),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn add_door_staff(
    State(state): State<AppState>,
    caller: Require<Provider>,
    ApiPath(user): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    door_staff_change(&state, &caller, user, true).await
}

/// No longer let someone check tickets in at my doors (providers).
#[utoipa::path(delete, path = "/provider/staff/{user_id}", tag = "provider", security(("bearer" = [])),
    params(("user_id" = Uuid, Path, description = "The person")),
    responses(
        (status = 200, description = "Not door staff", body = CommandResult),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn remove_door_staff(
    State(state): State<AppState>,
    caller: Require<Provider>,
    ApiPath(user): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    door_staff_change(&state, &caller, user, false).await
}
