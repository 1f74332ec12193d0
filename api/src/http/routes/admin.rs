//! Admins: compensating commands (each with a reason, the admin recorded as actor), role
//! management and statistics. Analysts: projection status and rebuilds.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use tessera_commands::admin;
use tessera_domain::user::Role;
use tessera_domain::user::{UserAggregate, UserState};
use tessera_domain::values::{BookingId, UserId};
pub use tessera_projections::models::stats::{self, DayStats, ListingStats};
use tessera_projections::models::users;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{CommandResult, IdempotencyKey, run_once};
use crate::http::auth::Caller;
use crate::http::auth::Require;
use crate::http::auth::roles::{Admin, AnalystOrAdmin, Staff};
use crate::http::error::{ApiError, FieldError, Problem};
use crate::http::positions::{MinPosition, MinPositionHeader, reads};
use crate::http::{ApiJson, ApiPath, ApiQuery, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(refund))
        .routes(routes!(force_cancel))
        .routes(routes!(reinstate))
        .routes(routes!(admin_reschedule))
        .routes(routes!(adjust_points))
        .routes(routes!(erase_user))
        .routes(routes!(search_bookings))
        .routes(routes!(search_users))
        .routes(routes!(suspend_user))
        .routes(routes!(unsuspend_user))
        .routes(routes!(grant_role))
        .routes(routes!(revoke_role))
        .routes(routes!(daily_stats))
        .routes(routes!(listing_stats))
        .routes(routes!(projections))
        .routes(routes!(rebuild))
}

fn invalid(field: &str, message: &str) -> ApiError {
    ApiError::Invalid(vec![FieldError {
        field: field.into(),
        message: message.into(),
    }])
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    /// Amount in the booking's currency, minor units; at most what was paid minus refunds.
    pub amount_minor: i64,
    pub reason: String,
}

