//! Console sessions: a random token in an HttpOnly, SameSite=Strict cookie (Secure behind TLS),
//! of which the database keeps only the SHA-256; each session carries its own CSRF token,
//! which every console form posts back. Who the session's user is *now* (roles, suspension, a
//! password change that ended their sessions) is decided exactly as for an API token, by
//! [`Caller::standing`]; which pages and actions a role may use is decided by the API's own
//! role sets ([`RoleSet`]), so the console has no second permission matrix.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use tessera_domain::user::Role;

use super::ConsoleError;
use crate::http::AppState;
use crate::http::auth::{Caller, RoleSet};
use crate::http::error::ApiError;

/// The cookie's name.
pub const COOKIE: &str = "tessera_console";
/// How long a session lasts from login.
const LIFETIME_HOURS: i64 = 12;
const ALL_ROLES: [Role; 5] = [
    Role::Customer,
    Role::Provider,
    Role::Admin,
    Role::Auditor,
    Role::Analyst,
];

/// A signed-in console user.
#[derive(Debug, Clone)]
pub struct Session {
    pub caller: Caller,
    /// The token every form of this session carries.
    pub csrf: String,
    token_hash: Vec<u8>,
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Whether the request reached us over TLS (directly or through a proxy that says so).
fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

fn cookie(value: &str, max_age: i64, headers: &HeaderMap) -> HeaderValue {
    let secure = if over_tls(headers) { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("tessera_console=; Max-Age=0"))
}

/// Opens a session for `user_id`; returns the `Set-Cookie` value.
pub async fn open(
    state: &AppState,
    user_id: uuid::Uuid,
    headers: &HeaderMap,
) -> Result<HeaderValue, ApiError> {
    let token = random_token();
    let now: DateTime<Utc> = state.clock.now();
    // Sessions that ran out are of no use to anyone: each login clears them.
    sqlx::query("DELETE FROM console_sessions WHERE expires_at <= $1")
        .bind(now)
        .execute(&state.pool)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    sqlx::query(
        "INSERT INTO console_sessions (token_hash, user_id, csrf, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(hash(&token))
    .bind(user_id)
    .bind(random_token())
    .bind(now)
    .bind(now + Duration::hours(LIFETIME_HOURS))
    .execute(&state.pool)
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(cookie(&token, LIFETIME_HOURS * 3600, headers))
}

/// Ends `session`; returns the `Set-Cookie` value that clears the cookie.
pub async fn close(
    state: &AppState,
    session: &Session,
    headers: &HeaderMap,
) -> Result<HeaderValue, ApiError> {
    sqlx::query("DELETE FROM console_sessions WHERE token_hash = $1")
        .bind(&session.token_hash)
        .execute(&state.pool)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(cookie("", 0, headers))
}

fn token_of(headers: &HeaderMap) -> Option<&str> {
    cookie_value(headers, COOKIE)
}

fn cookie_value<'a>(headers: &'a HeaderMap, wanted: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == wanted)
        .map(|(_, value)| value)
        .filter(|v| !v.is_empty())
}

/// The cookie that carries the sign-in form's CSRF token (there is no session yet to keep it).
pub const LOGIN_COOKIE: &str = "tessera_console_login";

/// A fresh CSRF token for the sign-in form, and the `Set-Cookie` value that carries it too
/// (double submit: a cross-site form has the field but not the SameSite=Strict cookie).
pub fn login_token(headers: &HeaderMap) -> (String, HeaderValue) {
    let token = random_token();
    let secure = if over_tls(headers) { "; Secure" } else { "" };
    let cookie = HeaderValue::from_str(&format!(
        "{LOGIN_COOKIE}={token}; Path=/console/login; HttpOnly; SameSite=Strict; Max-Age=3600{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("tessera_console_login=; Max-Age=0"));
    (token, cookie)
}

/// Refuses a sign-in form whose CSRF token is not the one its cookie carries.
pub fn check_login_token(headers: &HeaderMap, posted: &str) -> Result<(), ConsoleError> {
    use aws_lc_rs::constant_time::verify_slices_are_equal;
    let Some(expected) = cookie_value(headers, LOGIN_COOKIE) else {
        return Err(ConsoleError::Csrf);
    };
    verify_slices_are_equal(expected.as_bytes(), posted.as_bytes()).map_err(|_| ConsoleError::Csrf)
}

/// The request's session, if its cookie names a live one.
pub async fn current(state: &AppState, headers: &HeaderMap) -> Result<Option<Session>, ApiError> {
    let Some(token) = token_of(headers) else {
        return Ok(None);
    };
    let token_hash = hash(token);
    let row: Option<(uuid::Uuid, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT user_id, csrf, created_at FROM console_sessions
         WHERE token_hash = $1 AND expires_at > $2",
    )
    .bind(&token_hash)
    .bind(state.clock.now())
    .fetch_optional(&state.pool)
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let Some((user_id, csrf, created_at)) = row else {
        return Ok(None);
    };
    match Caller::standing(
        state,
        user_id,
        created_at.timestamp_millis(),
        None,
        ALL_ROLES,
    )
    .await
    {
        Ok(caller) => Ok(Some(Session {
            caller,
            csrf,
            token_hash,
        })),
        // Suspended, erased, or signed out everywhere by a password change: the session is over.
        Err(ApiError::Unauthenticated(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A signed-in user who holds one of `R`'s roles: the same role sets as the API's routes.
/// Without a session the browser is sent to the login page; without the role it gets 403.
#[derive(Debug, Clone)]
pub struct Console<R: RoleSet> {
    pub session: Session,
    roles: std::marker::PhantomData<R>,
}

impl<R: RoleSet> std::ops::Deref for Console<R> {
    type Target = Session;
    fn deref(&self) -> &Session {
        &self.session
    }
}

impl<R: RoleSet> FromRequestParts<AppState> for Console<R> {
    type Rejection = ConsoleError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ConsoleError> {
        let Some(session) = current(state, &parts.headers).await? else {
            return Err(ConsoleError::SignIn);
        };
        session.caller.require(R::ROLES)?;
        Ok(Self {
            session,
            roles: std::marker::PhantomData,
        })
    }
}

/// Any signed-in user.
#[derive(Debug, Clone)]
pub struct SignedIn(pub Session);

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = ConsoleError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ConsoleError> {
        match current(state, &parts.headers).await? {
            Some(s) => Ok(Self(s)),
            None => Err(ConsoleError::SignIn),
        }
    }
}

impl Session {
    /// Refuses a form whose CSRF token is not this session's (compared in constant time).
    pub fn check_csrf(&self, posted: &str) -> Result<(), ConsoleError> {
        use aws_lc_rs::constant_time::verify_slices_are_equal;
        verify_slices_are_equal(self.csrf.as_bytes(), posted.as_bytes())
            .map_err(|_| ConsoleError::Csrf)
    }

    pub fn has(&self, roles: &[Role]) -> bool {
        roles.iter().any(|r| self.caller.has(*r))
    }
}
