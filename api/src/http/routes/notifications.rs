//! Messages: a user's preferences (language, optional messages), the one-click unsubscribe link
//! of optional messages (RFC 8058), and the outbox for admins and auditors (what each person
//! was told and when; dead letters retried or discarded by admins, with a reason).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tessera_commands::users;
use tessera_domain::user::Locale;
use tessera_log::clock::new_command_id;
use tessera_notify::outbox::{self, Change};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::CommandResult;
use crate::http::auth::roles::{Admin, AuditorOrAdmin};
use crate::http::auth::{Caller, Require};
use crate::http::codes;
use crate::http::error::{ApiError, FieldError, Problem};
use crate::http::{Accepted, ApiJson, ApiPath, ApiQuery, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(my_preferences, set_my_preferences))
        .routes(routes!(unsubscribe_page, unsubscribe))
        .routes(routes!(list_messages))
        .routes(routes!(outbox_stats))
        .routes(routes!(retry_message))
        .routes(routes!(discard_message))
}

fn db(e: sqlx::Error) -> ApiError {
    tessera_projections::ProjectionError::from(e).into()
}

/// How a user wants to be written to.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Preferences {
    /// The language of messages: `en` or `de`.
    pub locale: String,
    /// Whether optional messages (review invitations, points, badges) are wanted;
    /// transactional ones (bookings, payments, cancellations) always go.
    pub marketing: bool,
}

/// My message preferences.
#[utoipa::path(get, path = "/me/preferences", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's preferences", body = Preferences),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn my_preferences(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Preferences>, ApiError> {
    let user = users::current_user(&*state.store, caller.user_id).await?;
    Ok(Json(Preferences {
        locale: user.preferences.locale.as_str().into(),
        marketing: user.preferences.marketing,
    }))
}

/// Set my message preferences (an event on my stream).
#[utoipa::path(put, path = "/me/preferences", tag = "auth", security(("bearer" = [])),
    request_body = Preferences,
    responses(
        (status = 200, description = "Set", body = CommandResult),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn set_my_preferences(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<Preferences>,
) -> Result<Accepted<CommandResult>, ApiError> {
    let locale = Locale::parse(&req.locale).ok_or_else(|| {
        ApiError::Invalid(vec![FieldError {
            field: "locale".into(),
            message: "one of: en, de".into(),
        }])
    })?;
    let ctx = tessera_commands::handler::CommandContext::new(
        new_command_id(),
        format!("user:{}", caller.user_id),
        state.clock.now(),
    );
    let executed = users::set_notification_preferences(
        &*state.store,
        caller.user_id,
        locale,
        req.marketing,
        &ctx,
    )
    .await?;
    Ok(Accepted {
        status: StatusCode::OK,
        position: executed.position.0 as i64,
        body: CommandResult::from(&executed),
    })
}

fn unsubscribed_user(
    state: &AppState,
    token: &str,
) -> Result<tessera_domain::values::UserId, ApiError> {
    tessera_notify::unsubscribe::verify(state.keys.unsubscribe_key(), token).ok_or(
        ApiError::BadRequest {
            code: &codes::UNSUBSCRIBE_INVALID_LINK,
            detail: "this unsubscribe link is not one the platform made".into(),
        },
    )
}

/// The page behind an unsubscribe link: one button that unsubscribes (a GET changes nothing,
/// so that link checkers and previews cannot unsubscribe anyone).
#[utoipa::path(get, path = "/unsubscribe/{token}", tag = "auth",
    params(("token" = String, Path, description = "The signed token of the link")),
    responses(
        (status = 200, description = "A page with the unsubscribe button", body = String, content_type = "text/html"),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn unsubscribe_page(
    State(state): State<AppState>,
    ApiPath(token): ApiPath<String>,
) -> Result<Html<String>, ApiError> {
    unsubscribed_user(&state, &token)?;
    Ok(Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Unsubscribe</title></head>\
<body style=\"font-family: sans-serif; max-width: 36em; margin: 2em auto\">\
<h1>Stop optional messages?</h1><p>You will still receive messages about your bookings and payments.</p>\
<form method=\"post\" action=\"{token}\"><input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
<button type=\"submit\">Unsubscribe</button></form></body></html>"
    )))
}

