//! Providers' everyday tools: change a slot's capacity or price, see who is coming to a slot
//! (its manifest, as JSON or CSV), list the bookings of their listings, and run recurring
//! schedules that generate slots.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tessera_commands::catalog::{self as commands, Acting, SlotChange};
use tessera_commands::schedules::{self, ScheduleSpec};
use tessera_commands::users;
use tessera_domain::schedule::Recurrence;
use tessera_domain::user::Role;
use tessera_domain::values::{Currency, ListingId, Money, ScheduleId, SlotId, UserId, derived_id};
use tessera_projections::models::bookings::{self, BookingFilter, BookingView};
use tessera_projections::models::catalog::{self, ScheduleView};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::money::StatementFormat;
use super::{IdempotencyKey, answered, context, once};
use crate::http::auth::roles::ProviderOrAdmin;
use crate::http::auth::{Caller, Require};
use crate::http::error::{ApiError, FieldError, Problem};
use crate::http::positions::{MinPosition, MinPositionHeader, reads};
use crate::http::{ApiJson, ApiPath, ApiQuery, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(change_slot))
        .routes(routes!(manifest))
        .routes(routes!(provider_bookings))
        .routes(routes!(define_schedule))
        .routes(routes!(list_schedules))
        .routes(routes!(get_schedule, change_schedule))
        .routes(routes!(generate_schedule))
        .routes(routes!(add_exception))
        .routes(routes!(remove_exception))
        .routes(routes!(end_schedule))
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::Invalid(vec![FieldError {
        field: field.into(),
        message: message.into(),
    }])
}

