//! The one place where errors become HTTP responses: RFC 9457 problem details
//! (`application/problem+json`) with a stable machine-readable `code`, field-level messages for
//! validation failures, and opaque bodies for server errors (logged once, with the request id).

use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tessera_commands::error::CommandError;
use tessera_domain::booking::BookingError;
use tessera_domain::listing::ListingError;
use tessera_domain::loyalty::LoyaltyError;
use tessera_domain::review::ReviewError;
use tessera_domain::slot::SlotError;
use tessera_domain::user::UserError;
use tessera_projections::ProjectionError;
use utoipa::ToSchema;

tokio::task_local! {
    /// The id of the request being served (set by the request-context middleware).
    pub static REQUEST_ID: String;
}

/// The request id of the current request, if any.
pub fn request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// One invalid field of a request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct FieldError {
    /// The field, as a JSON path (`seats`, `destination.lat`); empty for the whole body.
    pub field: String,
    pub message: String,
}

/// An RFC 9457 problem details body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type (`urn:tessera:problem:<code>`).
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Stable machine-readable code, e.g. `slot.sold_out`.
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Whether the same request may succeed if retried later.
    pub retryable: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{what} {id} does not exist")]
    NotFound { what: &'static str, id: String },
    #[error("the request is invalid")]
    Invalid(Vec<FieldError>),
    #[error("{detail}")]
    BadRequest { code: &'static str, detail: String },
    #[error("{detail}")]
    Conflict { code: &'static str, detail: String },
    #[error("too many requests; retry in {} s", retry_after.as_secs().max(1))]
    RateLimited { retry_after: Duration },
    #[error(
        "the read models have not reached position {wanted} yet ({projection} is at {at}); retry shortly"
    )]
    NotYetConsistent {
        projection: String,
        at: i64,
        wanted: i64,
    },
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("{0}")]
    Unavailable(String),
    #[error("no route {0}")]
    NoRoute(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("internal error: {0}")]
    Internal(String),
    /// An error answered outside our own types (an extractor or layer), kept with its status.
    #[error("{detail}")]
    Status {
        status: StatusCode,
        code: &'static str,
        detail: String,
    },
}

