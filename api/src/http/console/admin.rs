//! Admins' and auditors' pages beyond bookings: users and their roles and points, the outbox's
//! dead letters, payouts and the ledger check. Each reads and acts through the function its
//! API route uses, under the same role set.

use axum::Form;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use uuid::Uuid;

use super::pages::{done_at, form, money, nonblank, outcome, parse_uuid, query, when};
use super::session::Console;
use super::{ConsoleError, page};
use crate::http::AppState;
use crate::http::auth::roles::{Admin, AuditorOrAdmin};
use crate::http::routes::{
    IdempotencyKey, admin as admin_routes, money as money_routes, notifications,
};

const ROLES: [&str; 5] = ["customer", "provider", "admin", "auditor", "analyst"];

#[derive(Debug, Default, Deserialize)]
pub struct UserSearch {
    email: Option<String>,
    q: Option<String>,
    role: Option<String>,
    done: Option<String>,
}

/// Users by address, name words or role, each with their roles and the forms to change them.
pub async fn users(
    State(state): State<AppState>,
    c: Console<Admin>,
    q: Result<Query<UserSearch>, QueryRejection>,
) -> Result<Markup, ConsoleError> {
    let q = query(q)?;
    let search = admin_routes::AdminUsersQuery {
        email: nonblank(&q.email),
        q: nonblank(&q.q),
        role: nonblank(&q.role),
        limit: Some(50),
        ..Default::default()
    };
    let found = admin_routes::find_users(&state, search.clone()).await?;
    let key = Uuid::new_v4();
    Ok(page(
        Some(&c),
        "Users",
        html! {
            @if let Some(d) = &q.done { p.ok role="status" { (d) } }
            form.inline method="get" action="/console/users" {
                label for="email" { "E-mail address" }
                input id="email" name="email" type="email" value=[search.email.as_deref()];
                label for="q" { "Name" }
                input id="q" name="q" value=[search.q.as_deref()];
                label for="role" { "Role" }
                select id="role" name="role" {
                    option value="" { "any" }
                    @for r in ROLES { option value=(r) selected[search.role.as_deref() == Some(r)] { (r) } }
                }
                button type="submit" { "Search" }
            }
            table {
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Roles" } th scope="col" { "State" }
                    th scope="col" { "Change a role" } th scope="col" { "Points" }
                } }
                tbody {
                    @for u in &found {
                        tr data-user=(u.user_id) {
                            td { (u.display_name) br; small { code { (u.user_id) } } }
                            td { (u.roles.join(", ")) }
                            td {
                                @if u.erased { "erased" } @else if u.suspended { "suspended" } @else { "active" }
                                @if !u.email_verified { br; small { "address unconfirmed" } }
                            }
                            td {
                                form.stack method="post" action=(format!("/console/users/{}/roles", u.user_id)) {
                                    input type="hidden" name="csrf" value=(c.csrf);
                                    input type="hidden" name="key" value=(key);
                                    label for=(format!("role-{}", u.user_id)) { "Role" }
                                    select id=(format!("role-{}", u.user_id)) name="role" {
                                        @for r in ROLES { option value=(r) { (r) } }
                                    }
                                    label for=(format!("role-reason-{}", u.user_id)) { "Reason" }
                                    input id=(format!("role-reason-{}", u.user_id)) name="reason" required maxlength="1000";
                                    div {
                                        button type="submit" name="change" value="grant" { "Grant" } " "
                                        button type="submit" name="change" value="revoke" { "Revoke" }
                                    }
                                }
                            }
                            td {
                                form.stack method="post" action=(format!("/console/users/{}/points", u.user_id)) {
                                    input type="hidden" name="csrf" value=(c.csrf);
                                    input type="hidden" name="key" value=(key);
                                    label for=(format!("delta-{}", u.user_id)) { "Points (+/−)" }
                                    input id=(format!("delta-{}", u.user_id)) name="delta" inputmode="numeric" required;
                                    label for=(format!("points-reason-{}", u.user_id)) { "Reason" }
                                    input id=(format!("points-reason-{}", u.user_id)) name="reason" required maxlength="1000";
                                    div { button type="submit" { "Adjust points" } }
                                }
                            }
                        }
                    }
                }
            }
            @if found.is_empty() { p role="status" { "No users match." } }
        },
    ))
}

#[derive(Debug, Deserialize)]
pub struct RoleForm {
    csrf: String,
    key: String,
    role: String,
    reason: String,
    change: String,
}

