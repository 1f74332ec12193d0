//! Every route of `/api/v1`, each documented for OpenAPI (utoipa) where it is declared.

pub mod account;
pub mod admin;
pub mod audit;
pub mod bookings;
pub mod catalog;
pub mod documents;
pub mod money;
pub mod notifications;
pub mod ops;
pub mod provider;
pub mod tickets;
pub mod webhooks;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tessera_commands::handler::{CommandContext, Executed};
use tessera_commands::idempotency::Claim;
use tessera_log::clock::new_command_id;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use uuid::Uuid;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, Problem, problem_response};
use super::positions::POSITION_HEADER;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tessera API",
        description = "Book travel packages and local experiences. Commands answer with the log \
position of their last event (`Tessera-Position`); queries accept `Tessera-Min-Position` (or \
`min_position`) and wait, bounded, until the read models have caught up with it. Errors are \
RFC 9457 problem details with a stable `code`."
    ),
    modifiers(&BearerAuth),
    components(schemas(Problem, super::error::FieldError)),
    tags(
        (name = "auth", description = "Accounts and tokens"),
        (name = "catalog", description = "Search and listing details"),
        (name = "provider", description = "Providers' listings and slots"),
        (name = "bookings", description = "Customers' bookings"),
        (name = "payments", description = "Payment provider callbacks"),
        (name = "loyalty", description = "Points, badges, leaderboard"),
        (name = "admin", description = "Compensating commands, roles, statistics"),
        (name = "audit", description = "Auditors: histories, time travel, log browsing, verification, exports"),
        (name = "analyst", description = "Projection status and rebuilds"),
        (name = "webhooks", description = "Webhook endpoints for integrators (Standard Webhooks); payloads under `webhooks`"),
    )
)]
#[derive(Debug)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Every `/api/v1` route with its documentation.
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(account::router())
        .merge(catalog::router())
        .merge(bookings::router())
        .merge(admin::router())
        .merge(audit::router())
        .merge(money::router())
        .merge(documents::router())
        .merge(notifications::router())
        .merge(webhooks::router())
        .merge(provider::router())
        .merge(tickets::router())
}

/// What a command answers with, besides its own fields.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CommandResult {
    /// Log position of the command's last event: pass it as `Tessera-Min-Position` to read it.
    pub position: i64,
    /// True when this was a retry of a command that had already been applied.
    pub replayed: bool,
}

impl From<&Executed> for CommandResult {
    fn from(e: &Executed) -> Self {
        Self {
            position: e.position.0 as i64,
            replayed: e.replayed,
        }
    }
}

/// A command of `caller` run at most once per idempotency key (see [`once`]) whose answer is
/// 200 with its [`CommandResult`]; `reason`, when given, must not be blank and is recorded on
/// its events (what every admin compensation needs).
pub async fn run_once(
    state: &AppState,
    caller: &Caller,
    scope: &str,
    key: IdempotencyKey,
    request: &impl Serialize,
    reason: Option<&str>,
    run: impl AsyncFnOnce(CommandContext) -> Result<Executed, ApiError>,
) -> Result<Response, ApiError> {
    let reason = reason.map(required_reason).transpose()?;
    once(
        state,
        caller,
        scope,
        key,
        request,
        async |ctx: CommandContext| {
            let ctx = match reason {
                Some(why) => ctx.with_reason(why),
                None => ctx,
            };
            let executed = run(ctx).await?;
            Ok(answered(StatusCode::OK, &executed))
        },
    )
    .await
}

/// A reason an admin gave: trimmed, 1 to 1,000 characters.
pub fn required_reason(r: &str) -> Result<String, ApiError> {
    let r = r.trim();
    if r.is_empty() || r.chars().count() > 1000 {
        return Err(ApiError::Invalid(vec![super::error::FieldError {
            field: "reason".into(),
            message: "a reason of 1 to 1000 characters is required".into(),
        }]));
    }
    Ok(r.to_owned())
}

/// A command's plain answer: its status, position and [`CommandResult`].
pub fn answered(status: StatusCode, executed: &Executed) -> (StatusCode, i64, CommandResult) {
    (
        status,
        executed.position.0 as i64,
        CommandResult::from(executed),
    )
}

/// The context of a command issued by `caller` with id `command_id`.
pub fn context(state: &AppState, caller: &Caller, command_id: Uuid) -> CommandContext {
    CommandContext::new(command_id, caller.actor(), state.clock.now())
}