/// Refund part or all of a booking's payment (admins).
#[utoipa::path(post, path = "/admin/bookings/{booking_id}/refund", tag = "admin", security(("bearer" = [])),
    request_body = RefundRequest,
    params(("booking_id" = Uuid, Path, description = "The booking")),
    responses(
        (status = 200, description = "Refund requested", body = CommandResult),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn refund(
    State(state): State<AppState>,
    caller: Require<Admin>,
    key: IdempotencyKey,
    ApiPath(booking_id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<RefundRequest>,
) -> Result<Response, ApiError> {
    refund_command(&state, &caller, key, booking_id, req).await
}

/// `POST /admin/bookings/{id}/refund`'s command (the console's refund form runs it too).
pub async fn refund_command(
    state: &AppState,
    caller: &Caller,
    key: IdempotencyKey,
    booking_id: Uuid,
    req: RefundRequest,
) -> Result<Response, ApiError> {
    let request = (booking_id, &req);
    let why = Some(req.reason.as_str());
    run_once(
        state,
        caller,
        "admin.refund",
        key,
        &request,
        why,
        async |ctx| {
            let booking = BookingId(booking_id);
            let (b, _) = tessera_commands::booking::current_booking(&*state.store, booking).await?;
            let amount = tessera_domain::values::Money::new(req.amount_minor, b.total.currency)
                .map_err(|e| invalid("amount_minor", &e.to_string()))?;
            Ok(admin::refund(&*state.store, booking, amount, &ctx).await?)
        },
    )
    .await
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForceCancelRequest {
    pub reason: String,
    /// Refund everything regardless of the policy.
    #[serde(default)]
    pub waive_fee: bool,
}

/// Cancel any booking (admins).
#[utoipa::path(post, path = "/admin/bookings/{booking_id}/force-cancel", tag = "admin", security(("bearer" = [])),
    request_body = ForceCancelRequest,
    params(("booking_id" = Uuid, Path, description = "The booking")),
    responses(
        (status = 200, description = "Cancelled", body = CommandResult),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn force_cancel(
    State(state): State<AppState>,
    caller: Require<Admin>,
    key: IdempotencyKey,
    ApiPath(booking_id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<ForceCancelRequest>,
) -> Result<Response, ApiError> {
    force_cancel_command(&state, &caller, key, booking_id, req).await
}

/// `POST /admin/bookings/{id}/force-cancel`'s command (the console's cancel form runs it too).
pub async fn force_cancel_command(
    state: &AppState,
    caller: &Caller,
    key: IdempotencyKey,
    booking_id: Uuid,
    req: ForceCancelRequest,
) -> Result<Response, ApiError> {
    let request = (booking_id, &req);
    let why = Some(req.reason.as_str());
    run_once(
        state,
        caller,
        "admin.force_cancel",
        key,
        &request,
        why,
        async |ctx| {
            let booking = BookingId(booking_id);
            let by = caller.user_id;
            Ok(admin::force_cancel(&*state.store, booking, by, req.waive_fee, &ctx).await?)
        },
    )
    .await
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminRescheduleRequest {
    /// Another slot of the booking's listing.
    pub slot_id: Uuid,
    pub reason: String,
}

/// Move a booking to another slot of its listing on the customer's behalf (admins, with a
/// reason): the customer's rules apply (confirmed, within the policy's window, not dearer; a
/// cheaper slot refunds the difference).
#[utoipa::path(post, path = "/admin/bookings/{booking_id}/reschedule", tag = "admin", security(("bearer" = [])),
    request_body = AdminRescheduleRequest,
    params(("booking_id" = Uuid, Path, description = "The booking")),
    responses(
        (status = 200, description = "Moved", body = CommandResult),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn admin_reschedule(
    State(state): State<AppState>,
    caller: Require<Admin>,
    key: IdempotencyKey,
    ApiPath(booking_id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<AdminRescheduleRequest>,
) -> Result<Response, ApiError> {
    let request = (booking_id, &req);
    let why = Some(req.reason.as_str());
    run_once(
        &state,
        &caller,
        "admin.reschedule",
        key,
        &request,
        why,
        async |ctx| {
            Ok(admin::reschedule(
                &*state.store,
                BookingId(booking_id),
                tessera_domain::values::SlotId(req.slot_id),
                &ctx,
            )
            .await?)
        },
    )
    .await
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReinstateRequest {
    pub reason: String,
    /// Hold the seats even when the slot is full (recorded on the slot's event).
    #[serde(default)]
    pub allow_overbook: bool,
}

/// Bring an expired booking back to held (admins).
#[utoipa::path(post, path = "/admin/bookings/{booking_id}/reinstate", tag = "admin", security(("bearer" = [])),
    request_body = ReinstateRequest,
    params(("booking_id" = Uuid, Path, description = "The booking")),
    responses(
        (status = 200, description = "Reinstated", body = CommandResult),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn reinstate(
    State(state): State<AppState>,
    caller: Require<Admin>,
    key: IdempotencyKey,
    ApiPath(booking_id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<ReinstateRequest>,
) -> Result<Response, ApiError> {
    reinstate_command(&state, &caller, key, booking_id, req).await
}

/// `POST /admin/bookings/{id}/reinstate`'s command (the console's reinstate form runs it too).
pub async fn reinstate_command(
    state: &AppState,
    caller: &Caller,
    key: IdempotencyKey,
    booking_id: Uuid,
    req: ReinstateRequest,
) -> Result<Response, ApiError> {
    let request = (booking_id, &req);
    let why = Some(req.reason.as_str());
    run_once(
        state,
        caller,
        "admin.reinstate",
        key,
        &request,
        why,
        async |ctx| {
            let (booking, overbook) = (BookingId(booking_id), req.allow_overbook);
            Ok(admin::reinstate(&*state.store, &state.booking, booking, overbook, &ctx).await?)
        },
    )
    .await
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PointsRequest {
    /// Points to add (positive) or remove (negative), at most 1,000,000,000 either way and
    /// never 0; a balance never goes below zero.
    #[schema(minimum = -1_000_000_000, maximum = 1_000_000_000)]
    pub delta: i64,
    pub reason: String,
}

/// Adjust a user's points (admins).
#[utoipa::path(post, path = "/admin/users/{user_id}/points", tag = "admin", security(("bearer" = [])),
    request_body = PointsRequest,
    params(("user_id" = Uuid, Path, description = "The user")),
    responses(
        (status = 200, description = "Adjusted", body = CommandResult),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn adjust_points(
    State(state): State<AppState>,
    caller: Require<Admin>,
    key: IdempotencyKey,
    ApiPath(user_id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<PointsRequest>,
) -> Result<Response, ApiError> {
    points_command(&state, &caller, key, user_id, req).await
}

/// `POST /admin/users/{id}/points`'s command (the console's points form runs it too).
pub async fn points_command(
    state: &AppState,
    caller: &Caller,
    key: IdempotencyKey,
    user_id: Uuid,
    req: PointsRequest,
) -> Result<Response, ApiError> {
    let request = (user_id, &req);
    let why = Some(req.reason.as_str());
    run_once(
        state,
        caller,
        "admin.points",
        key,
        &request,
        why,
        async |ctx| {
            tessera_commands::users::current_user(&*state.store, UserId(user_id)).await?;
            Ok(admin::adjust_points(&*state.store, UserId(user_id), req.delta, &ctx).await?)
        },
    )
    .await
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EraseRequest {
    pub reason: String,
}

/// GDPR erasure (admins): records `UserErased` with the admin and reason, then destroys the
/// person's data key; their e-mail, name and review texts read as placeholders from then on.
#[utoipa::path(post, path = "/admin/users/{user_id}/erase", tag = "admin", security(("bearer" = [])),
    request_body = EraseRequest,
    params(("user_id" = Uuid, Path, description = "The user")),
    responses(
        (status = 200, description = "Erased", body = CommandResult),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn erase_user(
    State(state): State<AppState>,
    caller: Require<Admin>,
    key: IdempotencyKey,
    ApiPath(user_id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<EraseRequest>,
) -> Result<Response, ApiError> {
    let request = (user_id, &req);
    let why = Some(req.reason.as_str());
    run_once(
        &state,
        &caller,
        "admin.erase",
        key,
        &request,
        why,
        async |ctx| {
            let executed =
                admin::erase_user(&*state.store, &state.vault, UserId(user_id), &ctx).await;
            // Whatever the outcome, this process stops trusting what it knew of the user.
            state.principals.forget(user_id).await;
            Ok(executed?)
        },
    )
    .await
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AdminBookingsQuery {
    /// The customer's e-mail address: matched through the users read model's blind index (a
    /// keyed hash of the address), so no read model holds addresses in plain text.
    pub email: Option<String>,
    pub customer_id: Option<Uuid>,
    pub provider_id: Option<Uuid>,
    pub listing_id: Option<Uuid>,
    pub slot_id: Option<Uuid>,
    /// held | payment_pending | confirmed | completed | no_show | expired | cancelled | refunded
    pub status: Option<String>,
    /// Slots starting at or after this time.
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    /// Slots starting before this time.
    pub to: Option<chrono::DateTime<chrono::Utc>>,
    /// 1 to 200 (default 50).
    pub limit: Option<i64>,
    /// 0 to 1,000,000 (default 0).
    pub offset: Option<i64>,
}

/// Every booking, filtered by customer (id or e-mail address), provider, listing, slot, status
/// and period, a page at a time (admins). An address without an account matches nothing.
#[utoipa::path(get, path = "/admin/bookings", tag = "admin", security(("bearer" = [])),
    params(MinPositionHeader, AdminBookingsQuery),
    responses(
        (status = 200, description = "Bookings", body = super::provider::BookingPage),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn search_bookings(
    State(state): State<AppState>,
    _caller: Require<Admin>,
    min: MinPosition,
    ApiQuery(q): ApiQuery<AdminBookingsQuery>,
) -> Result<axum::Json<super::provider::BookingPage>, ApiError> {
    state
        .read_after(&["bookings", "catalog", "users"], min)
        .await?;
    Ok(axum::Json(find_bookings(&state, &q).await?))
}

/// What `GET /admin/bookings` answers (the console's booking search asks the same).
pub async fn find_bookings(
    state: &AppState,
    q: &AdminBookingsQuery,
) -> Result<super::provider::BookingPage, ApiError> {
    if q.email.is_some() && q.customer_id.is_some() {
        return Err(invalid(
            "customer_id",
            "give email or customer_id, not both",
        ));
    }
    let by_email = match q.email.as_deref() {
        Some(email) => {
            tessera_domain::user::Email::parse(email)
                .map_err(|_| invalid("email", "not an e-mail address"))?;
            // An address without an account matches nobody (the nil id).
            Some(
                users::find_by_email(&state.pool, email)
                    .await?
                    .unwrap_or(Uuid::nil()),
            )
        }
        None => None,
    };
    let filter = tessera_projections::models::bookings::BookingFilter {
        provider: q.provider_id,
        customer: by_email.or(q.customer_id),
        listing: q.listing_id,
        slot: q.slot_id,
        from: q.from,
        to: q.to,
        ..Default::default()
    };
    super::provider::booking_page(state, filter, q.status.as_deref(), q.limit, q.offset).await
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AdminUsersQuery {
    /// An exact e-mail address, matched through its blind index (a keyed hash: the read model
    /// holds no addresses).
    pub email: Option<String>,
    /// Whole words of the display name, any case, all of which must be in it (1 to 100
    /// characters); names are matched through blind indexes of their words.
    pub q: Option<String>,
    /// customer | provider | admin | auditor | analyst
    pub role: Option<String>,
    pub suspended: Option<bool>,
    /// Include erased accounts (their names are masked).
    #[serde(default)]
    pub include_erased: bool,
    /// 1 to 200 (default 50).
    pub limit: Option<i64>,
    /// 0 to 1,000,000 (default 0).
    pub offset: Option<i64>,
}

/// Users, newest first, by e-mail address, part of the name, role and suspension (admins).
#[utoipa::path(get, path = "/admin/users", tag = "admin", security(("bearer" = [])),
    params(MinPositionHeader, AdminUsersQuery),
    responses(
        (status = 200, description = "Users", body = Vec<AdminUser>),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn search_users(
    State(state): State<AppState>,
    _caller: Require<Admin>,
    min: MinPosition,
    ApiQuery(q): ApiQuery<AdminUsersQuery>,
) -> Result<axum::Json<Vec<AdminUser>>, ApiError> {
    state.read_after(&["users"], min).await?;
    Ok(axum::Json(find_users(&state, q).await?))
}

/// What `GET /admin/users` answers (the console's user list asks the same).
pub async fn find_users(state: &AppState, q: AdminUsersQuery) -> Result<Vec<AdminUser>, ApiError> {
    if let Some(email) = q.email.as_deref() {
        tessera_domain::user::Email::parse(email)
            .map_err(|_| invalid("email", "not an e-mail address"))?;
    }
    if q.q
        .as_deref()
        .is_some_and(|n| !n.chars().any(char::is_alphanumeric) || n.chars().count() > 100)
    {
        return Err(invalid("q", "1 to 100 characters, with at least one word"));
    }
    if let Some(role) = q.role.as_deref()
        && serde_json::from_value::<tessera_domain::user::Role>(role.into()).is_err()
    {
        return Err(invalid(
            "role",
            "customer, provider, admin, auditor or analyst",
        ));
    }
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(invalid("limit", "1 to 200"));
    }
    let offset = q.offset.unwrap_or(0);
    if !(0..=1_000_000).contains(&offset) {
        return Err(invalid("offset", "0 to 1,000,000"));
    }
    let filter = users::UserFilter {
        email: q.email,
        name: q.q.map(|n| n.trim().to_owned()),
        role: q.role,
        suspended: q.suspended,
        include_erased: q.include_erased,
        limit,
        offset,
    };
    let mut page = Vec::new();
    for u in users::search(&state.pool, &filter).await? {
        // The name from the log, decrypted for this answer (a placeholder once erased).
        let display_name = match tessera_commands::handler::load::<UserAggregate>(
            &*state.store,
            tessera_commands::handler::stream_of::<UserAggregate>(UserId(u.user_id)),
            Uuid::nil(),
        )
        .await?
        .state
        {
            UserState::Registered(user) => user.display_name,
            UserState::New => String::new(),
        };
        page.push(AdminUser {
            user_id: u.user_id,
            display_name,
            email_verified: u.email_verified,
            roles: serde_json::from_value(u.roles).unwrap_or_default(),
            suspended: u.suspended,
            suspended_reason: u.suspended_reason,
            erased: u.erased,
            registered_at: u.registered_at,
            updated_at: u.updated_at,
        });
    }
    Ok(page)
}

/// A user as admins see them.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AdminUser {
    pub user_id: Uuid,
    /// From the log, decrypted for this answer (`[erased]` once erased).
    pub display_name: String,
    /// Whether the account's address is confirmed.
    pub email_verified: bool,
    pub roles: Vec<String>,
    pub suspended: bool,
    pub suspended_reason: Option<String>,
    pub erased: bool,
    pub registered_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

async fn set_suspended(
    state: &AppState,
    caller: &Caller,
    key: IdempotencyKey,
    user_id: Uuid,
    req: &EraseRequest,
    suspend: bool,
) -> Result<Response, ApiError> {
    let request = (user_id, req, suspend);
    let why = Some(req.reason.as_str());
    run_once(
        state,
        caller,
        "admin.suspend",
        key,
        &request,
        why,
        async |ctx| {
            let user = UserId(user_id);
            let executed =
                tessera_commands::users::set_suspended(&*state.store, user, suspend, &ctx).await;
            state.principals.forget(user_id).await;
            let executed = executed?;
            if suspend {
                crate::http::auth::revoke_sessions(&state.pool, user, None).await?;
            }
            Ok(executed)
        },
    )
    .await
}

/// Suspend a user (admins, with a reason): they cannot log in, their sessions are revoked and
/// their access tokens are refused at once. Their bookings stay as they are.
#[utoipa::path(post, path = "/admin/users/{user_id}/suspend", tag = "admin", security(("bearer" = [])),
    request_body = EraseRequest,
    params(("user_id" = Uuid, Path, description = "The user")),
    responses(
        (status = 200, description = "Suspended", body = CommandResult),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn suspend_user(
    State(state): State<AppState>,
    caller: Require<Admin>,
    key: IdempotencyKey,
    ApiPath(user_id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<EraseRequest>,
) -> Result<Response, ApiError> {
    if user_id == caller.user_id.0 {
        let refused = tessera_commands::error::CommandError::from(
            tessera_domain::user::UserError::SelfRemoval,
        );
        return Err(refused.into());
    }
    set_suspended(&state, &caller, key, user_id, &req, true).await
}

/// Reinstate a suspended user (admins, with a reason); they log in again.
#[utoipa::path(post, path = "/admin/users/{user_id}/unsuspend", tag = "admin", security(("bearer" = [])),
    request_body = EraseRequest,
    params(("user_id" = Uuid, Path, description = "The user")),
    responses(
        (status = 200, description = "Reinstated", body = CommandResult),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn unsuspend_user(
    State(state): State<AppState>,
    caller: Require<Admin>,
    key: IdempotencyKey,
    ApiPath(user_id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<EraseRequest>,
) -> Result<Response, ApiError> {
    set_suspended(&state, &caller, key, user_id, &req, false).await
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleRequest {
    /// customer | provider | admin | auditor | analyst
    pub role: String,
    pub reason: String,
}

fn role(name: &str) -> Result<Role, ApiError> {
    serde_json::from_value(serde_json::Value::String(name.to_owned()))
        .map_err(|_| invalid("role", "customer, provider, admin, auditor or analyst"))
}

/// Grants or revokes a role (`POST /admin/users/{id}/roles[/revoke]`; the console's role forms).
pub async fn change_role(
    state: &AppState,
    caller: &Caller,
    key: IdempotencyKey,
    user_id: Uuid,
    req: &RoleRequest,
    grant: bool,
) -> Result<Response, ApiError> {
    let r = role(&req.role)?;
    let request = (user_id, req, grant);
    let why = Some(req.reason.as_str());
    run_once(
        state,
        caller,
        "admin.role",
        key,
        &request,
        why,
        async |ctx| {
            let user = UserId(user_id);
            let executed =
                tessera_commands::users::change_role(&*state.store, user, r, grant, &ctx).await;
            state.principals.forget(user_id).await;
            Ok(executed?)
        },
    )
    .await
}

/// Grant a role (admins). Takes effect at the user's next login or token refresh (a revoked role
/// stops counting at once).
#[utoipa::path(post, path = "/admin/users/{user_id}/roles", tag = "admin", security(("bearer" = [])),
    request_body = RoleRequest,
    params(("user_id" = Uuid, Path, description = "The user")),
    responses(
        (status = 200, description = "Granted", body = CommandResult),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn grant_role(
    State(state): State<AppState>,
    caller: Require<Admin>,
    key: IdempotencyKey,
    ApiPath(user_id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<RoleRequest>,
) -> Result<Response, ApiError> {
    change_role(&state, &caller, key, user_id, &req, true).await
}

/// Revoke a role (admins).
#[utoipa::path(post, path = "/admin/users/{user_id}/roles/revoke", tag = "admin", security(("bearer" = [])),
    request_body = RoleRequest,
    params(("user_id" = Uuid, Path, description = "The user")),
    responses(
        (status = 200, description = "Revoked", body = CommandResult),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn revoke_role(
    State(state): State<AppState>,
    caller: Require<Admin>,
    key: IdempotencyKey,
    ApiPath(user_id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<RoleRequest>,
) -> Result<Response, ApiError> {
    change_role(&state, &caller, key, user_id, &req, false).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DayRange {
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
}

/// Bookings, revenue and refunds per day (admins, analysts, auditors).
#[utoipa::path(get, path = "/admin/stats/daily", tag = "admin", security(("bearer" = [])), params(MinPositionHeader, DayRange),
    responses(
        (status = 200, description = "Per day and currency", body = Vec<DayStats>),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn daily_stats(
    State(state): State<AppState>,
    _caller: Require<Staff>,
    min: MinPosition,
    ApiQuery(range): ApiQuery<DayRange>,
) -> Result<axum::Json<Vec<DayStats>>, ApiError> {
    state.read_after(reads::STATS, min).await?;
    let rows = stats::daily(&state.pool, range.from, range.to).await?;
    Ok(axum::Json(rows))
}

/// Bookings, revenue and refunds per listing, highest revenue first (admins, analysts, auditors).
#[utoipa::path(get, path = "/admin/stats/listings", tag = "admin", security(("bearer" = [])), params(MinPositionHeader, DayRange),
    responses(
        (status = 200, description = "Per listing and currency", body = Vec<ListingStats>),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn listing_stats(
    State(state): State<AppState>,
    _caller: Require<Staff>,
    min: MinPosition,
    ApiQuery(range): ApiQuery<DayRange>,
) -> Result<axum::Json<Vec<ListingStats>>, ApiError> {
    state.read_after(reads::STATS, min).await?;
    let rows = stats::per_listing(&state.pool, range.from, range.to).await?;
    Ok(axum::Json(rows))
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProjectionView {
    pub name: String,
    /// live | rebuilding | failed | stopped
    pub state: String,
    pub generation: Option<i64>,
    pub position: i64,
    pub head: i64,
    pub lag_events: i64,
    pub lag_seconds: f64,
    pub owner: Option<String>,
    pub error: Option<String>,
    pub error_position: Option<i64>,
    pub error_event_type: Option<String>,
    /// The generation being rebuilt and its position.
    pub rebuilding_generation: Option<i64>,
    pub rebuilding_position: Option<i64>,
}

/// Every projection's state, position and lag (analysts, admins).
#[utoipa::path(get, path = "/projections", tag = "analyst", security(("bearer" = [])),
    responses(
        (status = 200, description = "Projections", body = Vec<ProjectionView>),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn projections(
    State(state): State<AppState>,
    _caller: Require<AnalystOrAdmin>,
) -> Result<axum::Json<Vec<ProjectionView>>, ApiError> {
    let status = tessera_projections::status(&state.pool).await?;
    Ok(axum::Json(
        status
            .into_iter()
            .map(|s| ProjectionView {
                name: s.name,
                state: s.state,
                generation: s.generation,
                position: s.position,
                head: s.head,
                lag_events: s.lag_events,
                lag_seconds: s.lag_seconds,
                owner: s.owner,
                error: s.error,
                error_position: s.error_position,
                error_event_type: s.error_event_type,
                rebuilding_generation: s.rebuilding.map(|r| r.0),
                rebuilding_position: s.rebuilding.map(|r| r.1),
            })
            .collect(),
    ))
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RebuildRequest {
    /// Projections to rebuild; empty with `all` for every one.
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub all: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RebuildStarted {
    pub projections: Vec<String>,
}

/// Start a zero-downtime rebuild (analysts, admins); follow it at `/projections`.
#[utoipa::path(post, path = "/projections/rebuild", tag = "analyst", security(("bearer" = [])),
    request_body = RebuildRequest,
    responses(
        (status = 202, description = "Rebuild started", body = RebuildStarted),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn rebuild(
    State(state): State<AppState>,
    _caller: Require<AnalystOrAdmin>,
    ApiJson(req): ApiJson<RebuildRequest>,
) -> Result<(StatusCode, axum::Json<RebuildStarted>), ApiError> {
    if req.all != req.names.is_empty() {
        return Err(invalid("names", "name projections, or set `all`, not both"));
    }
    let names = start_rebuild(&state, &req.names)?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(RebuildStarted { projections: names }),
    ))
}

/// Starts rebuilding the projections `names` (every one when empty) in the background;
/// returns their names. Follow it with [`tessera_projections::status`].
pub fn start_rebuild(state: &AppState, names: &[String]) -> Result<Vec<String>, ApiError> {
    let selected = tessera_projections::select(tessera_projections::all(&state.index_root), names)?;
    let names: Vec<String> = selected.iter().map(|p| p.name().to_owned()).collect();
    let (pool, store) = (state.pool.clone(), state.store.clone());
    tokio::spawn(async move {
        match tessera_projections::rebuild(&pool, store, &selected, &|_| {}).await {
            Ok(report) => tracing::info!(
                projections = ?report.projections,
                events = report.events,
                seconds = report.seconds,
                "rebuild finished"
            ),
            Err(e) => tracing::error!(error = %e, "rebuild failed"),
        }
    });
    Ok(names)
}