pub async fn change_role(
    State(state): State<AppState>,
    c: Console<Admin>,
    Path(id): Path<String>,
    f: Result<Form<RoleForm>, FormRejection>,
) -> Result<Response, ConsoleError> {
    let id = parse_uuid("user", &id)?;
    let f = form(f)?;
    c.check_csrf(&f.csrf)?;
    let grant = f.change == "grant";
    let request = admin_routes::RoleRequest {
        role: f.role.clone(),
        reason: f.reason,
    };
    let key = IdempotencyKey(Some(format!("console:{}:{}", f.key, id)));
    let answer = admin_routes::change_role(&state, &c.caller, key, id, &request, grant).await?;
    outcome(answer).await?;
    let what = if grant { "granted" } else { "revoked" };
    Ok(done_at(
        "/console/users",
        &format!("Role {} {what}.", f.role),
    ))
}

#[derive(Debug, Deserialize)]
pub struct PointsForm {
    csrf: String,
    key: String,
    delta: String,
    reason: String,
}

pub async fn adjust_points(
    State(state): State<AppState>,
    c: Console<Admin>,
    Path(id): Path<String>,
    f: Result<Form<PointsForm>, FormRejection>,
) -> Result<Response, ConsoleError> {
    let id = parse_uuid("user", &id)?;
    let f = form(f)?;
    c.check_csrf(&f.csrf)?;
    let delta: i64 = f
        .delta
        .trim()
        .trim_start_matches('+')
        .parse()
        .map_err(|_| {
            ConsoleError::Api(crate::http::error::ApiError::Invalid(vec![
                crate::http::error::FieldError {
                    field: "delta".into(),
                    message: "a whole number of points, such as 100 or -50".into(),
                },
            ]))
        })?;
    let request = admin_routes::PointsRequest {
        delta,
        reason: f.reason,
    };
    let key = IdempotencyKey(Some(format!("console:{}:{}", f.key, id)));
    let answer = admin_routes::points_command(&state, &c.caller, key, id, request).await?;
    outcome(answer).await?;
    Ok(done_at("/console/users", &format!("{delta:+} points.")))
}

#[derive(Debug, Default, Deserialize)]
pub struct OutboxSearch {
    status: Option<String>,
    done: Option<String>,
}

