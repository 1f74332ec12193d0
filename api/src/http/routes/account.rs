//! Accounts and tokens; a user's own loyalty; the leaderboard.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use serde::{Deserialize, Serialize};
use tessera_commands::error::CommandError;
use tessera_commands::users;
use tessera_domain::user::User;
use tessera_domain::values::UserId;
use tessera_log::clock::new_command_id;
pub use tessera_projections::models::loyalty::{
    self, LeaderboardEntry, LoyaltyAccount, PointsEntry,
};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::CommandResult;
use crate::http::auth::Require;
use crate::http::auth::roles::Customer;
use crate::http::auth::{self, Caller};
use crate::http::error::ApiError;
use crate::http::positions::{MinPosition, MinPositionHeader, reads};
use crate::http::{Accepted, ApiJson, ApiPath, ApiQuery, AppState, ClientAddr};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(me, edit_me))
        .routes(routes!(change_my_password))
        .routes(routes!(change_my_email))
        .routes(routes!(resend_verification))
        .routes(routes!(verify_email))
        .routes(routes!(my_wishlist))
        .routes(routes!(save_listing, unsave_listing))
        .routes(routes!(request_password_reset))
        .routes(routes!(confirm_password_reset))
        .routes(routes!(my_loyalty))
        .routes(routes!(my_points_history))
        .routes(routes!(leaderboard))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub email: String,
    pub display_name: String,
    /// 10 to 256 characters.
    pub password: String,
    /// The user who referred this one (they earn points).
    #[serde(default)]
    pub referred_by: Option<Uuid>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Registered {
    pub user_id: Uuid,
    #[serde(flatten)]
    pub result: CommandResult,
}

/// Register a customer account.
#[utoipa::path(post, path = "/auth/register", tag = "auth", request_body = RegisterRequest,
    responses(
        (status = 201, description = "Registered", body = Registered),
        (status = "4XX", description = "Refused", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ))]