/// The caller acting as a provider on their own, or as an admin on anyone's.
pub(crate) fn acting(caller: &Caller) -> Acting {
    if caller.has(Role::Admin) {
        Acting::Admin
    } else {
        Acting::Provider(caller.user_id)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SlotPatch {
    /// New capacity, 1 to 10,000; never below the seats held and confirmed.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10_000)]
    pub capacity: Option<u32>,
    /// New price per seat in the slot's currency (minor units, 0 to 1,000,000,000), for
    /// bookings placed from now on; placed bookings keep their price.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub price_minor: Option<i64>,
}

/// Change a slot's capacity or price before it starts (its provider, or an admin).
#[utoipa::path(patch, path = "/provider/slots/{slot_id}", tag = "provider", security(("bearer" = [])),
    request_body = SlotPatch,
    params(("slot_id" = Uuid, Path, description = "The slot"),
           ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key change once")),
    responses(
        (status = 200, description = "Changed", body = super::CommandResult),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn change_slot(
    State(state): State<AppState>,
    caller: Require<ProviderOrAdmin>,
    key: IdempotencyKey,
    ApiPath(slot_id): ApiPath<Uuid>,
    ApiJson(patch): ApiJson<SlotPatch>,
) -> Result<Response, ApiError> {
    let acting = acting(&caller);
    if patch.capacity.is_none() && patch.price_minor.is_none() {
        return Err(invalid(
            "capacity",
            "give a capacity, a price_minor or both",
        ));
    }
    let request = (slot_id, &patch);
    once(&state, &caller, "slot.change", key, &request, async |ctx| {
        let slot = commands::current_slot(&*state.store, SlotId(slot_id)).await?;
        commands::may_act_on(acting, slot.provider_id, "slot")?;
        let mut changes = Vec::new();
        if let Some(c) = patch.capacity {
            changes.push(SlotChange::Capacity(c));
        }
        if let Some(minor) = patch.price_minor {
            let price = Money::price(minor, slot.price_per_seat.currency)
                .map_err(|e| invalid("price_minor", e.to_string()))?;
            changes.push(SlotChange::Price(price));
        }
        let mut last = None;
        for (i, change) in changes.into_iter().enumerate() {
            let ctx = context(
                &state,
                &caller,
                derived_id(ctx.command_id, format!("step-{i}").as_bytes()),
            );
            last = Some(
                commands::change_slot(&*state.store, acting, SlotId(slot_id), change, &ctx).await?,
            );
        }
        let executed = last.ok_or_else(|| ApiError::Internal("no change ran".into()))?;
        Ok(answered(StatusCode::OK, &executed))
    })
    .await
}

#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ManifestQuery {
    /// `json` (default) or `csv`.
    #[param(inline)]
    pub format: Option<StatementFormat>,
}

/// One booking on a slot's manifest.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ManifestEntry {
    pub booking_id: Uuid,
    pub customer_id: Uuid,
    /// The customer's name; `[erased]` once they were erased.
    pub contact_name: String,
    pub seats: i64,
    pub status: String,
    /// Seats whose ticket was checked in at the door.
    pub checked_in_seats: i64,
    pub total_minor: i64,
    pub currency: String,
    pub placed_at: DateTime<Utc>,
}

/// Who is coming to a slot: every booking placed on it with its seats, status and contact.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Manifest {
    pub slot_id: Uuid,
    pub listing_id: Uuid,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub capacity: u32,
    pub cancelled: bool,
    /// Seats of bookings that are confirmed (or completed, or no-shows).
    pub confirmed_seats: i64,
    /// Seats of bookings held or awaiting payment.
    pub held_seats: i64,
    /// Seats checked in at the door so far.
    pub checked_in_seats: i64,
    pub bookings: Vec<ManifestEntry>,
}

const COMING: &[&str] = &["confirmed", "completed", "no_show"];
const HOLDING: &[&str] = &["held", "payment_pending"];

/// The names of `customers`, read from their own streams (names are personal data, kept
/// encrypted in the log and in no read model).
async fn names(
    state: &AppState,
    customers: impl Iterator<Item = Uuid>,
) -> Result<HashMap<Uuid, String>, ApiError> {
    let mut out = HashMap::new();
    for id in customers {
        if out.contains_key(&id) {
            continue;
        }
        let name = match users::current_user(&*state.store, UserId(id)).await {
            Ok(u) => u.display_name,
            Err(tessera_commands::error::CommandError::NotFound { .. }) => {
                tessera_log::pii::ERASED.to_owned()
            }
            Err(e) => return Err(e.into()),
        };
        out.insert(id, name);
    }
    Ok(out)
}

/// A slot's manifest: every booking placed on it, with seats, status and the customer's name
/// (masked once they are erased), as JSON or CSV (its provider, or an admin).
#[utoipa::path(get, path = "/provider/slots/{slot_id}/manifest", tag = "provider", security(("bearer" = [])),
    params(("slot_id" = Uuid, Path, description = "The slot"), MinPositionHeader, ManifestQuery),
    responses(
        (status = 200, description = "The manifest", content(
            (Manifest = "application/json"),
            (String = "text/csv"),
        )),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn manifest(
    State(state): State<AppState>,
    caller: Require<ProviderOrAdmin>,
    ApiPath(slot_id): ApiPath<Uuid>,
    min: MinPosition,
    ApiQuery(q): ApiQuery<ManifestQuery>,
) -> Result<Response, ApiError> {
    let manifest = slot_manifest(&state, &caller, slot_id, min).await?;
    if q.format != Some(StatementFormat::Csv) {
        return Ok(Json(manifest).into_response());
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"manifest-{slot_id}.csv\""),
            ),
        ],
        manifest_csv(&manifest)?,
    )
        .into_response())
}

