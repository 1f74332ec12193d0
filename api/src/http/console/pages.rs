//! The console's pages and forms. Each takes the same role set as the API route it mirrors and
//! calls the same function; a form posts its session's CSRF token (checked before anything
//! else in the form is looked at) and, for commands, an idempotency key minted with the form,
//! so that a form submitted twice runs its command once.

use std::convert::Infallible;

use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, NaiveDateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use tessera_log::audit::{self, AsOf, LogQuery};
use tessera_log::store::StreamId;
use uuid::Uuid;

use super::session::{self, Console, SignedIn};
use super::{ConsoleError, page, pages_for};
use crate::http::auth::roles::{Admin, AnalystOrAdmin, AuditorOrAdmin, ProviderOrAdmin};
use crate::http::error::ApiError;
use crate::http::positions::MinPosition;
use crate::http::routes::{IdempotencyKey, admin as admin_routes, provider, tickets};
use crate::http::{AppState, ClientAddr};

type Page = Result<Markup, ConsoleError>;

/// A form's fields, or a 400 page naming what was wrong with them.
pub(super) fn form<T>(f: Result<Form<T>, FormRejection>) -> Result<T, ConsoleError> {
    f.map(|Form(t)| t).map_err(|e| {
        ConsoleError::Api(ApiError::BadRequest {
            code: &crate::http::codes::REQUEST_BAD_REQUEST,
            detail: e.body_text(),
        })
    })
}