async fn register(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<Accepted<Registered>, ApiError> {
    state.limit_login(&req.email, client)?;
    let ctx = tessera_commands::handler::CommandContext::new(
        new_command_id(),
        "anonymous",
        state.clock.now(),
    );
    let (user_id, executed) = users::register_user(
        &*state.store,
        &req.email,
        &req.display_name,
        &req.password,
        req.referred_by.map(UserId),
        &ctx,
    )
    .await?;
    Ok(Accepted {
        status: StatusCode::CREATED,
        position: executed.position.0 as i64,
        body: Registered {
            user_id: user_id.0,
            result: CommandResult::from(&executed),
        },
    })
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Tokens {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Use once at `/auth/refresh` for a new pair.
    pub refresh_token: String,
    pub user_id: Uuid,
    pub roles: Vec<String>,
}

fn role_names(user: &User) -> Vec<String> {
    user.roles
        .iter()
        .map(|r| format!("{r:?}").to_lowercase())
        .collect()
}

async fn tokens(state: &AppState, user: &User, family: Uuid) -> Result<Tokens, ApiError> {
    let access_token = state.keys.issue(user, family, state.clock.now())?;
    let refresh_token =
        auth::issue_refresh(&state.pool, user.id, family, state.keys.refresh_ttl).await?;
    Ok(Tokens {
        access_token,
        token_type: "Bearer".into(),
        expires_in: state.keys.access_ttl.as_secs(),
        refresh_token,
        user_id: user.id.0,
        roles: role_names(user),
    })
}

/// Log in with e-mail and password (argon2id); returns an access and a refresh token.
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = Tokens),
        (status = 401, description = "Wrong e-mail or password", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts (see Retry-After)", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ))]
async fn login(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<axum::Json<Tokens>, ApiError> {
    state.limit_login(&req.email, client)?;
    let user = users::authenticate(&*state.store, &req.email, &req.password).await?;
    Ok(axum::Json(tokens(&state, &user, Uuid::new_v4()).await?))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// Exchange a refresh token for a new pair. A token works once; reusing one revokes its family.
#[utoipa::path(post, path = "/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses(
        (status = 200, description = "New tokens", body = Tokens),
        (status = 401, description = "Invalid, expired, revoked or reused token", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ))]
async fn refresh(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> Result<axum::Json<Tokens>, ApiError> {
    let auth::Rotated {
        user: user_id,
        family,
        issued_at,
    } = auth::rotate_refresh(&state.pool, &req.refresh_token).await?;
    let pool = &state.pool;
    let ended = async |why: &'static str| -> Result<axum::Json<Tokens>, ApiError> {
        auth::revoke_family(pool, family).await?;
        Err(ApiError::Unauthenticated(why.to_owned()))
    };
    let user = match users::current_user(&*state.store, user_id).await {
        Ok(u) => u,
        Err(e) if e.is_refusal() => return ended("the account no longer exists").await,
        Err(e) => return Err(e.into()),
    };
    // The log decides, even if revoking the sessions after a suspension or a password change
    // did not happen (a crash between the two).
    if user.suspended {
        return ended("the account is suspended").await;
    }
    if let Some(change) = user.sessions_ended
        && issued_at < change.at
        && change.kept != Some(family)
    {
        return ended("this session ended when the account's password changed").await;
    }
    Ok(axum::Json(tokens(&state, &user, family).await?))
}

/// Log out: revokes the refresh token's whole family.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", request_body = RefreshRequest,
    responses(
        (status = 204, description = "Logged out"),
        (status = "4XX", description = "Refused", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ))]
async fn logout(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> Result<Response, ApiError> {
    if let Some(family) = auth::family_of(&state.pool, &req.refresh_token).await? {
        auth::revoke_family(&state.pool, family).await?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Me {
    pub user_id: Uuid,
    pub email: String,
    pub display_name: String,
    pub roles: Vec<String>,
    /// `+` and digits, when given.
    pub phone: Option<String>,
    /// The language of messages (`en`, `de`).
    pub locale: String,
    /// Whether the address is confirmed (its link was opened); paying needs it.
    pub email_verified: bool,
}

impl Me {
    fn of(user: &User) -> Self {
        Self {
            user_id: user.id.0,
            email: user.email.as_str().to_owned(),
            display_name: user.display_name.clone(),
            roles: role_names(user),
            phone: user.phone.clone(),
            locale: user.preferences.locale.as_str().to_owned(),
            email_verified: user.email_verified,
        }
    }
}

/// The calling user.
#[utoipa::path(get, path = "/me", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = Me),
        (status = "4XX", description = "Refused", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ))]
async fn me(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<Me>, ApiError> {
    let user = users::current_user(&*state.store, caller.user_id).await?;
    Ok(axum::Json(Me::of(&user)))
}

/// Present and `null` are different: `null` removes the value, absent leaves it.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditMe {
    /// 1 to 100 characters.
    #[serde(default)]
    pub display_name: Option<String>,
    /// `+` and 6 to 15 digits (spaces, dashes, dots and brackets are dropped); `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub phone: Option<Option<String>>,
    /// The language of messages (`en`, `de`).
    #[serde(default)]
    pub locale: Option<String>,
}

/// Change my profile: what is given of display name, phone and language (personal data stays
/// encrypted under the person's own key). Answers the profile as it is now.
#[utoipa::path(patch, path = "/me", tag = "auth", security(("bearer" = [])),
    request_body = EditMe,
    responses(
        (status = 200, description = "The caller, changed", body = Me),
        (status = "4XX", description = "Refused", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ))]
async fn edit_me(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<EditMe>,
) -> Result<axum::Json<Me>, ApiError> {
    state.limit_commands(caller.user_id.0)?;
    let locale = req
        .locale
        .as_deref()
        .map(|l| {
            tessera_domain::user::Locale::parse(l).ok_or_else(|| {
                ApiError::Invalid(vec![crate::http::error::FieldError {
                    field: "locale".into(),
                    message: "one of: en, de".into(),
                }])
            })
        })
        .transpose()?;
    let ctx = tessera_commands::handler::CommandContext::new(
        new_command_id(),
        caller.actor(),
        state.clock.now(),
    );
    users::edit_profile(
        &*state.store,
        caller.user_id,
        req.display_name,
        req.phone,
        &ctx,
    )
    .await?;
    if let Some(locale) = locale {
        let user = users::current_user(&*state.store, caller.user_id).await?;
        if user.preferences.locale != locale {
            let ctx = tessera_commands::handler::CommandContext::new(
                new_command_id(),
                caller.actor(),
                state.clock.now(),
            );
            users::set_notification_preferences(
                &*state.store,
                caller.user_id,
                locale,
                user.preferences.marketing,
                &ctx,
            )
            .await?;
        }
    }
    let user = users::current_user(&*state.store, caller.user_id).await?;
    Ok(axum::Json(Me::of(&user)))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    pub current_password: String,
    /// 10 to 256 characters.
    pub new_password: String,
}

/// Change my password. Every other session ends at once (their access tokens are refused and
/// their refresh tokens revoked); the calling session goes on.
#[utoipa::path(post, path = "/me/password", tag = "auth", security(("bearer" = [])),
    request_body = PasswordChange,
    responses(
        (status = 200, description = "Changed", body = CommandResult),
        (status = "4XX", description = "Refused", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ))]