/// A slot's manifest as `caller` (its provider, or an admin) may see it; someone else's slot is
/// not found (the console's manifest page shows the same).
pub async fn slot_manifest(
    state: &AppState,
    caller: &Caller,
    slot_id: Uuid,
    min: MinPosition,
) -> Result<Manifest, ApiError> {
    let slot = commands::current_slot(&*state.store, SlotId(slot_id)).await?;
    // Someone else's slot is not found, as if it did not exist.
    if commands::may_act_on(acting(caller), slot.provider_id, "slot").is_err() {
        return Err(ApiError::NotFound {
            what: "slot",
            id: slot_id.to_string(),
        });
    }
    state.read_after(reads::BOOKINGS, min).await?;
    let rows = bookings::slot_bookings(&state.pool, slot_id)
        .await
        .map_err(tessera_projections::ProjectionError::from)?;
    let names = names(state, rows.iter().map(|b| b.customer_id)).await?;
    let seats_in = |statuses: &[&str]| {
        rows.iter()
            .filter(|b| statuses.contains(&b.status.as_str()))
            .map(|b| b.seats)
            .sum()
    };
    let manifest = Manifest {
        slot_id,
        listing_id: slot.listing_id.0,
        starts_at: slot.starts_at,
        ends_at: slot.ends_at,
        capacity: slot.capacity,
        cancelled: slot.cancelled,
        confirmed_seats: seats_in(COMING),
        held_seats: seats_in(HOLDING),
        checked_in_seats: rows.iter().map(|b| b.checked_in_seats).sum(),
        bookings: rows
            .iter()
            .map(|b| ManifestEntry {
                booking_id: b.booking_id,
                customer_id: b.customer_id,
                contact_name: names.get(&b.customer_id).cloned().unwrap_or_default(),
                seats: b.seats,
                status: b.status.clone(),
                checked_in_seats: b.checked_in_seats,
                total_minor: b.total_minor,
                currency: b.currency.clone(),
                placed_at: b.placed_at,
            })
            .collect(),
    };
    Ok(manifest)
}

/// A cell a spreadsheet will not run: text starting with `=`, `+`, `-`, `@`, a tab or a
/// carriage return gets a leading apostrophe (OWASP's advice against CSV injection).
fn cell(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    }
}

fn manifest_csv(m: &Manifest) -> Result<String, ApiError> {
    let fail = |e: csv::Error| ApiError::Internal(format!("manifest CSV: {e}"));
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "booking_id",
        "contact_name",
        "seats",
        "status",
        "checked_in_seats",
        "total_minor",
        "currency",
        "placed_at",
    ])
    .map_err(fail)?;
    for b in &m.bookings {
        w.write_record([
            &b.booking_id.to_string(),
            &cell(&b.contact_name),
            &b.seats.to_string(),
            &b.status,
            &b.checked_in_seats.to_string(),
            &b.total_minor.to_string(),
            &b.currency,
            &b.placed_at.to_rfc3339(),
        ])
        .map_err(fail)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| ApiError::Internal(format!("manifest CSV: {e}")))?;
    String::from_utf8(bytes).map_err(|e| ApiError::Internal(format!("manifest CSV: {e}")))
}

pub(crate) const STATUSES: &[&str] = &[
    "held",
    "payment_pending",
    "confirmed",
    "completed",
    "no_show",
    "expired",
    "cancelled",
    "refunded",
];

#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ProviderBookingsQuery {
    pub listing_id: Option<Uuid>,
    pub slot_id: Option<Uuid>,
    /// held | payment_pending | confirmed | completed | no_show | expired | cancelled | refunded
    pub status: Option<String>,
    /// Slots starting at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Slots starting before this time.
    pub to: Option<DateTime<Utc>>,
    /// 1 to 200 (default 50).
    pub limit: Option<i64>,
    /// 0 to 1,000,000 (default 0).
    pub offset: Option<i64>,
}

/// A page of bookings, with how many match in all.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BookingPage {
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
    pub bookings: Vec<BookingView>,
}

/// Checks a booking search's status, period and page, and runs it.
/// `s` if it names a booking status (else a 422 naming the field).
pub(crate) fn known_status(s: &str) -> Result<&str, ApiError> {
    if STATUSES.contains(&s) {
        Ok(s)
    } else {
        Err(invalid(
            "status",
            format!("unknown status; one of {}", STATUSES.join(", ")),
        ))
    }
}

