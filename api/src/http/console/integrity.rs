//! The auditor's integrity page: the seals and their ranges, the unsealed window, open sealing
//! alerts, and the latest verification of the whole log — started here, followed live while it
//! runs (its progress is kept in `verify_runs`, so every auditor sees the same run and a page
//! opened mid-run catches up).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Form;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use tessera_log::audit::{self, VerifyOptions};

use super::session::Console;
use super::{ConsoleError, page};
use crate::http::AppState;
use crate::http::auth::roles::AuditorOrAdmin;
use crate::http::error::ApiError;

#[derive(Debug, sqlx::FromRow)]
struct Run {
    id: i64,
    started_by: String,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    done: i64,
    total: i64,
    ok: Option<bool>,
    report: Option<serde_json::Value>,
    error: Option<String>,
}

fn db(e: sqlx::Error) -> ConsoleError {
    ConsoleError::Api(ApiError::Internal(e.to_string()))
}

async fn latest(state: &AppState) -> Result<Option<Run>, ConsoleError> {
    sqlx::query_as(
        "SELECT id, started_by, started_at, finished_at, done, total, ok, report, error
           FROM verify_runs ORDER BY id DESC LIMIT 1",
    )
    .fetch_optional(&state.pool)
    .await
    .map_err(db)
}