async fn change_my_password(
    State(state): State<AppState>,
    caller: Caller,
    ClientAddr(client): ClientAddr,
    ApiJson(req): ApiJson<PasswordChange>,
) -> Result<Accepted<CommandResult>, ApiError> {
    // Guessing the current password here is guessing it at login: the same limit.
    let user = users::current_user(&*state.store, caller.user_id).await?;
    state.limit_login(user.email.as_str(), client)?;
    let ctx = tessera_commands::handler::CommandContext::new(
        new_command_id(),
        caller.actor(),
        state.clock.now(),
    );
    let hash = users::hash_password(req.new_password).await?;
    let executed = users::change_password(
        &*state.store,
        caller.user_id,
        Some(req.current_password),
        hash,
        caller.session,
        &ctx,
    )
    .await?;
    auth::revoke_sessions(&state.pool, caller.user_id, caller.session).await?;
    state.principals.forget(caller.user_id.0).await;
    Ok(Accepted::ok(&executed))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailChange {
    pub current_password: String,
    /// The new address; it is unconfirmed until the link sent to it is opened.
    pub email: String,
}

/// Change my e-mail address (with my password). The new address must be free; the old one is
/// free for others at once. The new address is unconfirmed until the link sent to it is
/// opened (paying waits for that); login uses the new address from now on.
#[utoipa::path(post, path = "/me/email", tag = "auth", security(("bearer" = [])),
    request_body = EmailChange,
    responses(
        (status = 200, description = "Changed; a confirmation link is on its way to the new address", body = CommandResult),
        (status = "4XX", description = "Refused", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ))]
async fn change_my_email(
    State(state): State<AppState>,
    caller: Caller,
    ClientAddr(client): ClientAddr,
    ApiJson(req): ApiJson<EmailChange>,
) -> Result<Accepted<CommandResult>, ApiError> {
    let user = users::current_user(&*state.store, caller.user_id).await?;
    // Guessing the current password here is guessing it at login: the same limit.
    state.limit_login(user.email.as_str(), client)?;
    if !users::verify_password(req.current_password, user.password_hash.clone()).await {
        return Err(CommandError::from(tessera_domain::user::UserError::WrongPassword).into());
    }
    let ctx = tessera_commands::handler::CommandContext::new(
        new_command_id(),
        caller.actor(),
        state.clock.now(),
    );
    let executed = users::change_email(&*state.store, caller.user_id, &req.email, &ctx).await?;
    state.principals.forget(caller.user_id.0).await;
    Ok(Accepted::ok(&executed))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VerificationSent {
    pub message: String,
}

/// Send me a new link confirming my address (it works for 7 days; earlier links keep working
/// until they expire). Rate-limited like logins.
#[utoipa::path(post, path = "/me/email/verification", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 202, description = "A link is on its way", body = VerificationSent),
        (status = 409, description = "`user.already_verified`", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = "4XX", description = "Refused", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ))]
