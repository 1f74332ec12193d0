//! Accounts and tokens; a user's own loyalty; the leaderboard.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use serde::{Deserialize, Serialize};
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
use crate::http::{Accepted, ApiJson, ApiQuery, AppState, ClientAddr};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(me))
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
    let access_token = state.keys.issue(user, state.clock.now())?;
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
    let (user_id, family) = auth::rotate_refresh(&state.pool, &req.refresh_token).await?;
    let user = match users::current_user(&*state.store, user_id).await {
        Ok(u) => u,
        Err(e) if e.is_refusal() => {
            auth::revoke_family(&state.pool, family).await?;
            return Err(ApiError::Unauthenticated(
                "the account no longer exists".into(),
            ));
        }
        Err(e) => return Err(e.into()),
    };
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
}

/// The calling user.
#[utoipa::path(get, path = "/me", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = Me),
        (status = "4XX", description = "Refused", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ))]
async fn me(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<Me>, ApiError> {
    let user = users::current_user(&*state.store, caller.user_id).await?;
    Ok(axum::Json(Me {
        user_id: user.id.0,
        email: user.email.as_str().to_owned(),
        display_name: user.display_name.clone(),
        roles: role_names(&user),
    }))
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