/// Unsubscribe from optional messages in one click (RFC 8058: mail clients POST
/// `List-Unsubscribe=One-Click` here; no login, the link is signed).
#[utoipa::path(post, path = "/unsubscribe/{token}", tag = "auth",
    params(("token" = String, Path, description = "The signed token of the link")),
    responses(
        (status = 200, description = "Unsubscribed (also when already)", body = CommandResult),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn unsubscribe(
    State(state): State<AppState>,
    ApiPath(token): ApiPath<String>,
) -> Result<Response, ApiError> {
    let user_id = unsubscribed_user(&state, &token)?;
    let user = users::current_user(&*state.store, user_id).await?;
    let ctx = tessera_commands::handler::CommandContext::new(
        new_command_id(),
        "system:unsubscribe-link",
        state.clock.now(),
    );
    let executed = users::set_notification_preferences(
        &*state.store,
        user_id,
        user.preferences.locale,
        false,
        &ctx,
    )
    .await?;
    Ok(Accepted {
        status: StatusCode::OK,
        position: executed.position.0 as i64,
        body: CommandResult::from(&executed),
    }
    .into_response())
}

/// One message of the outbox, as admins and auditors see it (never its body).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OutboxMessage {
    pub id: Uuid,
    /// The message (see docs/notifications.md), e.g. `booking_confirmed`.
    pub template: String,
    pub recipient: Uuid,
    /// `null` once the recipient was erased.
    pub address: Option<String>,
    pub locale: String,
    /// An optional message (follows the opt-out).
    pub marketing: bool,
    pub booking_id: Option<Uuid>,
    pub subject: String,
    /// The event it was derived from.
    pub event_position: i64,
    pub event_type: String,
    pub created_at: DateTime<Utc>,
    /// Not sent before this (a reminder: 24 h before the slot).
    pub deliver_at: DateTime<Utc>,
    /// `pending`, `sent`, `dead` or `discarded`.
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
    /// Why it was discarded or retried, and by whom.
    pub note: Option<String>,
}