pub(crate) async fn booking_page(
    state: &AppState,
    mut filter: BookingFilter,
    status: Option<&str>,
    limit: Option<i64>,
    offset: Option<i64>,
) -> Result<BookingPage, ApiError> {
    if let Some(s) = status {
        filter.status = Some(known_status(s)?.to_owned());
    }
    if let (Some(from), Some(to)) = (filter.from, filter.to)
        && to <= from
    {
        return Err(invalid("to", "the period ends after it starts"));
    }
    let limit = limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(invalid("limit", "limit is 1 to 200"));
    }
    let offset = offset.unwrap_or(0);
    if !(0..=1_000_000).contains(&offset) {
        return Err(invalid("offset", "offset is 0 to 1,000,000"));
    }
    let (bookings, total) = bookings::search_bookings(&state.pool, &filter, limit, offset)
        .await
        .map_err(tessera_projections::ProjectionError::from)?;
    Ok(BookingPage {
        total,
        limit,
        offset,
        bookings,
    })
}

/// The bookings of my listings, by slot start, filtered and a page at a time (providers; an
/// admin sees every provider's).
#[utoipa::path(get, path = "/provider/bookings", tag = "provider", security(("bearer" = [])),
    params(MinPositionHeader, ProviderBookingsQuery),
    responses(
        (status = 200, description = "Bookings", body = BookingPage),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn provider_bookings(
    State(state): State<AppState>,
    caller: Require<ProviderOrAdmin>,
    min: MinPosition,
    ApiQuery(q): ApiQuery<ProviderBookingsQuery>,
) -> Result<Json<BookingPage>, ApiError> {
    state.read_after(&["bookings", "catalog"], min).await?;
    let filter = BookingFilter {
        provider: match acting(&caller) {
            Acting::Admin => None,
            Acting::Provider(p) => Some(p.0),
        },
        listing: q.listing_id,
        slot: q.slot_id,
        from: q.from,
        to: q.to,
        ..BookingFilter::default()
    };
    Ok(Json(
        booking_page(&state, filter, q.status.as_deref(), q.limit, q.offset).await?,
    ))
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleInput {
    /// An iCalendar RRULE value (RFC 5545) without `DTSTART`, e.g.
    /// `FREQ=WEEKLY;BYDAY=TU,SA;UNTIL=20261031T235959Z`; FREQ is DAILY, WEEKLY, MONTHLY or
    /// YEARLY.
    pub rrule: String,
    /// The first start in local time, e.g. `2026-03-03T09:00:00`.
    #[schema(value_type = String, example = "2026-03-03T09:00:00")]
    pub starts: chrono::NaiveDateTime,
    /// IANA time zone of the local times, e.g. `Europe/Lisbon` (daylight saving applies).
    pub timezone: String,
    /// Length of each slot, 1 minute to 30 days.
    pub duration_minutes: u32,
    /// Seats per slot, 1 to 10,000.
    pub capacity: u32,
    /// Price per seat in the listing's currency (minor units); default: the listing's base
    /// price (when defining) or the schedule's current price (when changing).
    #[serde(default)]
    pub price_minor: Option<i64>,
    /// How far ahead slots exist, 1 to 400 days (default 90); generation extends it daily.
    #[serde(default)]
    pub horizon_days: Option<u32>,
}

/// One slot a schedule generated.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GeneratedSlotView {
    pub slot_id: Uuid,
    pub starts_at: DateTime<Utc>,
}

/// What a schedule command did to the schedule's slots.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScheduleOutcome {
    pub schedule_id: Uuid,
    /// Slots created now.
    pub created: Vec<GeneratedSlotView>,
    /// Future unbooked slots cancelled (not in the new rule, or of another length).
    pub withdrawn: Vec<Uuid>,
    /// Future unbooked slots given the new capacity and price.
    pub revised: Vec<Uuid>,
    /// Future booked slots left as they were.
    pub kept_booked: Vec<Uuid>,
    #[serde(flatten)]
    pub result: super::CommandResult,
}

