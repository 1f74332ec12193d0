//! Operations endpoints at the root: liveness, readiness (database and projections) and
//! Prometheus metrics (request latency histograms, projection positions and lag).

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::http::AppState;

pub fn router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// The operations endpoints' documentation. They are served at the root, not under `/api/v1`:
/// [`crate::http::openapi`] gives their path items a server of their own.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(healthz, readyz, metrics),
    tags((name = "ops", description = "Liveness, readiness and metrics, at the root"))
)]
#[derive(Debug)]
pub struct OpsDoc;

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "ops",
    responses((status = 200, description = "Alive: `{\"status\": \"ok\"}`", body = Object)))]
async fn healthz() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

/// Ready when the database answers and no projection has failed or lacks a live generation.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses(
        (status = 200, description = "Ready: database reachable, every projection live (with positions and lag); `status` is `degraded` with `alerts` when the sealer refused a range of the log", body = Object),
        (status = 503, description = "Not ready: the database is unreachable, or a projection failed or has no live generation (listed in `problems`)", body = Object),
    ))]
async fn readyz(State(state): State<AppState>) -> Response {
    let db = sqlx::query_scalar::<_, i32>("SELECT 1")
        .fetch_one(&state.pool)
        .await
        .is_ok();
    let projections = if db {
        tessera_projections::status(&state.pool).await.ok()
    } else {
        None
    };
    let problems: Vec<String> = projections
        .iter()
        .flatten()
        .filter(|p| p.state == "failed" || p.generation.is_none())
        .map(|p| format!("{}: {}", p.name, p.state))
        .collect();
    let ready = db && projections.is_some() && problems.is_empty();
    // A refused seal (the log lost events or was reordered) does not stop serving, but it is
    // an alert an operator must see: the process is ready, and degraded.
    let alerts: Vec<String> = if db {
        tessera_log::audit::seal::open_alerts(&state.pool)
            .await
            .map(|alerts| {
                alerts
                    .into_iter()
                    .map(|(at, from, to, problem)| {
                        format!("sealing refused since {at} for positions {from}..{to}: {problem}")
                    })
                    .collect()
            })
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let body = json!({
        "status": if !ready { "not_ready" } else if alerts.is_empty() { "ready" } else { "degraded" },
        "alerts": alerts,
        "database": if db { "ok" } else { "unreachable" },
        "projections": projections.iter().flatten().map(|p| json!({
            "name": p.name, "state": p.state, "position": p.position, "lag_events": p.lag_events,
        })).collect::<Vec<_>>(),
        "problems": problems,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// Prometheus text format. Projection gauges are refreshed from the registry at each scrape, so
/// an API process reports lag even when its projectors run elsewhere.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses(
        (status = 200, description = "Prometheus text format: request latency histograms by route, method and status; projection position, lag (events and seconds) and failure", body = String, content_type = "text/plain"),
        (status = 404, description = "Metrics are not enabled in this process", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ))]
async fn metrics(State(state): State<AppState>) -> Response {
    let Some(handle) = &state.metrics else {
        return crate::http::error::ApiError::NotFound {
            what: "metrics",
            id: "this process".into(),
        }
        .into_response();
    };
    if let Ok(status) = tessera_projections::status(&state.pool).await {
        for p in status {
            let name = p.name.clone();
            metrics::gauge!("tessera_projection_position", "projection" => name.clone())
                .set(p.position as f64);
            metrics::gauge!("tessera_projection_lag_events", "projection" => name.clone())
                .set(p.lag_events as f64);
            metrics::gauge!("tessera_projection_lag_seconds", "projection" => name.clone())
                .set(p.lag_seconds);
            metrics::gauge!("tessera_projection_failed", "projection" => name)
                .set(if p.state == "failed" { 1.0 } else { 0.0 });
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}