async fn resend_verification(
    State(state): State<AppState>,
    caller: Caller,
    ClientAddr(client): ClientAddr,
) -> Result<(StatusCode, axum::Json<VerificationSent>), ApiError> {
    let user = users::current_user(&*state.store, caller.user_id).await?;
    if user.email_verified {
        return Err(CommandError::from(tessera_domain::user::UserError::AlreadyVerified).into());
    }
    state.limit_login(user.email.as_str(), client)?;
    let Some(config) = state.notify.as_deref() else {
        return Err(ApiError::Unavailable(
            "this deployment sends no messages".into(),
        ));
    };
    tessera_notify::direct::send_verification(
        &*state.store,
        &state.pool,
        &state.vault,
        config,
        caller.user_id,
        Uuid::new_v4(),
        state.clock.now(),
    )
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(VerificationSent {
            message: "a link confirming your address is on its way".into(),
        }),
    ))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyEmail {
    /// The token of the link.
    pub token: String,
}

/// Confirm an address with the token of the link sent to it (no login needed: the link is the
/// proof). Confirming again answers the same.
#[utoipa::path(post, path = "/auth/verify-email", tag = "auth", request_body = VerifyEmail,
    responses(
        (status = 200, description = "Confirmed", body = CommandResult),
        (status = 400, description = "`auth.verification_link_invalid`: forged, expired, or for an address the account no longer has", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = "4XX", description = "Refused", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ))]
async fn verify_email(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<VerifyEmail>,
) -> Result<Accepted<CommandResult>, ApiError> {
    let invalid = || {
        ApiError::BadRequest {
        code: &crate::http::codes::AUTH_VERIFICATION_LINK_INVALID,
        detail: "this link is not one the platform made, has expired, or is for an address the account no longer has".into(),
    }
    };
    let now = state.clock.now();
    let user = tessera_notify::verify::user_of(&req.token).ok_or_else(invalid)?;
    let Ok(u) = users::current_user(&*state.store, user).await else {
        return Err(invalid());
    };
    if !tessera_notify::verify::verify(
        state.keys.unsubscribe_key(),
        &req.token,
        user,
        u.email.as_str(),
        now,
    ) {
        return Err(invalid());
    }
    let ctx = tessera_commands::handler::CommandContext::new(new_command_id(), "anonymous", now)
        .with_reason("address confirmed by its link");
    let executed = users::verify_email(&*state.store, user, &u.email, &ctx).await?;
    state.principals.forget(user.0).await;
    Ok(Accepted::ok(&executed))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    pub email: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ResetRequested {
    /// Always the same words, whether or not the address has an account.
    pub message: String,
}

/// Ask for a password-reset link by e-mail. The answer is the same whether or not the address
/// has an account; the link works once, for an hour; at most three links per account and
/// hour, and requests are rate-limited like logins.
#[utoipa::path(post, path = "/auth/password-reset", tag = "auth", request_body = ResetRequest,
    responses(
        (status = 202, description = "If the address has an account, a link is on its way", body = ResetRequested),
        (status = 429, description = "Too many attempts (see Retry-After)", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = "4XX", description = "Refused", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ))]
async fn request_password_reset(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    ApiJson(req): ApiJson<ResetRequest>,
) -> Result<(StatusCode, axum::Json<ResetRequested>), ApiError> {
    state.limit_login(&req.email, client)?;
    // The work happens after the answer, so its time does not tell whether an account exists.
    let email = req.email.clone();
    let worker = state.clone();
    tokio::spawn(async move {
        if let Err(e) = send_reset(&worker, &email).await {
            tracing::warn!(error = %e, "a password-reset link was not written");
        }
    });
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(ResetRequested {
            message: "if the address has an account, a link to reset its password is on its way"
                .into(),
        }),
    ))
}