fn run_view(run: Option<&Run>, csrf: &str) -> Markup {
    let running = run.is_some_and(|r| r.finished_at.is_none());
    html! {
        @match run {
            None => { p role="status" { "The log has not been verified from the console yet." } }
            Some(r) => {
                p role="status" {
                    "Verification #" (r.id) ", started " (r.started_at.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                    " by " (r.started_by) ": "
                    @match (r.finished_at, r.ok, &r.error) {
                        (None, _, _) => { "running" }
                        (Some(_), _, Some(e)) => { strong.error { "failed: " (e) } }
                        (Some(_), Some(true), _) => { strong.ok data-verified="ok" { "the log is intact" } }
                        _ => { strong.error data-verified="problems" { "problems found" } }
                    }
                }
                @if running {
                    label for="verify-progress" { "Events checked" }
                    progress id="verify-progress" max=(r.total.max(1)) value=(r.done) { (r.done) " of " (r.total) }
                }
                @if let Some(report) = &r.report {
                    dl.facts {
                        dt { "Events checked" } dd { (report["events"]) " (positions " (report["from"]) " to " (report["to"]) ")" }
                        dt { "Seals checked" } dd { (report["seals"]) }
                        dt { "Problems" } dd { (report["total_problems"]) }
                    }
                    @if let Some(problems) = report["problems"].as_array().filter(|p| !p.is_empty()) {
                        table {
                            thead { tr { th scope="col" { "Position" } th scope="col" { "Kind" } th scope="col" { "Stream" } th scope="col" { "Detail" } } }
                            tbody {
                                @for p in problems.iter().take(50) {
                                    tr {
                                        td.num { (p["position"]) }
                                        td { (p["kind"].as_str().unwrap_or("")) }
                                        td { (p["stream"].as_str().unwrap_or("")) }
                                        td { (p["detail"].as_str().unwrap_or("")) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if !running {
            form method="post" action="/console/audit/integrity/verify" {
                input type="hidden" name="csrf" value=(csrf);
                button type="submit" { "Verify the log" }
            }
        }
    }
}

pub async fn integrity(
    State(state): State<AppState>,
    c: Console<AuditorOrAdmin>,
) -> Result<Markup, ConsoleError> {
    let seals = audit::list_seals(&state.pool)
        .await
        .map_err(ApiError::from)?;
    let (unsealed, age) = audit::seal::unsealed(&state.pool)
        .await
        .map_err(ApiError::from)?;
    let alerts = audit::seal::open_alerts(&state.pool)
        .await
        .map_err(ApiError::from)?;
    let run = latest(&state).await?;
    Ok(page(
        Some(&c),
        "Integrity",
        html! {
            section aria-labelledby="verification" {
                h2 id="verification" { "Verification" }
                div id="verify" hx-ext="sse" sse-connect="/console/audit/integrity/stream" sse-swap="verify" hx-swap="innerHTML" {
                    (run_view(run.as_ref(), &c.csrf))
                }
            }
            section aria-labelledby="window" {
                h2 id="window" { "Unsealed window" }
                p { (unsealed) " events after the last seal"
                    @if unsealed > 0 { ", the oldest recorded " (ago(age)) " ago" } "." }
                @for (at, from, to, problem) in &alerts {
                    p.error role="alert" { "Sealing refused at " (at.format("%Y-%m-%d %H:%M UTC").to_string()) " for positions " (from) "–" (to) ": " (problem) }
                }
            }
            section aria-labelledby="seals" {
                h2 id="seals" { "Seals" }
                p { (seals.len()) " seals" }
                table {
                    thead { tr {
                        th scope="col" { "Seal" } th scope="col" { "Positions" } th scope="col" { "Events" }
                        th scope="col" { "Sealed" } th scope="col" { "Merkle root" }
                    } }
                    tbody {
                        @for s in seals.iter().rev().take(100) {
                            tr {
                                td.num { "#" (s.seq) }
                                td.num { (s.from_position) "–" (s.to_position) }
                                td.num { (s.event_count) }
                                td { (s.sealed_at.format("%Y-%m-%d %H:%M UTC").to_string()) }
                                td { code { (s.merkle_root.to_hex()[..16]) "…" } }
                            }
                        }
                    }
                }
            }
        },
    ))
}

#[derive(Debug, Deserialize)]
pub struct VerifyForm {
    csrf: String,
}

/// Starts verifying the whole log (one run at a time); the page follows it.
pub async fn start_verify(
    State(state): State<AppState>,
    c: Console<AuditorOrAdmin>,
    f: Result<Form<VerifyForm>, FormRejection>,
) -> Result<Response, ConsoleError> {
    let f = super::pages::form(f)?;
    c.check_csrf(&f.csrf)?;
    // One run at a time: a run left unfinished by a process that stopped is closed first.
    let started: Option<i64> = sqlx::query_scalar(
        "INSERT INTO verify_runs (started_by)
         SELECT $1 WHERE NOT EXISTS (
             SELECT 1 FROM verify_runs WHERE finished_at IS NULL AND started_at > now() - interval '1 hour')
         RETURNING id",
    )
    .bind(c.caller.actor())
    .fetch_optional(&state.pool)
    .await
    .map_err(db)?;
    if let Some(id) = started {
        tokio::spawn(run(state.clone(), id));
    }
    Ok(Redirect::to("/console/audit/integrity").into_response())
}

async fn run(state: AppState, id: i64) {
    let done = Arc::new(AtomicU64::new(0));
    let total = Arc::new(AtomicU64::new(0));
    let reporter = tokio::spawn({
        let (pool, done, total) = (state.pool.clone(), done.clone(), total.clone());
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let _ = sqlx::query("UPDATE verify_runs SET done = $2, total = $3 WHERE id = $1")
                    .bind(id)
                    .bind(done.load(Ordering::Relaxed) as i64)
                    .bind(total.load(Ordering::Relaxed) as i64)
                    .execute(&pool)
                    .await;
            }
        }
    });
    let options = VerifyOptions {
        from: None,
        to: None,
        trusted_key: state.seal_public_key,
    };
    let outcome = {
        let (done, total) = (done.clone(), total.clone());
        audit::verify(&state.pool, &options, &mut move |d, t| {
            done.store(d, Ordering::Relaxed);
            total.store(t, Ordering::Relaxed);
        })
        .await
    };
    reporter.abort();
    let (ok, report, error) = match outcome {
        Ok(r) => (Some(r.ok()), serde_json::to_value(&r).ok(), None),
        Err(e) => (None, None, Some(e.to_string())),
    };
    let finished = sqlx::query(
        "UPDATE verify_runs SET finished_at = now(), ok = $2, report = $3, error = $4,
                done = total WHERE id = $1",
    )
    .bind(id)
    .bind(ok)
    .bind(report)
    .bind(error)
    .execute(&state.pool)
    .await;
    if let Err(e) = finished {
        tracing::error!(error = %e, run = id, "cannot record the verification's outcome");
    }
}

/// The verification block, sent again whenever it changes.
pub async fn stream(
    State(state): State<AppState>,
    c: Console<AuditorOrAdmin>,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let csrf = c.csrf.clone();
    super::live("verify", move || {
        let (state, csrf) = (state.clone(), csrf.clone());
        async move {
            let run = latest(&state).await.ok()?;
            Some(run_view(run.as_ref(), &csrf).into_string())
        }
    })
}

/// A duration in the largest unit that reads well.
fn ago(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..=119 => format!("{s} s"),
        120..=7_199 => format!("{} min", s / 60),
        7_200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}
