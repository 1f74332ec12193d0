//! Every route of `/api/v1`, each documented for OpenAPI (utoipa) where it is declared.

pub mod account;
pub mod admin;
pub mod audit;
pub mod bookings;
pub mod catalog;
pub mod ops;

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

/// The `Idempotency-Key` header, if present (1 to 255 visible ASCII characters).
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 => Ok(Some(k.to_owned())),
        _ => Err(ApiError::BadRequest {
            code: &crate::http::codes::REQUEST_INVALID_IDEMPOTENCY_KEY,
            detail: "an Idempotency-Key has 1 to 255 visible ASCII characters".into(),
        }),
    }
}

/// Runs a command at most once per (caller, scope, key): a retry with the same key and request
/// gets the first answer (success or business refusal) back; the same key with another request
/// is refused. Without a key the command simply runs with a fresh id.
pub async fn once<T, F>(
    state: &AppState,
    caller: &Caller,
    scope: &str,
    key: Option<String>,
    request: &impl Serialize,
    run: F,
) -> Result<Response, ApiError>
where
    T: Serialize,
    F: AsyncFnOnce(Uuid) -> Result<(StatusCode, i64, T), ApiError>,
{
    state.limit_commands(caller.user_id.0)?;
    let Some(key) = key else {
        let (status, position, body) = run(new_command_id()).await?;
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
    let stored = match run(command_id).await {
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