/// Writes a reset link to the account of `email`, if there is one (not erased).
async fn send_reset(state: &AppState, email: &str) -> Result<(), ApiError> {
    let Some(config) = state.notify.as_deref() else {
        tracing::warn!("a password reset was asked for, but this deployment sends no messages");
        return Ok(());
    };
    let Some(user) = users::find_by_email(&*state.store, email).await? else {
        return Ok(());
    };
    let now = state.clock.now();
    let Some(token) = auth::issue_reset(&state.pool, user, now).await? else {
        tracing::info!(user = %user.0, "password-reset links are over their hourly limit");
        return Ok(());
    };
    let link = format!("{}/reset-password?token={token}", config.base_url);
    let expires = now + chrono::TimeDelta::from_std(auth::RESET_TTL).unwrap_or_default();
    let context = move |locale| {
        serde_json::json!({
            "link": link,
            "expires": tessera_notify::format::when(expires, locale),
        })
    };
    tessera_notify::direct::tell_user(
        &*state.store,
        &state.pool,
        &state.vault,
        config,
        user,
        tessera_notify::Template::PasswordReset,
        &context,
        Uuid::new_v4(),
        now,
    )
    .await?;
    Ok(())
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetConfirm {
    /// The token of the link.
    pub token: String,
    /// 10 to 256 characters.
    pub new_password: String,
}

/// Set a new password with a reset link's token. The token works once and for an hour; every
/// session of the account ends.
#[utoipa::path(post, path = "/auth/password-reset/confirm", tag = "auth", request_body = ResetConfirm,
    responses(
        (status = 200, description = "The password is changed", body = CommandResult),
        (status = 400, description = "The link is unknown, used or expired", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = "4XX", description = "Refused", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ))]
async fn confirm_password_reset(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ResetConfirm>,
) -> Result<Accepted<CommandResult>, ApiError> {
    // A weak password is refused before the link is spent.
    let hash = users::hash_password(req.new_password).await?;
    let now = state.clock.now();
    let Some(user) = auth::use_reset(&state.pool, &req.token, now).await? else {
        return Err(ApiError::BadRequest {
            code: &crate::http::codes::AUTH_RESET_LINK_INVALID,
            detail: "this password-reset link is unknown, was used already or has expired".into(),
        });
    };
    let ctx = tessera_commands::handler::CommandContext::new(new_command_id(), "anonymous", now)
        .with_reason("password reset by e-mail link");
    let executed = users::change_password(&*state.store, user, None, hash, None, &ctx).await?;
    auth::revoke_sessions(&state.pool, user, None).await?;
    state.principals.forget(user.0).await;
    Ok(Accepted::ok(&executed))
}

/// My points balance and badges.
#[utoipa::path(get, path = "/me/loyalty", tag = "loyalty", security(("bearer" = [])),
    params(MinPositionHeader),
    responses(
        (status = 200, description = "Balance and badges", body = LoyaltyAccount),
        (status = "4XX", description = "Refused", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ))]
async fn my_loyalty(
    State(state): State<AppState>,
    caller: Require<Customer>,
    min: MinPosition,
) -> Result<axum::Json<LoyaltyAccount>, ApiError> {
    state.read_after(reads::LOYALTY, min).await?;
    Ok(axum::Json(
        loyalty::account(&state.pool, caller.user_id.0).await?,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// At most 100 (default 20).
    pub limit: Option<i64>,
    /// Entries before this position (cursor from the previous page).
    pub before: Option<i64>,
}

pub(crate) fn page_limit(page: &Page) -> Result<i64, ApiError> {
    match page.limit {
        None => Ok(20),
        Some(n) if (1..=100).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::Invalid(vec![crate::http::error::FieldError {
            field: "limit".into(),
            message: "limit is 1 to 100".into(),
        }])),
    }
}

/// My points history, newest first (cursor: `before` = the last position seen).
#[utoipa::path(get, path = "/me/loyalty/history", tag = "loyalty", security(("bearer" = [])), params(MinPositionHeader, Page),
    responses(
        (status = 200, description = "History entries", body = Vec<PointsEntry>),
        (status = "4XX", description = "Refused", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ))]