fn outcome(id: ScheduleId, c: &schedules::Changed, replayed: bool) -> ScheduleOutcome {
    ScheduleOutcome {
        schedule_id: id.0,
        created: c
            .generated
            .created
            .iter()
            .map(|g| GeneratedSlotView {
                slot_id: g.slot_id.0,
                starts_at: g.starts_at,
            })
            .collect(),
        withdrawn: c.withdrawn.iter().map(|s| s.0).collect(),
        revised: c.revised.iter().map(|s| s.0).collect(),
        kept_booked: c.kept_booked.iter().map(|s| s.0).collect(),
        result: super::CommandResult {
            position: c.position.0 as i64,
            replayed,
        },
    }
}

const DEFAULT_HORIZON_DAYS: u32 = 90;

fn spec(input: &ScheduleInput, currency: Option<Currency>) -> Result<ScheduleSpec, ApiError> {
    for (field, text) in [("rrule", &input.rrule), ("timezone", &input.timezone)] {
        crate::http::error::storable(field, text)?;
    }
    let price = match (input.price_minor, currency) {
        (Some(minor), Some(c)) => {
            Some(Money::price(minor, c).map_err(|e| invalid("price_minor", e.to_string()))?)
        }
        (Some(minor), None) if minor < 0 => {
            return Err(invalid("price_minor", "must not be negative"));
        }
        _ => None,
    };
    Ok(ScheduleSpec {
        recurrence: Recurrence {
            rrule: input.rrule.trim().to_owned(),
            starts: input.starts,
            timezone: input.timezone.trim().to_owned(),
        },
        duration_minutes: input.duration_minutes,
        capacity: input.capacity,
        price_per_seat: price,
        horizon_days: input.horizon_days.unwrap_or(DEFAULT_HORIZON_DAYS),
    })
}

async fn listing_currency(state: &AppState, listing: Uuid) -> Result<Option<Currency>, ApiError> {
    let Some(code) = catalog::listing_currency(&state.pool, listing).await? else {
        return Ok(None);
    };
    Ok(Currency::new(&code).ok())
}