pub(super) fn query<T>(
    q: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ConsoleError> {
    q.map(|Query(t)| t).map_err(|e| {
        ConsoleError::Api(ApiError::BadRequest {
            code: &crate::http::codes::REQUEST_BAD_REQUEST,
            detail: e.body_text(),
        })
    })
}

pub(super) fn parse_uuid(what: &'static str, raw: &str) -> Result<Uuid, ConsoleError> {
    Uuid::parse_str(raw.trim()).map_err(|_| {
        ConsoleError::Api(ApiError::NotFound {
            what,
            id: raw.chars().take(64).collect(),
        })
    })
}

pub(super) fn money(minor: i64, currency: &str) -> String {
    format!("{}.{:02} {currency}", minor / 100, (minor % 100).abs())
}

pub(super) fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

// ---------------------------------------------------------------------------------------------
// Signing in and out.

pub async fn home(SignedIn(s): SignedIn) -> Markup {
    let roles: Vec<String> = s
        .caller
        .roles
        .iter()
        .map(|r| format!("{r:?}").to_lowercase())
        .collect();
    let pages = pages_for(&s);
    page(
        Some(&s),
        "Console",
        html! {
            p { "Signed in with the roles: " strong { (roles.join(", ")) } "." }
            @if pages.is_empty() {
                p role="status" { "None of your roles opens a console page. Customers use the app and the API." }
            } @else {
                ul.cards {
                    @for (href, label) in pages { li { a href=(href) { (label) } } }
                }
            }
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    csrf: String,
    email: String,
    password: String,
}

fn login_page(error: Option<&str>, csrf: &str) -> Markup {
    page(
        None,
        "Sign in",
        html! {
            @if let Some(e) = error { p.error role="alert" { (e) } }
            form.stack method="post" action="/console/login" {
                input type="hidden" name="csrf" value=(csrf);
                label for="email" { "E-mail address" }
                input id="email" name="email" type="email" autocomplete="username" required autofocus;
                label for="password" { "Password" }
                input id="password" name="password" type="password" autocomplete="current-password" required;
                button type="submit" { "Sign in" }
            }
        },
    )
}

pub async fn login_form(headers: HeaderMap) -> Response {
    let (token, cookie) = session::login_token(&headers);
    ([(header::SET_COOKIE, cookie)], login_page(None, &token)).into_response()
}

/// Signs in with the same accounts, checks and login rate limit as `POST /auth/login`.
pub async fn login(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    f: Result<Form<LoginForm>, FormRejection>,
) -> Result<Response, ConsoleError> {
    let f = form(f)?;
    session::check_login_token(&headers, &f.csrf)?;
    state.limit_login(&f.email, client)?;
    let user =
        match tessera_commands::users::authenticate(&*state.store, &f.email, &f.password).await {
            Ok(u) => u,
            Err(e) if e.is_refusal() => {
                return Ok((
                    StatusCode::UNAUTHORIZED,
                    login_page(
                        Some("That e-mail address and password do not match an account."),
                        &f.csrf,
                    ),
                )
                    .into_response());
            }
            Err(e) => return Err(e.into()),
        };
    // The console is for staff and providers: an account none of whose roles opens a page
    // (a customer's) gets no session.
    if !super::opens_any(&user.roles) {
        return Ok((
            StatusCode::FORBIDDEN,
            login_page(
                Some("This account has no console role. Customers use the app and the API."),
                &f.csrf,
            ),
        )
            .into_response());
    }
    let cookie = session::open(&state, user.id.0, &headers).await?;
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/console")).into_response())
}

#[derive(Debug, Deserialize)]
pub struct CsrfOnly {
    csrf: String,
}

pub async fn logout(
    State(state): State<AppState>,
    SignedIn(s): SignedIn,
    headers: HeaderMap,
    f: Result<Form<CsrfOnly>, FormRejection>,
) -> Result<Response, ConsoleError> {
    s.check_csrf(&form(f)?.csrf)?;
    let cookie = session::close(&state, &s, &headers).await?;
    Ok((
        [(header::SET_COOKIE, cookie)],
        Redirect::to("/console/login"),
    )
        .into_response())
}

// ---------------------------------------------------------------------------------------------
// Auditors: a booking's timeline at any moment, and the log.

#[derive(Debug, Default, Deserialize)]
pub struct AuditQuery {
    booking: Option<String>,
    #[serde(default)]
    after: u64,
    event_type: Option<String>,
    stream_prefix: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

fn instant(field: &str, raw: Option<&str>) -> Result<Option<DateTime<Utc>>, ConsoleError> {
    let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M").map(|t| t.and_utc()))
        .map(Some)
        .map_err(|_| {
            ConsoleError::Api(ApiError::Invalid(vec![crate::http::error::FieldError {
                field: field.into(),
                message: "a date and time (UTC), e.g. 2026-11-20T12:00".into(),
            }]))
        })
}

pub(super) fn nonblank(s: &Option<String>) -> Option<String> {
    s.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Open a booking's timeline; browse the log by type, stream prefix and time, a page at a time.
pub async fn audit(
    State(state): State<AppState>,
    c: Console<AuditorOrAdmin>,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ConsoleError> {
    let q = query(q)?;
    if let Some(b) = nonblank(&q.booking) {
        let id = parse_uuid("booking", &b)?;
        return Ok(Redirect::to(&format!("/console/audit/bookings/{id}")).into_response());
    }
    let log = LogQuery {
        after: q.after,
        limit: Some(50),
        event_type: nonblank(&q.event_type),
        stream_prefix: nonblank(&q.stream_prefix),
        since: instant("since", q.since.as_deref())?,
        until: instant("until", q.until.as_deref())?,
    };
    let found = audit::browse(&state.pool, &log)
        .await
        .map_err(ApiError::from)?;
    let next = found.next_after.map(|after| {
        let mut url = url_with(&[
            ("after", Some(after.to_string())),
            ("event_type", log.event_type.clone()),
            ("stream_prefix", log.stream_prefix.clone()),
            ("since", nonblank(&q.since)),
            ("until", nonblank(&q.until)),
        ]);
        url.insert_str(0, "/console/audit");
        url
    });
    Ok(page(
        Some(&c),
        "Audit",
        html! {
            section aria-labelledby="find" {
                h2 id="find" { "A booking's timeline" }
                form.inline method="get" action="/console/audit" {
                    label for="booking" { "Booking id" }
                    input id="booking" name="booking" required size="38";
                    button type="submit" { "Open timeline" }
                }
            }
            section aria-labelledby="log" {
                h2 id="log" { "The log" }
                form.inline method="get" action="/console/audit" {
                    label for="event_type" { "Event type" }
                    input id="event_type" name="event_type" value=[log.event_type.as_deref()];
                    label for="stream_prefix" { "Stream prefix" }
                    input id="stream_prefix" name="stream_prefix" value=[log.stream_prefix.as_deref()] placeholder="booking-";
                    label for="since" { "Since (UTC)" }
                    input id="since" name="since" type="datetime-local" value=[nonblank(&q.since)];
                    label for="until" { "Until (UTC)" }
                    input id="until" name="until" type="datetime-local" value=[nonblank(&q.until)];
                    button type="submit" { "Filter" }
                }
                (events_table(&found.events, false))
                @if let Some(next) = next { p { a rel="next" href=(next) { "Next page" } } }
            }
        },
    )
    .into_response())
}

fn url_with(params: &[(&str, Option<String>)]) -> String {
    let mut out = String::new();
    for (name, value) in params {
        if let Some(v) = value {
            out.push(if out.is_empty() { '?' } else { '&' });
            out.push_str(name);
            out.push('=');
            out.push_str(&percent(v));
        }
    }
    out
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn events_table(events: &[audit::LogEntry], timeline: bool) -> Markup {
    // A cause in the same timeline links to its row; another (a command) is named by its id.
    let positions: std::collections::HashMap<Uuid, u64> =
        events.iter().map(|e| (e.event_id, e.position)).collect();
    html! {
        table {
            thead { tr {
                th scope="col" { "Position" }
                th scope="col" { "Recorded" }
                th scope="col" { "Stream" }
                th scope="col" { "Event" }
                th scope="col" { "Actor" }
                th scope="col" { "Reason" }
                @if timeline { th scope="col" { "Caused by" } th scope="col" { "As of" } }
            } }
            tbody {
                @for e in events {
                    tr id=(format!("event-{}", e.position)) {
                        td.num { (e.position) }
                        td { (when(e.recorded_at)) }
                        td { code { (e.stream) } }
                        td {
                            details {
                                summary { (e.event_type) }
                                pre.data { (serde_json::to_string_pretty(e.personal.as_ref().unwrap_or(&serde_json::from_str::<serde_json::Value>(e.data.get()).unwrap_or_default())).unwrap_or_default()) }
                            }
                        }
                        td { (e.actor) }
                        td { (e.reason.as_deref().unwrap_or("")) }
                        @if timeline {
                            td {
                                @match e.causation_id.map(|c| (c, positions.get(&c))) {
                                    Some((_, Some(p))) => {
                                        a href=(format!("#event-{p}")) { (e.caused_by.as_deref().unwrap_or("event")) " at " (p) }
                                    }
                                    Some((c, None)) => { small { "command " code { (c) } } }
                                    None => {}
                                }
                            }
                            td { a href=(format!("?position={}", e.position)) { "state here" } }
                        }
                    }
                }
            }
        }
        @if events.is_empty() { p role="status" { "No events." } }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct AsOfForm {
    position: Option<String>,
}

/// A booking's events across streams (booking, slots, payments, points…), each with actor,
/// reason and cause, and the booking's state as of any position.
pub async fn timeline(
    State(state): State<AppState>,
    c: Console<AuditorOrAdmin>,
    Path(id): Path<String>,
    q: Result<Query<AsOfForm>, axum::extract::rejection::QueryRejection>,
) -> Page {
    let id = parse_uuid("booking", &id)?;
    let q = query(q)?;
    let as_of = match nonblank(&q.position) {
        Some(p) => AsOf::Position(p.parse().map_err(|_| {
            ApiError::Invalid(vec![crate::http::error::FieldError {
                field: "position".into(),
                message: "a log position (a whole number)".into(),
            }])
        })?),
        None => AsOf::Head,
    };
    let mut entries = audit::booking_history(&state.pool, id, as_of)
        .await
        .map_err(ApiError::from)?;
    audit::add_personal_views(&state.vault, &mut entries)
        .await
        .map_err(ApiError::from)?;
    let stream =
        StreamId::new(format!("booking-{id}")).map_err(|e| ApiError::Internal(e.to_string()))?;
    let replayed = audit::state_as_of(&state.pool, &state.vault, &stream, as_of)
        .await
        .map_err(ApiError::from)?;
    let state_json = serde_json::to_string_pretty(&replayed.state).unwrap_or_default();
    Ok(page(
        Some(&c),
        &format!("Booking {id}"),
        html! {
            form.inline method="get" {
                label for="position" { "As of log position" }
                input id="position" name="position" inputmode="numeric" value=[nonblank(&q.position)];
                button type="submit" { "Show" }
                a href=(format!("/console/audit/bookings/{id}")) { "Now" }
            }
            p role="status" {
                @match as_of {
                    AsOf::Position(p) => { "As of position " (p) ": " (replayed.events_applied) " booking events applied." }
                    _ => { "Now: " (replayed.events_applied) " booking events." }
                }
            }
            h2 { "Timeline" }
            (events_table(&entries, true))
            h2 { "State" }
            pre.state { (state_json) }
        },
    ))
}

// ---------------------------------------------------------------------------------------------
// Analysts: projections, live.

fn projections_table(status: &[tessera_projections::ProjectionStatus], csrf: &str) -> Markup {
    html! {
        table id="projections" {
            thead { tr {
                th scope="col" { "Projection" }
                th scope="col" { "State" }
                th scope="col" { "Generation" }
                th scope="col" { "Position" }
                th scope="col" { "Lag (events)" }
                th scope="col" { "Lag (s)" }
                th scope="col" { "Owner" }
                th scope="col" { "Rebuild" }
            } }
            tbody {
                @for s in status {
                    tr data-projection=(s.name) {
                        th scope="row" { (s.name) }
                        td.state data-state=(s.state) { (s.state)
                            @if let Some(e) = &s.error { br; small.error { (e) } }
                        }
                        td.num { (s.generation.map(|g| g.to_string()).unwrap_or_default()) }
                        td.num { (s.position) " / " (s.head) }
                        td.num { (s.lag_events) }
                        td.num { (format!("{:.1}", s.lag_seconds)) }
                        td { (s.owner.as_deref().unwrap_or("—")) }
                        td {
                            @if let Some((g, at)) = s.rebuilding {
                                label for=(format!("rebuild-{}", s.name)) { "generation " (g) }
                                progress id=(format!("rebuild-{}", s.name)) max=(s.head.max(1)) value=(at) { (at) " of " (s.head) }
                            } @else {
                                form method="post" action="/console/projections/rebuild" {
                                    input type="hidden" name="csrf" value=(csrf);
                                    input type="hidden" name="name" value=(s.name);
                                    button type="submit" aria-label=(format!("Rebuild {}", s.name)) { "Rebuild" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Every projection with generation, position, lag and owner; refreshed live by server-sent
/// events (the table is complete without them).
pub async fn projections(State(state): State<AppState>, c: Console<AnalystOrAdmin>) -> Page {
    let status = tessera_projections::status(&state.pool)
        .await
        .map_err(tessera_projections::ProjectionError::from)?;
    Ok(page(
        Some(&c),
        "Projections",
        html! {
            div hx-ext="sse" sse-connect="/console/projections/stream" sse-swap="projections" hx-swap="innerHTML" {
                (projections_table(&status, &c.csrf))
            }
        },
    ))
}

/// The projections table, sent again each time it changes (checked twice a second).
pub async fn projections_stream(
    State(state): State<AppState>,
    c: Console<AnalystOrAdmin>,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let csrf = c.csrf.clone();
    super::live("projections", move || {
        let (state, csrf) = (state.clone(), csrf.clone());
        async move {
            let status = tessera_projections::status(&state.pool).await.ok()?;
            Some(projections_table(&status, &csrf).into_string())
        }
    })
}

#[derive(Debug, Deserialize)]
pub struct RebuildForm {
    csrf: String,
    name: String,
}

pub async fn rebuild(
    State(state): State<AppState>,
    c: Console<AnalystOrAdmin>,
    f: Result<Form<RebuildForm>, FormRejection>,
) -> Result<Response, ConsoleError> {
    let f = form(f)?;
    c.check_csrf(&f.csrf)?;
    admin_routes::start_rebuild(&state, std::slice::from_ref(&f.name))?;
    Ok(Redirect::to("/console/projections").into_response())
}

// ---------------------------------------------------------------------------------------------
// Admins: bookings and their compensating commands.

#[derive(Debug, Default, Deserialize)]
pub struct BookingSearch {
    email: Option<String>,
    status: Option<String>,
    #[serde(default)]
    offset: i64,
}

pub async fn bookings(
    State(state): State<AppState>,
    c: Console<Admin>,
    q: Result<Query<BookingSearch>, axum::extract::rejection::QueryRejection>,
) -> Page {
    let q = query(q)?;
    let search = admin_routes::AdminBookingsQuery {
        email: nonblank(&q.email),
        status: nonblank(&q.status),
        limit: Some(25),
        offset: Some(q.offset),
        ..Default::default()
    };
    let found = admin_routes::find_bookings(&state, &search).await?;
    let next = (found.offset + found.limit < found.total).then(|| {
        format!(
            "/console/bookings{}",
            url_with(&[
                ("email", search.email.clone()),
                ("status", search.status.clone()),
                ("offset", Some((found.offset + found.limit).to_string())),
            ])
        )
    });
    Ok(page(
        Some(&c),
        "Bookings",
        html! {
            form.inline method="get" action="/console/bookings" {
                label for="email" { "Customer e-mail" }
                input id="email" name="email" type="email" value=[search.email.as_deref()];
                label for="status" { "Status" }
                select id="status" name="status" {
                    option value="" { "any" }
                    @for s in ["held", "payment_pending", "confirmed", "completed", "no_show", "expired", "cancelled", "refunded"] {
                        option value=(s) selected[search.status.as_deref() == Some(s)] { (s) }
                    }
                }
                button type="submit" { "Search" }
            }
            p role="status" { (found.total) " bookings" }
            table {
                thead { tr {
                    th scope="col" { "Booking" } th scope="col" { "Status" } th scope="col" { "Seats" }
                    th scope="col" { "Total" } th scope="col" { "Paid" } th scope="col" { "Slot starts" }
                } }
                tbody {
                    @for b in &found.bookings {
                        tr {
                            td { a href=(format!("/console/bookings/{}", b.booking_id)) { code { (b.booking_id) } } }
                            td { (b.status) }
                            td.num { (b.seats) }
                            td.num { (money(b.total_minor, &b.currency)) }
                            td.num { (money(b.paid_minor, &b.currency)) }
                            td { (when(b.slot_starts_at)) }
                        }
                    }
                }
            }
            @if let Some(next) = next { p { a rel="next" href=(next) { "Next page" } } }
        },
    ))
}

#[derive(Debug, Default, Deserialize)]
pub struct Done {
    done: Option<String>,
}

/// A booking as the read model shows it, with the compensating commands as forms, each of
/// which needs a reason.
pub async fn booking(
    State(state): State<AppState>,
    c: Console<Admin>,
    Path(id): Path<String>,
    q: Result<Query<Done>, axum::extract::rejection::QueryRejection>,
) -> Page {
    let id = parse_uuid("booking", &id)?;
    let done = query(q)?.done;
    let b = tessera_projections::models::bookings::booking(&state.pool, id)
        .await
        .map_err(tessera_projections::ProjectionError::from)?
        .ok_or(ConsoleError::NotFound)?;
    let refundable = (b.paid_minor - b.refunded_minor).max(0);
    let key = Uuid::new_v4();
    Ok(page(
        Some(&c),
        &format!("Booking {id}"),
        html! {
            @if let Some(d) = done { p.ok role="status" { (d) } }
            dl.facts {
                dt { "Status" } dd { (b.status) }
                dt { "Seats" } dd { (b.seats) }
                dt { "Total" } dd { (money(b.total_minor, &b.currency)) }
                dt { "Paid" } dd { (money(b.paid_minor, &b.currency)) }
                dt { "Refunded" } dd { (money(b.refunded_minor, &b.currency)) }
                dt { "Slot" } dd { (when(b.slot_starts_at)) " – " (when(b.slot_ends_at)) }
                dt { "Customer" } dd { code { (b.customer_id) } }
                @if let Some(r) = &b.cancel_reason { dt { "Cancelled because" } dd { (r) } }
                @if let (Some(to), Some(charge), Some(until)) = (b.move_to_slot_id, b.move_charge_minor, b.move_expires_at) {
                    dt { "Moving" }
                    dd { "to slot " code { (to) } ", waiting for a top-up of " (money(charge, &b.currency)) " until " (when(until)) }
                }
            }
            p { a href=(format!("/console/audit/bookings/{id}")) { "Timeline" } }
            section aria-labelledby="refund" {
                h2 id="refund" { "Refund" }
                form.stack method="post" action=(format!("/console/bookings/{id}/refund")) {
                    input type="hidden" name="csrf" value=(c.csrf);
                    input type="hidden" name="key" value=(key);
                    label for="amount" { "Amount (" (b.currency) ", at most " (money(refundable, &b.currency)) ")" }
                    input id="amount" name="amount" inputmode="decimal" required;
                    label for="refund-reason" { "Reason" }
                    textarea id="refund-reason" name="reason" required maxlength="1000" {}
                    button type="submit" { "Refund" }
                }
            }
            @if b.status == "expired" {
                section aria-labelledby="reinstate" {
                    h2 id="reinstate" { "Reinstate" }
                    form.stack method="post" action=(format!("/console/bookings/{id}/reinstate")) {
                        input type="hidden" name="csrf" value=(c.csrf);
                        input type="hidden" name="key" value=(key);
                        label for="reinstate-reason" { "Reason" }
                        textarea id="reinstate-reason" name="reason" required maxlength="1000" {}
                        label.check { input type="checkbox" name="allow_overbook" value="true"; " Hold the seats even if the slot is full" }
                        button type="submit" { "Reinstate the booking" }
                    }
                }
            }
            section aria-labelledby="cancel" {
                h2 id="cancel" { "Cancel" }
                form.stack method="post" action=(format!("/console/bookings/{id}/force-cancel")) {
                    input type="hidden" name="csrf" value=(c.csrf);
                    input type="hidden" name="key" value=(key);
                    label for="cancel-reason" { "Reason" }
                    textarea id="cancel-reason" name="reason" required maxlength="1000" {}
                    label.check { input type="checkbox" name="waive_fee" value="true"; " Refund everything (waive the policy's fee)" }
                    button type="submit" { "Cancel the booking" }
                }
            }
        },
    ))
}

/// An amount typed by a person (`12`, `12.5`, `12.50`) in minor units.
fn minor_units(raw: &str) -> Result<i64, ConsoleError> {
    let bad = || {
        ConsoleError::Api(ApiError::Invalid(vec![crate::http::error::FieldError {
            field: "amount".into(),
            message: "an amount such as 12.50".into(),
        }]))
    };
    let raw = raw.trim();
    let (whole, fraction) = raw.split_once('.').unwrap_or((raw, ""));
    if whole.is_empty() || fraction.len() > 2 || !whole.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    if !fraction.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let whole: i64 = whole.parse().map_err(|_| bad())?;
    let cents: i64 = format!("{fraction:0<2}").parse().map_err(|_| bad())?;
    whole
        .checked_mul(100)
        .and_then(|w| w.checked_add(cents))
        .ok_or_else(bad)
}

#[derive(Debug, Deserialize)]
pub struct RefundForm {
    csrf: String,
    key: String,
    amount: String,
    reason: String,
}

/// What a command run through the API's `run_once` answered: done, or refused with the problem's words.
pub(super) async fn outcome(response: Response) -> Result<(), ConsoleError> {
    answered_json(response).await.map(|_| ())
}

/// A command's JSON answer, or its refusal with the problem's words.
pub(super) async fn answered_json(response: Response) -> Result<serde_json::Value, ConsoleError> {
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    if status.is_success() {
        return Ok(serde_json::from_slice(&body).unwrap_or_default());
    }
    let problem: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let field = |name: &str| problem[name].as_str().unwrap_or("refused").to_owned();
    let detail = match problem["errors"].as_array() {
        Some(errors) if !errors.is_empty() => errors
            .iter()
            .map(|e| {
                format!(
                    "{}: {}",
                    e["field"].as_str().unwrap_or(""),
                    e["message"].as_str().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        _ => field("detail"),
    };
    Err(ConsoleError::Refused {
        status,
        detail,
        code: field("code"),
    })
}

fn done(id: Uuid, what: &str) -> Response {
    done_at(&format!("/console/bookings/{id}"), what)
}

/// Back to `path`, saying what was done.
pub(super) fn done_at(path: &str, what: &str) -> Response {
    Redirect::to(&format!("{path}?done={}", percent(what))).into_response()
}

/// Refund part of a booking: the same command, checks and idempotency as
/// `POST /admin/bookings/{id}/refund`.
pub async fn refund(
    State(state): State<AppState>,
    c: Console<Admin>,
    Path(id): Path<String>,
    f: Result<Form<RefundForm>, FormRejection>,
) -> Result<Response, ConsoleError> {
    let id = parse_uuid("booking", &id)?;
    let f = form(f)?;
    c.check_csrf(&f.csrf)?;
    let request = admin_routes::RefundRequest {
        amount_minor: minor_units(&f.amount)?,
        reason: f.reason,
    };
    let answer = admin_routes::refund_command(
        &state,
        &c.caller,
        IdempotencyKey(Some(format!("console:{}", f.key))),
        id,
        request,
    )
    .await?;
    outcome(answer).await?;
    Ok(done(id, "Refund requested."))
}

#[derive(Debug, Deserialize)]
pub struct CancelForm {
    csrf: String,
    key: String,
    reason: String,
    #[serde(default)]
    waive_fee: Option<String>,
}

/// Cancel a booking: `POST /admin/bookings/{id}/force-cancel`'s command.
pub async fn force_cancel(
    State(state): State<AppState>,
    c: Console<Admin>,
    Path(id): Path<String>,
    f: Result<Form<CancelForm>, FormRejection>,
) -> Result<Response, ConsoleError> {
    let id = parse_uuid("booking", &id)?;
    let f = form(f)?;
    c.check_csrf(&f.csrf)?;
    let request = admin_routes::ForceCancelRequest {
        reason: f.reason,
        waive_fee: f.waive_fee.as_deref() == Some("true"),
    };
    let answer = admin_routes::force_cancel_command(
        &state,
        &c.caller,
        IdempotencyKey(Some(format!("console:{}", f.key))),
        id,
        request,
    )
    .await?;
    outcome(answer).await?;
    Ok(done(id, "Booking cancelled."))
}

// ---------------------------------------------------------------------------------------------
// Providers: their slots and who is coming.

#[derive(Debug, Default, Deserialize)]
pub struct MonthQuery {
    /// `YYYY-MM`; this month by default.
    month: Option<String>,
}

/// A provider's listings, and their slots as a month calendar (weeks by rows, Monday first);
/// each slot links to its manifest and door. Admins see every provider's.
pub async fn slots(
    State(state): State<AppState>,
    c: Console<ProviderOrAdmin>,
    q: Result<Query<MonthQuery>, axum::extract::rejection::QueryRejection>,
) -> Page {
    use chrono::{Datelike, Months, NaiveDate};
    let q = query(q)?;
    let today = state.clock.now().date_naive();
    let first = match nonblank(&q.month) {
        Some(m) => NaiveDate::parse_from_str(&format!("{m}-01"), "%Y-%m-%d").map_err(|_| {
            ApiError::Invalid(vec![crate::http::error::FieldError {
                field: "month".into(),
                message: "a month such as 2026-12".into(),
            }])
        })?,
        None => today.with_day(1).unwrap_or(today),
    };
    let next = first.checked_add_months(Months::new(1)).unwrap_or(first);
    let prev = first.checked_sub_months(Months::new(1)).unwrap_or(first);
    let admin = c.caller.has(tessera_domain::user::Role::Admin);
    let in_month = tessera_projections::models::catalog::slots_starting_between(
        &state.pool,
        first.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc(),
        next.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc(),
    )
    .await
    .map_err(tessera_projections::ProjectionError::from)?;
    let mut mine: Vec<_> = in_month
        .into_iter()
        .filter(|s| admin || s.provider_id == c.caller.user_id.0)
        .collect();
    mine.sort_by_key(|s| (s.starts_at, s.slot_id));
    let listings = if admin {
        Vec::new()
    } else {
        tessera_projections::models::catalog::provider_listings(&state.pool, c.caller.user_id.0)
            .await
            .map_err(tessera_projections::ProjectionError::from)?
    };
    // The calendar's weeks: from the Monday on or before the 1st to the Sunday on or after the
    // month's last day.
    let start = first - chrono::Duration::days(i64::from(first.weekday().num_days_from_monday()));
    let last = next - chrono::Duration::days(1);
    let end = last + chrono::Duration::days(i64::from(6 - last.weekday().num_days_from_monday()));
    let weeks: Vec<Vec<NaiveDate>> = {
        let mut weeks = Vec::new();
        let mut day = start;
        while day <= end {
            weeks.push((0..7).map(|i| day + chrono::Duration::days(i)).collect());
            day += chrono::Duration::days(7);
        }
        weeks
    };
    let month_name = first.format("%B %Y").to_string();
    Ok(page(
        Some(&c),
        "Slots",
        html! {
            @if !listings.is_empty() {
                section aria-labelledby="listings" {
                    h2 id="listings" { "Listings" }
                    ul {
                        @for l in &listings {
                            li { (l.title) " — " (l.destination) ", " (money(l.price_minor, &l.currency)) }
                        }
                    }
                }
            }
            nav.month aria-label="Months" {
                a rel="prev" href=(format!("/console/slots?month={}", prev.format("%Y-%m"))) { "← " (prev.format("%B").to_string()) }
                " "
                strong { (month_name) }
                " "
                a rel="next" href=(format!("/console/slots?month={}", next.format("%Y-%m"))) { (next.format("%B").to_string()) " →" }
            }
            p role="status" { (mine.len()) " slots in " (month_name) }
            table.calendar {
                caption { (month_name) }
                thead { tr { @for d in ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"] { th scope="col" { (d) } } } }
                tbody {
                    @for week in &weeks {
                        tr {
                            @for day in week {
                                td.out[day.month() != first.month()] .today[*day == today] {
                                    div.date { (day.day()) }
                                    ul {
                                        @for s in mine.iter().filter(|s| s.starts_at.date_naive() == *day) {
                                            li {
                                                a href=(format!("/console/slots/{}", s.slot_id)) {
                                                    (s.starts_at.format("%H:%M").to_string()) " " (s.title)
                                                }
                                                " " small { (s.confirmed) "/" (s.capacity) }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    ))
}

#[derive(Debug, Default, Deserialize)]
pub struct ManifestQuery {
    done: Option<String>,
}

/// Who is coming to a slot (the API's manifest), and the door: a ticket's code, typed or read
/// by a scanner that types, checks it in.
pub async fn manifest(
    State(state): State<AppState>,
    c: Console<ProviderOrAdmin>,
    Path(id): Path<String>,
    q: Result<Query<ManifestQuery>, axum::extract::rejection::QueryRejection>,
) -> Page {
    let id = parse_uuid("slot", &id)?;
    let done = query(q)?.done;
    let m = provider::slot_manifest(&state, &c.caller, id, MinPosition(None)).await?;
    Ok(page(
        Some(&c),
        &format!("Slot {}", when(m.starts_at)),
        html! {
            @if let Some(d) = done { p.ok role="status" { (d) } }
            section aria-labelledby="door" {
                h2 id="door" { "Check-in" }
                form.inline method="post" action=(format!("/console/slots/{id}/check-in")) {
                    input type="hidden" name="csrf" value=(c.csrf);
                    input type="hidden" name="key" value=(Uuid::new_v4());
                    label for="ticket" { "Ticket code" }
                    input id="ticket" name="token" required autocomplete="off" size="40" autofocus;
                    button type="submit" { "Check in" }
                }
            }
            p role="status" {
                (m.confirmed_seats) " seats confirmed, " (m.held_seats) " held, "
                (m.checked_in_seats) " checked in, of " (m.capacity)
                @if m.cancelled { " — cancelled" }
            }
            table {
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Seats" } th scope="col" { "Status" }
                    th scope="col" { "Checked in" } th scope="col" { "Booking" }
                } }
                tbody {
                    @for b in &m.bookings {
                        tr {
                            td { (b.contact_name) }
                            td.num { (b.seats) }
                            td { (b.status) }
                            td.num { (b.checked_in_seats) }
                            td { code { (b.booking_id) } }
                        }
                    }
                }
            }
        },
    ))
}

#[derive(Debug, Deserialize)]
pub struct CheckInForm {
    csrf: String,
    key: String,
    token: String,
}

/// Checks a ticket in at the slot's door: `POST /provider/slots/{id}/check-in`'s command, with
/// the same door-keeper rule (the slot's provider or an admin here).
pub async fn check_in(
    State(state): State<AppState>,
    c: Console<ProviderOrAdmin>,
    Path(id): Path<String>,
    f: Result<Form<CheckInForm>, FormRejection>,
) -> Result<Response, ConsoleError> {
    let id = parse_uuid("slot", &id)?;
    let f = form(f)?;
    c.check_csrf(&f.csrf)?;
    let door = tickets::DoorKeeper::at(&state, c.caller.clone(), id).await?;
    let answer = tickets::check_in_command(
        &state,
        door,
        IdempotencyKey(Some(format!("console:{}", f.key))),
        id,
        tickets::CheckInRequest {
            token: f.token.trim().to_owned(),
        },
    )
    .await?;
    let body = answered_json(answer).await?;
    let said = format!(
        "Checked in: {}, seat {} ({} of {} in).",
        body["contact_name"].as_str().unwrap_or(""),
        body["seat"],
        body["checked_in_seats"],
        body["seats"]
    );
    Ok(done_at(&format!("/console/slots/{id}"), &said))
}