impl ApiError {
    /// The problem for an error response some layer or extractor produced as plain text.
    pub fn from_status(status: StatusCode, text: String) -> Self {
        use StatusCode as S;
        let detail = text.trim().chars().take(500).collect::<String>();
        match status {
            S::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge {
                limit: super::BODY_LIMIT,
            },
            S::UNSUPPORTED_MEDIA_TYPE => Self::UnsupportedMediaType,
            S::METHOD_NOT_ALLOWED => Self::MethodNotAllowed,
            S::SERVICE_UNAVAILABLE => Self::Unavailable(detail),
            s if s.is_server_error() => Self::Internal(detail),
            s => Self::Status {
                status: s,
                code: match s {
                    S::BAD_REQUEST => "request.bad_request",
                    S::UNAUTHORIZED => "auth.unauthenticated",
                    S::FORBIDDEN => "auth.forbidden",
                    S::NOT_FOUND => "request.no_route",
                    S::REQUEST_TIMEOUT => "request.timeout",
                    S::UNPROCESSABLE_ENTITY => "request.invalid",
                    S::TOO_MANY_REQUESTS => "request.rate_limited",
                    _ => "request.refused",
                },
                detail: if detail.is_empty() {
                    s.canonical_reason().unwrap_or("refused").to_owned()
                } else {
                    detail
                },
            },
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(format!("database: {e}"))
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        Self::Internal(format!("{e:#}"))
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => {
                // serde's message names the field and the path (`seats: invalid type …`).
                let text = std::error::Error::source(&e)
                    .map(ToString::to_string)
                    .unwrap_or_else(|| e.body_text());
                let (field, message) = match text.split_once(": ") {
                    Some((path, msg)) if !path.contains(' ') => (path.to_owned(), msg.to_owned()),
                    _ => (String::new(), text),
                };
                Self::Invalid(vec![FieldError { field, message }])
            }
            JsonRejection::JsonSyntaxError(e) => Self::BadRequest {
                code: "request.malformed_json",
                detail: std::error::Error::source(&e)
                    .map(ToString::to_string)
                    .unwrap_or_else(|| e.body_text()),
            },
            JsonRejection::MissingJsonContentType(_) => Self::UnsupportedMediaType,
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge {
                limit: super::BODY_LIMIT,
            },
            other => Self::BadRequest {
                code: "request.unreadable_body",
                detail: other.body_text(),
            },
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::BadRequest {
            code: "request.invalid_path",
            detail: r.body_text(),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::BadRequest {
            code: "request.invalid_query",
            detail: r.body_text(),
        }
    }
}

/// `CamelCase` variant name of a `Debug` rendering, as `snake_case`.
fn variant_code(debug: &str) -> String {
    let name: String = debug
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

struct Mapped {
    status: StatusCode,
    code: String,
    retryable: bool,
    errors: Vec<FieldError>,
}

fn mapped(status: StatusCode, code: impl Into<String>) -> Mapped {
    Mapped {
        status,
        code: code.into(),
        retryable: false,
        errors: Vec::new(),
    }
}

fn command(e: &CommandError) -> Mapped {
    use StatusCode as S;
    let domain = |area: &str, debug: String, status: StatusCode| {
        mapped(status, format!("{area}.{}", variant_code(&debug)))
    };
    match e {
        CommandError::Booking(b) => {
            let status = match b {
                BookingError::Value(_) | BookingError::EmptyRefund => S::UNPROCESSABLE_ENTITY,
                BookingError::NotPlaced => S::NOT_FOUND,
                _ => S::CONFLICT,
            };
            domain("booking", format!("{b:?}"), status)
        }
        CommandError::Slot(s) => {
            let status = match s {
                SlotError::InvalidTimes | SlotError::InvalidCapacity => S::UNPROCESSABLE_ENTITY,
                SlotError::NotScheduled => S::NOT_FOUND,
                _ => S::CONFLICT,
            };
            domain("slot", format!("{s:?}"), status)
        }
        CommandError::Listing(l) => {
            let status = match l {
                ListingError::Invalid(_) => S::UNPROCESSABLE_ENTITY,
                ListingError::NotPublished => S::NOT_FOUND,
                _ => S::CONFLICT,
            };
            domain("listing", format!("{l:?}"), status)
        }
        CommandError::Payment(p) => domain("payment", format!("{p:?}"), S::CONFLICT),
        CommandError::Loyalty(l) => {
            let status = match l {
                LoyaltyError::NonPositive
                | LoyaltyError::EmptyAdjustment
                | LoyaltyError::AdjustmentOutOfRange { .. } => S::UNPROCESSABLE_ENTITY,
                _ => S::CONFLICT,
            };
            let mut m = domain("loyalty", format!("{l:?}"), status);
            if matches!(l, LoyaltyError::AdjustmentOutOfRange { .. }) {
                m.errors.push(FieldError {
                    field: "delta".into(),
                    message: l.to_string(),
                });
            }
            m
        }
        CommandError::Review(r) => {
            let status = match r {
                ReviewError::Rating(_) | ReviewError::TooLong => S::UNPROCESSABLE_ENTITY,
                ReviewError::AlreadyReviewed => S::CONFLICT,
            };
            domain("review", format!("{r:?}"), status)
        }
        CommandError::User(u) => {
            let (status, field) = match u {
                UserError::InvalidEmail => (S::UNPROCESSABLE_ENTITY, Some("email")),
                UserError::WeakPassword => (S::UNPROCESSABLE_ENTITY, Some("password")),
                UserError::InvalidDisplayName => (S::UNPROCESSABLE_ENTITY, Some("display_name")),
                UserError::SelfReferral => (S::UNPROCESSABLE_ENTITY, Some("referred_by")),
                UserError::BadCredentials => (S::UNAUTHORIZED, None),
                UserError::NotRegistered => (S::NOT_FOUND, None),
                _ => (S::CONFLICT, None),
            };
            let mut m = domain("user", format!("{u:?}"), status);
            if let Some(field) = field {
                m.errors.push(FieldError {
                    field: field.to_owned(),
                    message: u.to_string(),
                });
            }
            m
        }
        CommandError::NotFound { what, .. } => mapped(
            S::NOT_FOUND,
            format!("{}.not_found", what.replace(' ', "_")),
        ),
        CommandError::NotYours { what } => mapped(S::FORBIDDEN, format!("{what}.not_yours")),
        CommandError::ReasonRequired => {
            let mut m = mapped(S::UNPROCESSABLE_ENTITY, "request.reason_required");
            m.errors.push(FieldError {
                field: "reason".into(),
                message: "a reason is required".into(),
            });
            m
        }
        CommandError::PaymentRefused(_) => mapped(S::PAYMENT_REQUIRED, "payment.refused"),
        CommandError::GatewayUnavailable(_) => Mapped {
            retryable: true,
            ..mapped(S::SERVICE_UNAVAILABLE, "payment.gateway_unavailable")
        },
        CommandError::IdempotencyKeyReused => {
            mapped(S::UNPROCESSABLE_ENTITY, "request.idempotency_key_reused")
        }
        CommandError::Contention { .. } => Mapped {
            retryable: true,
            ..mapped(S::CONFLICT, "request.contention")
        },
        CommandError::Store(tessera_log::store::StoreError::UnstorableText { what, .. }) => {
            let mut m = mapped(S::UNPROCESSABLE_ENTITY, "request.unstorable_text");
            m.errors.push(FieldError {
                field: (*what).to_owned(),
                message: "must not contain U+0000 (NUL)".into(),
            });
            m
        }
        CommandError::Codec(_) | CommandError::Store(_) => {
            mapped(S::INTERNAL_SERVER_ERROR, "internal")
        }
    }
}

impl ApiError {
    fn mapped(&self) -> Mapped {
        use StatusCode as S;
        match self {
            Self::Command(e) => command(e),
            Self::Projection(ProjectionError::Invalid(m)) => Mapped {
                errors: vec![FieldError {
                    field: String::new(),
                    message: m.clone(),
                }],
                ..mapped(S::UNPROCESSABLE_ENTITY, "request.invalid")
            },
            Self::Projection(ProjectionError::Unknown(name, known)) => Mapped {
                errors: vec![FieldError {
                    field: "names".into(),
                    message: format!("unknown projection {name:?}; known: {known}"),
                }],
                ..mapped(S::UNPROCESSABLE_ENTITY, "projection.unknown")
            },
            Self::Projection(_) => mapped(S::INTERNAL_SERVER_ERROR, "internal"),
            Self::Unauthenticated(_) => mapped(S::UNAUTHORIZED, "auth.unauthenticated"),
            Self::Forbidden(_) => mapped(S::FORBIDDEN, "auth.forbidden"),
            Self::NotFound { what, .. } => mapped(S::NOT_FOUND, format!("{what}.not_found")),
            Self::Invalid(errors) => Mapped {
                errors: errors.clone(),
                ..mapped(S::UNPROCESSABLE_ENTITY, "request.invalid")
            },
            Self::BadRequest { code, .. } => mapped(S::BAD_REQUEST, *code),
            Self::Conflict { code, .. } => mapped(S::CONFLICT, *code),
            Self::RateLimited { .. } => Mapped {
                retryable: true,
                ..mapped(S::TOO_MANY_REQUESTS, "request.rate_limited")
            },
            Self::NotYetConsistent { .. } => Mapped {
                retryable: true,
                ..mapped(S::SERVICE_UNAVAILABLE, "read.not_yet_consistent")
            },
            Self::PayloadTooLarge { .. } => mapped(S::PAYLOAD_TOO_LARGE, "request.too_large"),
            Self::UnsupportedMediaType => {
                mapped(S::UNSUPPORTED_MEDIA_TYPE, "request.unsupported_media_type")
            }
            Self::Unavailable(_) => Mapped {
                retryable: true,
                ..mapped(S::SERVICE_UNAVAILABLE, "service.unavailable")
            },
            Self::NoRoute(_) => mapped(S::NOT_FOUND, "request.no_route"),
            Self::MethodNotAllowed => mapped(S::METHOD_NOT_ALLOWED, "request.method_not_allowed"),
            Self::Internal(_) => mapped(S::INTERNAL_SERVER_ERROR, "internal"),
            Self::Status { status, code, .. } => mapped(*status, *code),
        }
    }

    /// Whether this is a final business answer (remembered under an idempotency key).
    pub fn is_final(&self) -> bool {
        match self {
            Self::Command(e) => e.is_refusal(),
            Self::Invalid(_) | Self::BadRequest { .. } | Self::Conflict { .. } => true,
            _ => false,
        }
    }

    /// The problem body and status this error is answered with.
    pub fn problem(&self) -> (StatusCode, Problem) {
        let m = self.mapped();
        let server_side = m.status.is_server_error() && m.status != StatusCode::SERVICE_UNAVAILABLE;
        let request_id = request_id();
        let detail = if server_side {
            // Opaque to the client; the cause is logged once, with the request id.
            tracing::error!(request_id = request_id.as_deref().unwrap_or("-"), error = %self, "request failed");
            Some("An internal error occurred. Quote the request id when reporting it.".to_owned())
        } else {
            Some(self.to_string())
        };
        let title = m.status.canonical_reason().unwrap_or("Error").to_owned();
        (
            m.status,
            Problem {
                type_: format!("urn:tessera:problem:{}", m.code),
                title,
                status: m.status.as_u16(),
                detail,
                code: m.code,
                request_id,
                retryable: m.retryable,
                errors: m.errors,
            },
        )
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after } => {
                Some(retry_after.as_secs_f64().ceil().max(1.0) as u64)
            }
            Self::NotYetConsistent { .. } | Self::Unavailable(_) => Some(1),
            Self::Command(
                CommandError::GatewayUnavailable(_) | CommandError::Contention { .. },
            ) => Some(1),
            _ => None,
        }
    }
}

/// A problem body as a response.
pub fn problem_response(status: StatusCode, problem: &Problem) -> Response {
    let body = serde_json::to_vec(problem).unwrap_or_default();
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, problem) = self.problem();
        let mut response = problem_response(status, &problem);
        if let Some(secs) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tessera\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_snake_case_variant_names() {
        assert_eq!(variant_code("SoldOut { requested: 2 }"), "sold_out");
        assert_eq!(variant_code("InvalidTransition"), "invalid_transition");
        assert_eq!(variant_code("HoldExpired(2026-01-01)"), "hold_expired");
    }

    #[test]
    fn server_errors_are_opaque() {
        let (status, p) = ApiError::Internal("password=hunter2 in a query".into()).problem();
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!p.detail.unwrap_or_default().contains("hunter2"));
    }
}