/// Define a recurring schedule on a listing; its slots up to the horizon are generated at once
/// (and every hour after, as the horizon moves).
#[utoipa::path(post, path = "/provider/listings/{listing_id}/schedules", tag = "provider", security(("bearer" = [])),
    request_body = ScheduleInput,
    params(("listing_id" = Uuid, Path, description = "The listing"),
           ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key define once")),
    responses(
        (status = 201, description = "Defined, with the slots generated", body = ScheduleOutcome),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn define_schedule(
    State(state): State<AppState>,
    caller: Require<ProviderOrAdmin>,
    key: IdempotencyKey,
    ApiPath(listing_id): ApiPath<Uuid>,
    ApiJson(input): ApiJson<ScheduleInput>,
) -> Result<Response, ApiError> {
    let acting = acting(&caller);
    let request = (listing_id, &input);
    once(
        &state,
        &caller,
        "schedule.define",
        key,
        &request,
        async |ctx| {
            let currency = listing_currency(&state, listing_id).await?;
            let spec = spec(&input, currency)?;
            let (id, changed) =
                schedules::define(&*state.store, acting, ListingId(listing_id), spec, &ctx).await?;
            Ok((
                StatusCode::CREATED,
                changed.position.0 as i64,
                outcome(id, &changed, false),
            ))
        },
    )
    .await
}

#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SchedulesQuery {
    pub listing_id: Option<Uuid>,
}

/// My schedules (providers; an admin sees every provider's).
#[utoipa::path(get, path = "/provider/schedules", tag = "provider", security(("bearer" = [])),
    params(MinPositionHeader, SchedulesQuery),
    responses(
        (status = 200, description = "Schedules", body = Vec<ScheduleView>),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_schedules(
    State(state): State<AppState>,
    caller: Require<ProviderOrAdmin>,
    min: MinPosition,
    ApiQuery(q): ApiQuery<SchedulesQuery>,
) -> Result<Json<Vec<ScheduleView>>, ApiError> {
    state.read_after(reads::CATALOG, min).await?;
    let provider = match acting(&caller) {
        Acting::Admin => None,
        Acting::Provider(p) => Some(p.0),
    };
    Ok(Json(
        catalog::schedules(&state.pool, provider, q.listing_id)
            .await
            .map_err(tessera_projections::ProjectionError::from)?,
    ))
}

/// One of my schedules (its provider, or an admin).
#[utoipa::path(get, path = "/provider/schedules/{schedule_id}", tag = "provider", security(("bearer" = [])),
    params(("schedule_id" = Uuid, Path, description = "The schedule"), MinPositionHeader),
    responses(
        (status = 200, description = "The schedule", body = ScheduleView),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_schedule(
    State(state): State<AppState>,
    caller: Require<ProviderOrAdmin>,
    min: MinPosition,
    ApiPath(schedule_id): ApiPath<Uuid>,
) -> Result<Json<ScheduleView>, ApiError> {
    state.read_after(reads::CATALOG, min).await?;
    match catalog::schedule(&state.pool, schedule_id)
        .await
        .map_err(tessera_projections::ProjectionError::from)?
    {
        Some(s)
            if commands::may_act_on(acting(&caller), UserId(s.provider_id), "schedule").is_ok() =>
        {
            Ok(Json(s))
        }
        _ => Err(ApiError::NotFound {
            what: "schedule",
            id: schedule_id.to_string(),
        }),
    }
}

/// Change a schedule's rule, slots or horizon: future slots nobody booked follow (revised, or
/// withdrawn when the new rule has no such start); booked slots stay as they are.
#[utoipa::path(put, path = "/provider/schedules/{schedule_id}", tag = "provider", security(("bearer" = [])),
    request_body = ScheduleInput,
    params(("schedule_id" = Uuid, Path, description = "The schedule"),
           ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key change once")),
    responses(
        (status = 200, description = "Changed", body = ScheduleOutcome),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn change_schedule(
    State(state): State<AppState>,
    caller: Require<ProviderOrAdmin>,
    key: IdempotencyKey,
    ApiPath(schedule_id): ApiPath<Uuid>,
    ApiJson(input): ApiJson<ScheduleInput>,
) -> Result<Response, ApiError> {
    let acting = acting(&caller);
    let request = (schedule_id, &input);
    once(
        &state,
        &caller,
        "schedule.change",
        key,
        &request,
        async |ctx| {
            let id = ScheduleId(schedule_id);
            let current = schedules::current_schedule(&*state.store, id).await?;
            let spec = spec(&input, Some(current.template.price_per_seat.currency))?;
            let changed = schedules::change(&*state.store, acting, id, spec, &ctx).await?;
            Ok((
                StatusCode::OK,
                changed.position.0 as i64,
                outcome(id, &changed, false),
            ))
        },
    )
    .await
}

/// Generate the schedule's missing slots up to its horizon now (it also happens every hour);
/// running it again creates nothing twice.
#[utoipa::path(post, path = "/provider/schedules/{schedule_id}/generate", tag = "provider", security(("bearer" = [])),
    params(("schedule_id" = Uuid, Path, description = "The schedule")),
    responses(
        (status = 200, description = "Generated", body = ScheduleOutcome),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn generate_schedule(
    State(state): State<AppState>,
    caller: Require<ProviderOrAdmin>,
    key: IdempotencyKey,
    ApiPath(schedule_id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let acting = acting(&caller);
    once(
        &state,
        &caller,
        "schedule.generate",
        key,
        &schedule_id,
        async |ctx| {
            let id = ScheduleId(schedule_id);
            let s = schedules::current_schedule(&*state.store, id).await?;
            commands::may_act_on(acting, s.provider_id, "schedule")?;
            let generated = schedules::generate(&*state.store, id, &ctx).await?;
            let changed = schedules::Changed {
                position: generated.position,
                generated,
                ..Default::default()
            };
            Ok((
                StatusCode::OK,
                changed.position.0 as i64,
                outcome(id, &changed, false),
            ))
        },
    )
    .await
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExceptionInput {
    /// A local date (in the schedule's time zone) without a slot.
    #[schema(value_type = String, example = "2026-08-15")]
    pub date: NaiveDate,
}

/// Take one date out of a schedule: its slot, if unbooked, is withdrawn; a booked one refuses
/// (cancel it explicitly, which refunds its bookings).
#[utoipa::path(post, path = "/provider/schedules/{schedule_id}/exceptions", tag = "provider", security(("bearer" = [])),
    request_body = ExceptionInput,
    params(("schedule_id" = Uuid, Path, description = "The schedule")),
    responses(
        (status = 200, description = "Taken out", body = super::CommandResult),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn add_exception(
    State(state): State<AppState>,
    caller: Require<ProviderOrAdmin>,
    key: IdempotencyKey,
    ApiPath(schedule_id): ApiPath<Uuid>,
    ApiJson(input): ApiJson<ExceptionInput>,
) -> Result<Response, ApiError> {
    let acting = acting(&caller);
    let request = (schedule_id, &input);
    once(
        &state,
        &caller,
        "schedule.except",
        key,
        &request,
        async |ctx| {
            let executed = schedules::add_exception(
                &*state.store,
                acting,
                ScheduleId(schedule_id),
                input.date,
                &ctx,
            )
            .await?;
            Ok(answered(StatusCode::OK, &executed))
        },
    )
    .await
}

/// Put an excepted date back: its slot is generated again.
#[utoipa::path(delete, path = "/provider/schedules/{schedule_id}/exceptions/{date}", tag = "provider", security(("bearer" = [])),
    params(("schedule_id" = Uuid, Path, description = "The schedule"),
           ("date" = String, Path, description = "The local date, e.g. 2026-08-15")),
    responses(
        (status = 200, description = "Put back, with the slots generated", body = ScheduleOutcome),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn remove_exception(
    State(state): State<AppState>,
    caller: Require<ProviderOrAdmin>,
    key: IdempotencyKey,
    ApiPath((schedule_id, date)): ApiPath<(Uuid, NaiveDate)>,
) -> Result<Response, ApiError> {
    let acting = acting(&caller);
    let request = (schedule_id, date);
    once(
        &state,
        &caller,
        "schedule.unexcept",
        key,
        &request,
        async |ctx| {
            let id = ScheduleId(schedule_id);
            let (done, generated) =
                schedules::remove_exception(&*state.store, acting, id, date, &ctx).await?;
            let position = if generated.position.0 > done.position.0 {
                generated.position
            } else {
                done.position
            };
            let changed = schedules::Changed {
                generated,
                position,
                ..Default::default()
            };
            Ok((
                StatusCode::OK,
                position.0 as i64,
                outcome(id, &changed, done.replayed),
            ))
        },
    )
    .await
}

/// End a schedule: nothing more is generated; its future unbooked slots are withdrawn and
/// booked ones stay.
#[utoipa::path(post, path = "/provider/schedules/{schedule_id}/end", tag = "provider", security(("bearer" = [])),
    request_body = super::catalog::Reason,
    params(("schedule_id" = Uuid, Path, description = "The schedule")),
    responses(
        (status = 200, description = "Ended", body = ScheduleOutcome),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn end_schedule(
    State(state): State<AppState>,
    caller: Require<ProviderOrAdmin>,
    key: IdempotencyKey,
    ApiPath(schedule_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<super::catalog::Reason>,
) -> Result<Response, ApiError> {
    let acting = acting(&caller);
    let reason = super::required_reason(&body.reason)?;
    let request = (schedule_id, &body);
    once(
        &state,
        &caller,
        "schedule.end",
        key,
        &request,
        async |ctx| {
            let id = ScheduleId(schedule_id);
            let ctx = ctx.with_reason(reason.clone());
            let changed = schedules::end(&*state.store, acting, id, &reason, &ctx).await?;
            Ok((
                StatusCode::OK,
                changed.position.0 as i64,
                outcome(id, &changed, false),
            ))
        },
    )
    .await
}