/// A stored (or fresh) answer to a command under an idempotency key.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    status: u16,
    body: serde_json::Value,
    position: Option<i64>,
    problem: bool,
}

impl Stored {
    fn response(&self, replayed: bool) -> Response {
        // A command the log already held (a retry that lost its stored answer) is a replay too.
        let replayed = replayed
            || (!self.problem && self.body.get("replayed") == Some(&serde_json::Value::Bool(true)));
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        let mut response = if self.problem {
            match serde_json::from_value::<Problem>(self.body.clone()) {
                Ok(p) => problem_response(status, &p),
                Err(_) => (status, axum::Json(self.body.clone())).into_response(),
            }
        } else {
            let mut body = self.body.clone();
            // The header and the body say the same: a replayed answer says so in both.
            if replayed && let Some(flag) = body.get_mut("replayed") {
                *flag = serde_json::Value::Bool(true);
            }
            (status, axum::Json(body)).into_response()
        };
        if let Some(p) = self.position {
            response
                .headers_mut()
                .insert(POSITION_HEADER, HeaderValue::from(p));
        }
        if replayed {
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
        response
    }
}

/// The `Idempotency-Key` header, if present (1 to 255 visible ASCII characters); a malformed
/// one is refused with 400 before the body is read (take it after the role extractor).
#[derive(Debug, Clone)]
pub struct IdempotencyKey(pub Option<String>);

impl IdempotencyKey {
    fn parse(headers: &HeaderMap) -> Result<Self, ApiError> {
        let Some(v) = headers.get("idempotency-key") else {
            return Ok(Self(None));
        };
        match v.to_str() {
            Ok(k) if !k.is_empty() && k.len() <= 255 => Ok(Self(Some(k.to_owned()))),
            _ => Err(ApiError::BadRequest {
                code: &crate::http::codes::REQUEST_INVALID_IDEMPOTENCY_KEY,
                detail: "an Idempotency-Key has 1 to 255 visible ASCII characters".into(),
            }),
        }
    }

    /// The key, for commands that take money or seats and must not run without one.
    pub fn required(&self) -> Result<String, ApiError> {
        self.0.clone().ok_or_else(|| ApiError::BadRequest {
            code: &crate::http::codes::REQUEST_IDEMPOTENCY_KEY_REQUIRED,
            detail: "this command needs an Idempotency-Key header".into(),
        })
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Self::parse(&parts.headers)
    }
}

/// Runs a command at most once per (caller, scope, key): a retry with the same key and request
/// gets the first answer (success or business refusal) back; the same key with another request
/// is refused. Without a key the command simply runs with a fresh id. `run` gets the command's
/// context (its id, the caller as actor, the time now).
pub async fn once<T, F>(
    state: &AppState,
    caller: &Caller,
    scope: &str,
    key: IdempotencyKey,
    request: &impl Serialize,
    run: F,
) -> Result<Response, ApiError>
where
    T: Serialize,
    F: AsyncFnOnce(CommandContext) -> Result<(StatusCode, i64, T), ApiError>,
{
    state.limit_commands(caller.user_id.0)?;
    let Some(key) = key.0 else {
        let (status, position, body) = run(context(state, caller, new_command_id())).await?;
        return Ok(super::Accepted {
            status,
            position,
            body,
        }
        .into_response());
    };
    let scope = format!("{scope}:{}", caller.user_id.0);
    let command_id = match state
        .idempotency
        .claim::<Stored>(&scope, &key, request)
        .await?
    {
        Claim::Done(stored) => return Ok(stored.response(true)),
        Claim::Run { command_id } => command_id,
    };
    let stored = match run(context(state, caller, command_id)).await {
        Ok((status, position, body)) => Stored {
            status: status.as_u16(),
            body: serde_json::to_value(&body)
                .map_err(|e| ApiError::Internal(format!("cannot encode a response: {e}")))?,
            position: Some(position),
            problem: false,
        },
        Err(e) if e.is_final() => {
            let (status, problem) = e.problem();
            Stored {
                status: status.as_u16(),
                body: serde_json::to_value(&problem).unwrap_or_default(),
                position: None,
                problem: true,
            }
        }
        Err(e) => return Err(e),
    };
    if stored.problem {
        state.idempotency.complete(&scope, &key, &stored).await?;
    } else {
        // The command's events are durable in the log: a lost result is replayed from it.
        state
            .idempotency
            .complete_after_log(&scope, &key, &stored)
            .await?;
    }
    Ok(stored.response(false))
}
