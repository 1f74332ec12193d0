//! Auditors (and admins): the log itself, the one place the API reads the event store rather
//! than read models. Booking histories across streams, time travel replayed through the domain,
//! log browsing with a cursor, verification of chains and seals, and streamed NDJSON exports.

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use tessera_log::audit::{self, AsOf, AuditError, LogQuery, VerifyOptions};
use tessera_log::store::StreamId;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::http::auth::Require;
use crate::http::auth::roles::AuditorOrAdmin;
use crate::http::error::{ApiError, FieldError, Problem};
use crate::http::{ApiPath, ApiQuery, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(booking_history))
        .routes(routes!(stream_state))
        .routes(routes!(booking_read_model))
        .routes(routes!(browse_log))
        .routes(routes!(verify_log))
        .routes(routes!(export))
}

impl From<AuditError> for ApiError {
    fn from(e: AuditError) -> Self {
        match e {
            AuditError::NotFound { what, id } => ApiError::NotFound { what, id },
            AuditError::Invalid(message) => ApiError::Invalid(vec![FieldError {
                field: "query".into(),
                message,
            }]),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// A moment of the log: `position`, or `at` (what had been recorded by then); neither is now.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AsOfQuery {
    pub position: Option<u64>,
    pub at: Option<DateTime<Utc>>,
}

impl AsOfQuery {
    fn as_of(&self) -> Result<AsOf, ApiError> {
        match (self.position, self.at) {
            (Some(_), Some(_)) => Err(ApiError::Invalid(vec![FieldError {
                field: "at".into(),
                message: "give a position or a time, not both".into(),
            }])),
            (Some(p), None) => Ok(AsOf::Position(p)),
            (None, Some(t)) => Ok(AsOf::Time(t)),
            (None, None) => Ok(AsOf::Head),
        }
    }
}

/// Every event that touched a booking across streams, in log order, with actor, reason,
/// correlation and causation, both timestamps and hashes (auditors, admins).
#[utoipa::path(get, path = "/audit/bookings/{booking_id}/history", tag = "audit", security(("bearer" = [])),
    params(("booking_id" = Uuid, Path, description = "The booking"), AsOfQuery),
    responses(
        (status = 200, description = "The history, oldest first", body = Vec<serde_json::Value>),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn booking_history(
    State(state): State<AppState>,
    _caller: Require<AuditorOrAdmin>,
    ApiPath(booking_id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<AsOfQuery>,
) -> Result<axum::Json<Vec<audit::LogEntry>>, ApiError> {
    let mut entries = audit::booking_history(&state.pool, booking_id, q.as_of()?).await?;
    audit::add_personal_views(&state.vault, &mut entries).await?;
    Ok(axum::Json(entries))
}

/// The state of any aggregate (stream `booking-<id>`, `slot-<id>`, `loyalty-<user id>`, …) as of
/// a position or a time, replayed through the domain (auditors, admins).
#[utoipa::path(get, path = "/audit/streams/{stream}/state", tag = "audit", security(("bearer" = [])),
    params(("stream" = String, Path, description = "Stream id"), AsOfQuery),
    responses(
        (status = 200, description = "The replayed state", body = serde_json::Value),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn stream_state(
    State(state): State<AppState>,
    _caller: Require<AuditorOrAdmin>,
    ApiPath(stream): ApiPath<String>,
    ApiQuery(q): ApiQuery<AsOfQuery>,
) -> Result<axum::Json<audit::StateAsOf>, ApiError> {
    let stream = StreamId::new(stream).map_err(|e| {
        ApiError::Invalid(vec![FieldError {
            field: "stream".into(),
            message: e.to_string(),
        }])
    })?;
    Ok(axum::Json(
        audit::state_as_of(&state.pool, &state.vault, &stream, q.as_of()?).await?,
    ))
}

/// What the bookings read model said about a booking at a moment: its projection logic replayed
/// over the booking's events up to then, in a throwaway schema (auditors, admins).
#[utoipa::path(get, path = "/audit/bookings/{booking_id}/read-model", tag = "audit", security(("bearer" = [])),
    params(("booking_id" = Uuid, Path, description = "The booking"), AsOfQuery),
    responses(
        (status = 200, description = "The row and timeline as of then (null before the booking existed)", body = serde_json::Value),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn booking_read_model(
    State(state): State<AppState>,
    _caller: Require<AuditorOrAdmin>,
    ApiPath(booking_id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<AsOfQuery>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let as_of = q.as_of()?;
    let events = audit::booking_events(&state.pool, booking_id, as_of).await?;
    let view =
        tessera_projections::replay::booking_read_model(&state.pool, booking_id, events).await?;
    Ok(axum::Json(
        serde_json::json!({ "as_of": as_of, "read_model": view }),
    ))
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LogParams {
    /// Cursor: events after this position (the previous page's `next_after`).
    pub after: Option<u64>,
    /// 1 to 1000 (default 100).
    pub limit: Option<usize>,
    pub event_type: Option<String>,
    pub stream_prefix: Option<String>,
    /// Recorded at or after.
    pub since: Option<DateTime<Utc>>,
    /// Recorded before.
    pub until: Option<DateTime<Utc>>,
}

/// A page of the global log after a cursor, filtered by type, stream prefix and time.
#[utoipa::path(get, path = "/audit/log", tag = "audit", security(("bearer" = [])), params(LogParams),
    responses(
        (status = 200, description = "Events and the next cursor", body = serde_json::Value),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn browse_log(
    State(state): State<AppState>,
    _caller: Require<AuditorOrAdmin>,
    ApiQuery(q): ApiQuery<LogParams>,
) -> Result<axum::Json<audit::LogPage>, ApiError> {
    let query = LogQuery {
        after: q.after.unwrap_or(0),
        limit: q.limit,
        event_type: q.event_type,
        stream_prefix: q.stream_prefix,
        since: q.since,
        until: q.until,
    };
    let mut page = audit::browse(&state.pool, &query).await?;
    audit::add_personal_views(&state.vault, &mut page.events).await?;
    Ok(axum::Json(page))
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RangeParams {
    pub from: Option<u64>,
    pub to: Option<u64>,
    /// Export this booking's history instead of a range.
    pub booking: Option<Uuid>,
}

/// Re-derives every hash chain and seal in a range; `ok` false names the first problem.
#[utoipa::path(get, path = "/audit/verify", tag = "audit", security(("bearer" = [])), params(RangeParams),
    responses(
        (status = 200, description = "The verification report", body = serde_json::Value),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn verify_log(
    State(state): State<AppState>,
    _caller: Require<AuditorOrAdmin>,
    ApiQuery(q): ApiQuery<RangeParams>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let options = VerifyOptions {
        from: q.from,
        to: q.to,
        trusted_key: state.seal_public_key,
    };
    let report = audit::verify(&state.pool, &options, &mut |_, _| {}).await?;
    let mut body = serde_json::to_value(&report).map_err(|e| ApiError::Internal(e.to_string()))?;
    body["ok"] = serde_json::Value::Bool(report.ok());
    Ok(axum::Json(body))
}

/// NDJSON export of a range or of one booking's history, streamed, with hashes and seals so
/// that it verifies offline (`tessera audit verify-export`).
#[utoipa::path(get, path = "/audit/export", tag = "audit", security(("bearer" = [])), params(RangeParams),
    responses(
        (status = 200, description = "tessera-export-v1 lines", body = String, content_type = "application/x-ndjson"),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn export(
    State(state): State<AppState>,
    _caller: Require<AuditorOrAdmin>,
    ApiQuery(q): ApiQuery<RangeParams>,
) -> Result<Response, ApiError> {
    if let Some(id) = q.booking {
        // Unknown bookings answer 404 before the stream starts.
        audit::booking_history(&state.pool, id, AsOf::Position(0)).await?;
    }
    let (mut writer, reader) = tokio::io::duplex(64 * 1024);
    let (pool, key, vault) = (
        state.pool.clone(),
        state.seal_public_key,
        state.vault.clone(),
    );
    tokio::spawn(async move {
        let result = match q.booking {
            Some(id) => {
                audit::export_booking(&pool, &vault, id, AsOf::Head, key, &mut writer).await
            }
            None => audit::export_range(&pool, &vault, q.from, q.to, key, &mut writer).await,
        };
        // A failure mid-stream ends the body early; the missing lines fail offline verification.
        if let Err(e) = result {
            tracing::error!(error = %e, "export stopped");
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(tokio_util::io::ReaderStream::new(reader)),
    )
        .into_response())
}