impl From<outbox::Row> for OutboxMessage {
    fn from(r: outbox::Row) -> Self {
        Self {
            id: r.id,
            template: r.template,
            recipient: r.recipient,
            address: r.address,
            locale: r.locale,
            marketing: r.marketing,
            booking_id: r.booking_id,
            subject: r.subject,
            event_position: r.event_position,
            event_type: r.event_type,
            created_at: r.created_at,
            deliver_at: r.deliver_at,
            status: r.status,
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at,
            last_error: r.last_error,
            sent_at: r.sent_at,
            note: r.note,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OutboxQuery {
    /// `pending`, `sent`, `dead` or `discarded`.
    pub status: Option<String>,
    pub recipient: Option<Uuid>,
    pub booking_id: Option<Uuid>,
    pub template: Option<String>,
    /// At most this many, newest first (1 to 1000; default 100).
    pub limit: Option<i64>,
}

/// The outbox: what each person was told and when, newest first (admins, auditors).
#[utoipa::path(get, path = "/admin/outbox", tag = "admin", security(("bearer" = [])),
    params(OutboxQuery),
    responses(
        (status = 200, description = "Messages", body = Vec<OutboxMessage>),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_messages(
    State(state): State<AppState>,
    _caller: Require<AuditorOrAdmin>,
    ApiQuery(q): ApiQuery<OutboxQuery>,
) -> Result<Json<Vec<OutboxMessage>>, ApiError> {
    Ok(Json(find_messages(&state, q).await?))
}

/// What `GET /admin/outbox` answers (the console's outbox page asks the same).
pub async fn find_messages(
    state: &AppState,
    q: OutboxQuery,
) -> Result<Vec<OutboxMessage>, ApiError> {
    if let Some(template) = &q.template {
        crate::http::error::storable("template", template)?;
    }
    if let Some(status) = &q.status
        && !["pending", "sent", "dead", "discarded"].contains(&status.as_str())
    {
        return Err(ApiError::Invalid(vec![FieldError {
            field: "status".into(),
            message: "one of: pending, sent, dead, discarded".into(),
        }]));
    }
    let mut rows = outbox::list(
        &state.pool,
        &outbox::Filter {
            status: q.status,
            recipient: q.recipient,
            booking: q.booking_id,
            template: q.template,
            limit: q.limit.unwrap_or(100),
        },
    )
    .await
    .map_err(db)?;
    outbox::reveal(&state.vault, &mut rows)
        .await
        .map_err(tessera_commands::error::CommandError::from)?;
    Ok(rows.into_iter().map(OutboxMessage::from).collect())
}

/// The queue at a glance.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OutboxStats {
    pub pending: i64,
    /// Pending and due now.
    pub due: i64,
    pub sent: i64,
    pub dead: i64,
    pub discarded: i64,
    /// Seconds the oldest due message has waited (0: none waits).
    pub oldest_due_seconds: i64,
}

/// Queue depth, age of the oldest waiting message, sent, dead (admins, auditors; also on
/// `/metrics`).
#[utoipa::path(get, path = "/admin/outbox/stats", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, description = "The outbox's counts", body = OutboxStats),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn outbox_stats(
    State(state): State<AppState>,
    _caller: Require<AuditorOrAdmin>,
) -> Result<Json<OutboxStats>, ApiError> {
    let s = outbox::stats(&state.pool, state.clock.now())
        .await
        .map_err(db)?;
    Ok(Json(OutboxStats {
        pending: s.pending,
        due: s.due,
        sent: s.sent,
        dead: s.dead,
        discarded: s.discarded,
        oldest_due_seconds: s.oldest_due_seconds,
    }))
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageAction {
    /// Why (recorded on the message with the admin).
    pub reason: String,
}

pub(crate) async fn change(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    reason: &str,
    retry: bool,
) -> Result<Json<OutboxMessage>, ApiError> {
    crate::http::error::storable("reason", reason)?;
    if reason.trim().is_empty() {
        return Err(ApiError::Command(
            tessera_commands::error::CommandError::ReasonRequired,
        ));
    }
    let note = format!(
        "{} by user:{}: {}",
        if retry { "retried" } else { "discarded" },
        caller.user_id,
        reason.trim()
    );
    let outcome = if retry {
        outbox::retry(&state.pool, id, state.clock.now(), &note).await
    } else {
        outbox::discard(&state.pool, id, &note).await
    }
    .map_err(db)?;
    match outcome {
        Change::Done => {}
        Change::NotFound => {
            return Err(ApiError::NotFound {
                what: "message",
                id: id.to_string(),
            });
        }
        Change::NotAllowed => {
            return Err(ApiError::Conflict {
                code: &codes::MESSAGE_WRONG_STATE,
                detail: format!(
                    "message {id} cannot be {} in its state",
                    if retry { "retried" } else { "discarded" }
                ),
            });
        }
    }
    tracing::info!(message = %id, admin = %caller.user_id, reason, retry, "outbox message changed by an admin");
    let row = outbox::get(&state.pool, id)
        .await
        .map_err(db)?
        .ok_or(ApiError::NotFound {
            what: "message",
            id: id.to_string(),
        })?;
    Ok(Json(row.into()))
}

/// Put a dead or discarded message back in the queue, due now (admins, with a reason).
#[utoipa::path(post, path = "/admin/outbox/{message_id}/retry", tag = "admin", security(("bearer" = [])),
    request_body = MessageAction,
    params(("message_id" = Uuid, Path, description = "The message")),
    responses(
        (status = 200, description = "Queued again", body = OutboxMessage),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn retry_message(
    State(state): State<AppState>,
    caller: Require<Admin>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<MessageAction>,
) -> Result<Json<OutboxMessage>, ApiError> {
    change(&state, &caller, id, &req.reason, true).await
}

/// Give up on a pending or dead message (admins, with a reason).
#[utoipa::path(post, path = "/admin/outbox/{message_id}/discard", tag = "admin", security(("bearer" = [])),
    request_body = MessageAction,
    params(("message_id" = Uuid, Path, description = "The message")),
    responses(
        (status = 200, description = "Discarded", body = OutboxMessage),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn discard_message(
    State(state): State<AppState>,
    caller: Require<Admin>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<MessageAction>,
) -> Result<Json<OutboxMessage>, ApiError> {
    change(&state, &caller, id, &req.reason, false).await
}