/// The outbox: dead letters first (what could not be delivered), with retry and discard.
pub async fn outbox(
    State(state): State<AppState>,
    c: Console<AuditorOrAdmin>,
    q: Result<Query<OutboxSearch>, QueryRejection>,
) -> Result<Markup, ConsoleError> {
    let q = query(q)?;
    let status = nonblank(&q.status).unwrap_or_else(|| "dead".into());
    let messages = notifications::find_messages(
        &state,
        notifications::OutboxQuery {
            status: Some(status.clone()),
            limit: Some(200),
            ..Default::default()
        },
    )
    .await?;
    let admin = c.caller.has(tessera_domain::user::Role::Admin);
    Ok(page(
        Some(&c),
        "Outbox",
        html! {
            @if let Some(d) = &q.done { p.ok role="status" { (d) } }
            form.inline method="get" action="/console/outbox" {
                label for="status" { "Status" }
                select id="status" name="status" {
                    @for s in ["dead", "pending", "sent", "discarded"] { option value=(s) selected[status == s] { (s) } }
                }
                button type="submit" { "Show" }
            }
            p role="status" { (messages.len()) " " (status) " messages" }
            table {
                thead { tr {
                    th scope="col" { "Message" } th scope="col" { "To" } th scope="col" { "Attempts" }
                    th scope="col" { "Last error" } th scope="col" { "Created" }
                    @if admin { th scope="col" { "Action" } }
                } }
                tbody {
                    @for m in &messages {
                        tr {
                            td { (m.template) br; small { (m.subject) } }
                            td { (m.address.as_deref().unwrap_or("[erased]")) }
                            td.num { (m.attempts) }
                            td { (m.last_error.as_deref().unwrap_or("")) }
                            td { (when(m.created_at)) }
                            @if admin {
                                td {
                                    form.stack method="post" action=(format!("/console/outbox/{}", m.id)) {
                                        input type="hidden" name="csrf" value=(c.csrf);
                                        label for=(format!("why-{}", m.id)) { "Reason" }
                                        input id=(format!("why-{}", m.id)) name="reason" required maxlength="1000";
                                        div {
                                            @if m.status != "pending" { button type="submit" name="action" value="retry" { "Retry" } " " }
                                            @if m.status == "pending" || m.status == "dead" { button type="submit" name="action" value="discard" { "Discard" } }
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

#[derive(Debug, Deserialize)]
pub struct MessageForm {
    csrf: String,
    reason: String,
    action: String,
}

pub async fn message_action(
    State(state): State<AppState>,
    c: Console<Admin>,
    Path(id): Path<String>,
    f: Result<Form<MessageForm>, FormRejection>,
) -> Result<Response, ConsoleError> {
    let id = parse_uuid("message", &id)?;
    let f = form(f)?;
    c.check_csrf(&f.csrf)?;
    let retry = f.action == "retry";
    let _changed = notifications::change(&state, &c.caller, id, &f.reason, retry).await?;
    Ok(done_at(
        "/console/outbox",
        if retry { "Queued again." } else { "Discarded." },
    ))
}

#[derive(Debug, Default, Deserialize)]
pub struct MoneyQuery {
    check: Option<String>,
}

/// Payouts to providers, and the ledger check on demand (it reads the whole log and asks the
/// gateway: an audit, not a dashboard).
pub async fn money_page(
    State(state): State<AppState>,
    c: Console<AuditorOrAdmin>,
    q: Result<Query<MoneyQuery>, QueryRejection>,
) -> Result<Markup, ConsoleError> {
    let q = query(q)?;
    let payouts = tessera_projections::models::payments::recent_payouts(&state.pool, 100)
        .await
        .map_err(tessera_projections::ProjectionError::from)?;
    let check = match q.check {
        Some(_) => Some(money_routes::ledger_report(&state).await?),
        None => None,
    };
    Ok(page(
        Some(&c),
        "Money",
        html! {
            section aria-labelledby="ledger" {
                h2 id="ledger" { "Ledger check" }
                form method="get" action="/console/money" {
                    input type="hidden" name="check" value="1";
                    button type="submit" { "Run the ledger check" }
                }
                @if let Some(r) = &check {
                    p role="status" {
                        @if r.clean { strong.ok data-ledger="clean" { "Clean: " } } @else { strong.error data-ledger="findings" { "Findings: " } }
                        (r.postings) " money events posted up to position " (r.position) ", reconciled with " (r.gateway) "."
                    }
                    @for v in r.violations.iter().chain(&r.differences) { p.error { (v) } }
                    table {
                        thead { tr { th scope="col" { "Account" } th scope="col" { "Balance" } } }
                        tbody {
                            @for b in &r.balances {
                                tr { td { (b.account) } td.num { (money(b.amount_minor, &b.currency)) } }
                            }
                        }
                    }
                }
            }
            section aria-labelledby="payouts" {
                h2 id="payouts" { "Payouts" }
                table {
                    thead { tr {
                        th scope="col" { "Provider" } th scope="col" { "Payout" } th scope="col" { "Status" }
                        th scope="col" { "Amount" } th scope="col" { "Updated" }
                    } }
                    tbody {
                        @for p in &payouts {
                            tr {
                                td { code { (p.provider_id) } }
                                td { code { (p.payout_ref) } }
                                td { (p.status) @if let Some(f) = &p.failure { br; small.error { (f) } } }
                                td.num { (money(p.amount_minor, &p.currency)) }
                                td { (when(p.updated_at)) }
                            }
                        }
                    }
                }
                @if payouts.is_empty() { p role="status" { "No payouts yet." } }
            }
        },
    ))
}

#[derive(Debug, Deserialize)]
pub struct ReinstateForm {
    csrf: String,
    key: String,
    reason: String,
    #[serde(default)]
    allow_overbook: Option<String>,
}

/// Bring an expired booking back: `POST /admin/bookings/{id}/reinstate`'s command.
pub async fn reinstate(
    State(state): State<AppState>,
    c: Console<Admin>,
    Path(id): Path<String>,
    f: Result<Form<ReinstateForm>, FormRejection>,
) -> Result<Response, ConsoleError> {
    let id = parse_uuid("booking", &id)?;
    let f = form(f)?;
    c.check_csrf(&f.csrf)?;
    let request = admin_routes::ReinstateRequest {
        reason: f.reason,
        allow_overbook: f.allow_overbook.as_deref() == Some("true"),
    };
    let key = IdempotencyKey(Some(format!("console:{}", f.key)));
    let answer = admin_routes::reinstate_command(&state, &c.caller, key, id, request).await?;
    outcome(answer).await?;
    Ok(Redirect::to(&format!("/console/bookings/{id}?done=Reinstated.")).into_response())
}