async fn my_points_history(
    State(state): State<AppState>,
    caller: Require<Customer>,
    min: MinPosition,
    ApiQuery(page): ApiQuery<Page>,
) -> Result<axum::Json<Vec<PointsEntry>>, ApiError> {
    state.read_after(reads::LOYALTY, min).await?;
    let rows = loyalty::history(
        &state.pool,
        caller.user_id.0,
        page.before,
        page_limit(&page)?,
    )
    .await?;
    Ok(axum::Json(rows))
}

/// The loyalty leaderboard (top 100).
#[utoipa::path(get, path = "/loyalty/leaderboard", tag = "loyalty", params(MinPositionHeader), security(("bearer" = [])),
    responses(
        (status = 200, description = "Leaderboard", body = Vec<LeaderboardEntry>),
        (status = "4XX", description = "Refused", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ))]
async fn leaderboard(
    State(state): State<AppState>,
    _caller: Caller,
    min: MinPosition,
) -> Result<axum::Json<Vec<LeaderboardEntry>>, ApiError> {
    state.read_after(reads::LOYALTY, min).await?;
    let rows = loyalty::leaderboard(&state.pool).await?;
    Ok(axum::Json(rows))
}

/// A saved listing: the catalog's view of it, or `null` while the catalog has not caught up with
/// it (or no longer shows it).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WishlistEntry {
    pub listing_id: Uuid,
    pub listing: Option<super::catalog::ListingView>,
}

/// My wishlist, in the order saved (from my stream: a listing saved a moment ago is on it).
#[utoipa::path(get, path = "/me/wishlist", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 200, description = "Saved listings", body = Vec<WishlistEntry>),
        (status = "4XX", description = "Refused", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ))]
async fn my_wishlist(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<Vec<WishlistEntry>>, ApiError> {
    let user = users::current_user(&*state.store, caller.user_id).await?;
    // One query for the whole list (up to 500 entries), then in the order saved.
    let ids: Vec<Uuid> = user.wishlist.iter().map(|l| l.0).collect();
    let mut found: std::collections::HashMap<Uuid, _> =
        super::catalog::catalog::listings(&state.pool, &ids)
            .await
            .map_err(tessera_projections::ProjectionError::from)?
            .into_iter()
            .map(|l| (l.listing_id, l))
            .collect();
    Ok(axum::Json(
        ids.into_iter()
            .map(|listing_id| WishlistEntry {
                listing_id,
                listing: found.remove(&listing_id),
            })
            .collect(),
    ))
}

async fn wish(
    state: &AppState,
    caller: &Caller,
    listing_id: Uuid,
    save: bool,
) -> Result<Accepted<CommandResult>, ApiError> {
    state.limit_commands(caller.user_id.0)?;
    let ctx = tessera_commands::handler::CommandContext::new(
        new_command_id(),
        caller.actor(),
        state.clock.now(),
    );
    let executed = users::wish(
        &*state.store,
        caller.user_id,
        tessera_domain::values::ListingId(listing_id),
        save,
        &ctx,
    )
    .await?;
    Ok(Accepted::ok(&executed))
}

/// Save a published listing on my wishlist (saving it again changes nothing; at most 500).
#[utoipa::path(put, path = "/me/wishlist/{listing_id}", tag = "auth", security(("bearer" = [])),
    params(("listing_id" = Uuid, Path, description = "The listing")),
    responses(
        (status = 200, description = "Saved", body = CommandResult),
        (status = "4XX", description = "Refused", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ))]
async fn save_listing(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(listing_id): ApiPath<Uuid>,
) -> Result<Accepted<CommandResult>, ApiError> {
    wish(&state, &caller, listing_id, true).await
}

/// Take a listing off my wishlist (if it is there).
#[utoipa::path(delete, path = "/me/wishlist/{listing_id}", tag = "auth", security(("bearer" = [])),
    params(("listing_id" = Uuid, Path, description = "The listing")),
    responses(
        (status = 200, description = "Taken off", body = CommandResult),
        (status = "4XX", description = "Refused", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ))]
async fn unsave_listing(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(listing_id): ApiPath<Uuid>,
) -> Result<Accepted<CommandResult>, ApiError> {
    wish(&state, &caller, listing_id, false).await
}
