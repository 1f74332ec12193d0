//! Money to providers: a provider's payout account (onboarding at the gateway), the commission
//! admins set per provider, provider statements (JSON and CSV, from the ledger read model), and
//! the ledger check that reconciles the books with the gateway.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{Datelike, NaiveDate, NaiveTime};
use serde::{Deserialize, Serialize};
use tessera_commands::{ledger, money, users};
use tessera_domain::provider::ProviderState;
use tessera_domain::values::UserId;
use tessera_log::clock::new_command_id;
pub use tessera_projections::models::payments::{self, PayoutView, StatementLine, StatementTotals};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{CommandResult, IdempotencyKey, context, run_once};
use crate::http::auth::Require;
use crate::http::auth::roles::{Admin, AuditorOrAdmin, Provider};
use crate::http::error::{ApiError, FieldError, Problem};
use crate::http::positions::{MinPosition, MinPositionHeader, reads};
use crate::http::{ApiJson, ApiPath, ApiQuery, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(payout_account, open_payout_account))
        .routes(routes!(set_commission))
        .routes(routes!(ledger_check))
        .routes(routes!(my_statement))
        .routes(routes!(provider_statement))
        .routes(routes!(my_payouts))
        .routes(routes!(provider_payouts))
}

/// The period of a statement: `from` (inclusive) to `to` (exclusive), whole UTC days; by
/// default the current month. `format=csv` answers with CSV instead of JSON.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatementQuery {
    /// First day (inclusive), `YYYY-MM-DD`.
    pub from: Option<NaiveDate>,
    /// Day after the last (exclusive), `YYYY-MM-DD`; at most 366 days after `from`.
    pub to: Option<NaiveDate>,
    /// `json` (default) or `csv`.
    #[param(inline)]
    pub format: Option<StatementFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StatementFormat {
    Json,
    Csv,
}

/// A provider's statement for a period: per currency, what the platform owed it at the start,
/// the bookings released (share plus commission), the commission, the provider's part of
/// refunds after the release, what was transferred, and what is owed at the end; and every
/// posting of the period. Then the payouts of the period: what the gateway paid out of the
/// provider's connected account to its bank (the provider's own money after the transfer, so
/// outside the balance above), failed ones included.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Statement {
    pub provider_id: Uuid,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub totals: Vec<StatementTotals>,
    pub lines: Vec<StatementLine>,
    pub payouts: Vec<PayoutView>,
}

fn period(q: &StatementQuery, today: NaiveDate) -> Result<(NaiveDate, NaiveDate), ApiError> {
    let from = q.from.unwrap_or_else(|| today.with_day(1).unwrap_or(today));
    let to = q.to.unwrap_or_else(|| {
        from.checked_add_months(chrono::Months::new(1))
            .unwrap_or(from)
    });
    if to <= from || (to - from).num_days() > 366 {
        return Err(ApiError::Invalid(vec![FieldError {
            field: "to".into(),
            message: "the period ends after it starts and spans at most 366 days".into(),
        }]));
    }
    Ok((from, to))
}

async fn statement(
    state: &AppState,
    provider: Uuid,
    q: &StatementQuery,
) -> Result<Response, ApiError> {
    let (from, to) = period(q, state.clock.now().date_naive())?;
    let (start, end) = (
        from.and_time(NaiveTime::MIN).and_utc(),
        to.and_time(NaiveTime::MIN).and_utc(),
    );
    let (totals, lines) = payments::provider_statement(&state.pool, provider, start, end)
        .await
        .map_err(tessera_projections::ProjectionError::from)?;
    let payouts = payments::provider_payouts(&state.pool, provider, Some(start), Some(end))
        .await
        .map_err(tessera_projections::ProjectionError::from)?;
    let statement = Statement {
        provider_id: provider,
        from,
        to,
        totals,
        lines,
        payouts,
    };
    if q.format != Some(StatementFormat::Csv) {
        return Ok(Json(statement).into_response());
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"statement-{provider}-{from}-{to}.csv\""),
            ),
        ],
        csv_of(&statement)?,
    )
        .into_response())
}

/// The statement as CSV: one row per total (`line` = `opening`, `bookings`, …) per currency,
/// then one row per posting.
fn csv_of(s: &Statement) -> Result<String, ApiError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let fail = |e: csv::Error| ApiError::Internal(format!("statement CSV: {e}"));
    w.write_record([
        "line",
        "at",
        "kind",
        "booking_id",
        "payment_id",
        "currency",
        "bookings_minor",
        "commission_minor",
        "owed_minor",
    ])
    .map_err(fail)?;
    for t in &s.totals {
        for (name, amount) in [
            ("opening", t.opening_minor),
            ("bookings", t.bookings_minor),
            ("commission", t.commission_minor),
            ("commission_returned", t.commission_returned_minor),
            ("refunds", t.refunds_minor),
            ("transferred", t.transferred_minor),
            ("closing", t.closing_minor),
        ] {
            let amount = amount.to_string();
            w.write_record([name, "", "", "", "", &t.currency, "", "", &amount])
                .map_err(fail)?;
        }
    }
    for l in &s.lines {
        w.write_record([
            "posting",
            &l.at.to_rfc3339(),
            &l.kind,
            &l.booking_id.to_string(),
            &l.payment_id.to_string(),
            &l.currency,
            &l.bookings_minor.to_string(),
            &l.commission_minor.to_string(),
            &l.owed_minor.to_string(),
        ])
        .map_err(fail)?;
    }
    for p in &s.payouts {
        // A payout's amount in `owed_minor`; its status and reference in `kind`.
        w.write_record([
            "payout",
            &p.updated_at.to_rfc3339(),
            &format!("{} {}", p.status, p.payout_ref),
            "",
            "",
            &p.currency,
            "",
            "",
            &p.amount_minor.to_string(),
        ])
        .map_err(fail)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| ApiError::Internal(format!("statement CSV: {e}")))?;
    String::from_utf8(bytes).map_err(|e| ApiError::Internal(format!("statement CSV: {e}")))
}

/// The caller's statement for a period, as JSON or CSV (providers).
#[utoipa::path(get, path = "/provider/statement", tag = "provider", security(("bearer" = [])),
    params(MinPositionHeader, StatementQuery),
    responses(
        (status = 200, description = "The statement", content(
            (Statement = "application/json"),
            (String = "text/csv"),
        )),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn my_statement(
    State(state): State<AppState>,
    caller: Require<Provider>,
    min: MinPosition,
    ApiQuery(q): ApiQuery<StatementQuery>,
) -> Result<Response, ApiError> {
    state.read_after(reads::PAYMENTS, min).await?;
    statement(&state, caller.user_id.0, &q).await
}

/// A provider's statement for a period, as JSON or CSV (admins, auditors).
#[utoipa::path(get, path = "/admin/providers/{provider_id}/statement", tag = "admin", security(("bearer" = [])),
    params(("provider_id" = Uuid, Path, description = "The provider"), MinPositionHeader, StatementQuery),
    responses(
        (status = 200, description = "The statement", content(
            (Statement = "application/json"),
            (String = "text/csv"),
        )),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn provider_statement(
    State(state): State<AppState>,
    _caller: Require<AuditorOrAdmin>,
    ApiPath(provider_id): ApiPath<Uuid>,
    min: MinPosition,
    ApiQuery(q): ApiQuery<StatementQuery>,
) -> Result<Response, ApiError> {
    state.read_after(reads::PAYMENTS, min).await?;
    statement(&state, provider_id, &q).await
}

/// The caller's payouts from its connected account to its bank, newest first, failed ones
/// with the gateway's reason (providers).
#[utoipa::path(get, path = "/provider/payouts", tag = "provider", security(("bearer" = [])),
    params(MinPositionHeader),
    responses(
        (status = 200, description = "The payouts", body = Vec<PayoutView>),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn my_payouts(
    State(state): State<AppState>,
    caller: Require<Provider>,
    min: MinPosition,
) -> Result<Json<Vec<PayoutView>>, ApiError> {
    state.read_after(reads::PAYMENTS, min).await?;
    Ok(Json(
        payments::provider_payouts(&state.pool, caller.user_id.0, None, None)
            .await
            .map_err(tessera_projections::ProjectionError::from)?,
    ))
}

/// A provider's payouts, newest first (admins, auditors).
#[utoipa::path(get, path = "/admin/providers/{provider_id}/payouts", tag = "admin", security(("bearer" = [])),
    params(("provider_id" = Uuid, Path, description = "The provider"), MinPositionHeader),
    responses(
        (status = 200, description = "The payouts", body = Vec<PayoutView>),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn provider_payouts(
    State(state): State<AppState>,
    _caller: Require<AuditorOrAdmin>,
    ApiPath(provider_id): ApiPath<Uuid>,
    min: MinPosition,
) -> Result<Json<Vec<PayoutView>>, ApiError> {
    state.read_after(reads::PAYMENTS, min).await?;
    Ok(Json(
        payments::provider_payouts(&state.pool, provider_id, None, None)
            .await
            .map_err(tessera_projections::ProjectionError::from)?,
    ))
}

/// A provider's money terms and payout account.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PayoutAccount {
    pub provider_id: Uuid,
    /// The platform's commission on bookings placed from now on, in basis points (1500 = 15 %).
    pub commission_bp: u32,
    /// `stripe` or `simulated`; absent before onboarding started.
    pub gateway: Option<String>,
    /// The gateway's connected account (`acct_…`).
    pub account_ref: Option<String>,
    /// `onboarding`, `active` or `restricted`; absent before onboarding started.
    pub status: Option<String>,
    /// Why the gateway restricted the account.
    pub restriction: Option<String>,
    /// Where to finish onboarding at the gateway, while it is not finished.
    pub onboarding_url: Option<String>,
    /// Released payments whose transfer waits for an active account.
    pub awaiting_transfers: usize,
}

impl PayoutAccount {
    fn of(provider_id: UserId, state: &ProviderState, onboarding_url: Option<String>) -> Self {
        let p = state.provider();
        let account = p.and_then(|p| p.account.as_ref());
        Self {
            provider_id: provider_id.0,
            commission_bp: state.commission_bp(),
            gateway: account.map(|a| a.gateway.clone()),
            account_ref: account.map(|a| a.account_ref.clone()),
            status: account.and_then(|a| {
                serde_json::to_value(a.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
            }),
            restriction: account.and_then(|a| a.restriction.clone()),
            onboarding_url,
            awaiting_transfers: p.map_or(0, |p| {
                if p.can_receive_transfers() {
                    0
                } else {
                    p.waiting.len()
                }
            }),
        }
    }
}

/// The caller's payout account (providers).
#[utoipa::path(get, path = "/provider/payout-account", tag = "provider", security(("bearer" = [])),
    responses(
        (status = 200, description = "Terms and account", body = PayoutAccount),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn payout_account(
    State(state): State<AppState>,
    caller: Require<Provider>,
) -> Result<Json<PayoutAccount>, ApiError> {
    let provider = money::provider_state(&*state.store, caller.user_id).await?;
    Ok(Json(PayoutAccount::of(caller.user_id, &provider, None)))
}

/// Start (or resume) onboarding at the payment gateway (providers). The first call opens the
/// connected account; every call answers with a fresh onboarding link until onboarding is done.
/// The simulated gateway onboards at once. A provider sells before onboarding completes: its
/// released money waits, and is transferred when the account becomes active.
#[utoipa::path(post, path = "/provider/payout-account", tag = "provider", security(("bearer" = [])),
    responses(
        (status = 200, description = "The account, with where to onboard", body = PayoutAccount),
        (status = 503, description = "The gateway is unreachable; retrying is safe", body = Problem, content_type = "application/problem+json"),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn open_payout_account(
    State(state): State<AppState>,
    caller: Require<Provider>,
) -> Result<Response, ApiError> {
    let user = users::current_user(&*state.store, caller.user_id).await?;
    let ctx = context(&state, &caller, new_command_id());
    let view = money::open_payout_account(
        &*state.store,
        &*state.gateway,
        caller.user_id,
        user.email.as_str(),
        &ctx,
    )
    .await?;
    Ok(Json(PayoutAccount::of(
        caller.user_id,
        &view.provider,
        view.onboarding_url,
    ))
    .into_response())
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommissionRequest {
    /// Basis points, 0 to 5,000 (1500 = 15 %). Applies to bookings placed from now on.
    pub commission_bp: u32,
    pub reason: String,
}

/// Set a provider's commission (admins). Bookings already placed keep the rate they were placed
/// at.
#[utoipa::path(put, path = "/admin/providers/{provider_id}/commission", tag = "admin", security(("bearer" = [])),
    request_body = CommissionRequest,
    params(("provider_id" = Uuid, Path, description = "The provider")),
    responses(
        (status = 200, description = "Set", body = CommandResult),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn set_commission(
    State(state): State<AppState>,
    caller: Require<Admin>,
    key: IdempotencyKey,
    ApiPath(provider_id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<CommissionRequest>,
) -> Result<Response, ApiError> {
    if req.commission_bp > tessera_domain::provider::MAX_COMMISSION_BP {
        return Err(ApiError::Invalid(vec![FieldError {
            field: "commission_bp".into(),
            message: "a commission is between 0 and 5000 basis points".into(),
        }]));
    }
    let request = (provider_id, &req);
    let why = Some(req.reason.as_str());
    run_once(
        &state,
        &caller,
        "admin.set_commission",
        key,
        &request,
        why,
        async |ctx| {
            let provider = UserId(provider_id);
            let user = users::current_user(&*state.store, provider).await?;
            if !user.roles.contains(&tessera_domain::user::Role::Provider) {
                return Err(ApiError::NotFound {
                    what: "provider",
                    id: provider_id.to_string(),
                });
            }
            Ok(money::set_commission(&*state.store, provider, req.commission_bp, &ctx).await?)
        },
    )
    .await
}

/// What the ledger check found.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LedgerCheck {
    /// No invariant broken and no difference with the gateway.
    pub clean: bool,
    /// Money events posted.
    pub postings: u64,
    /// The log position the check read up to.
    pub position: u64,
    /// The gateway reconciled with (`stripe`, `simulated`).
    pub gateway: String,
    pub balances: Vec<LedgerBalance>,
    /// Broken ledger invariants, one per line.
    pub violations: Vec<String>,
    /// Where the log and the gateway's records disagree, one per line.
    pub differences: Vec<String>,
    /// The document number series (receipts, credit notes).
    pub documents: DocumentSeries,
}

/// The document series: how many numbers each handed out, and every gap, double, or number
/// without its document.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DocumentSeries {
    /// Numbers handed out per series (`receipt-2026`, `credit-note-2026`).
    pub series: std::collections::BTreeMap<String, u64>,
    pub findings: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LedgerBalance {
    /// `gateway`, `customer_funds`, `commission_revenue` or `provider_payable:<id>`.
    pub account: String,
    pub currency: String,
    /// Debits minus credits, in minor units.
    pub amount_minor: i64,
}

impl From<ledger::LedgerReport> for LedgerCheck {
    fn from(r: ledger::LedgerReport) -> Self {
        Self {
            clean: r.is_clean(),
            documents: DocumentSeries {
                series: r.documents.series.clone(),
                findings: r.documents.findings.clone(),
            },
            postings: r.postings,
            position: r.position,
            gateway: r.gateway,
            balances: r
                .balances
                .into_iter()
                .map(|b| LedgerBalance {
                    account: b.account,
                    currency: b.currency,
                    amount_minor: b.amount_minor,
                })
                .collect(),
            violations: r.violations,
            differences: r.differences,
        }
    }
}

/// Recompute the double-entry ledger from the log, check its invariants, and reconcile it with
/// the payment gateway's own records (admins, auditors). Reads the whole log: an audit, not a
/// dashboard.
#[utoipa::path(get, path = "/admin/ledger/check", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, description = "The check's findings (`clean` says whether there are any)", body = LedgerCheck),
        (status = 503, description = "The gateway is unreachable; retrying is safe", body = Problem, content_type = "application/problem+json"),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn ledger_check(
    State(state): State<AppState>,
    _caller: Require<AuditorOrAdmin>,
) -> Result<Json<LedgerCheck>, ApiError> {
    Ok(Json(ledger_report(&state).await?))
}

/// What `GET /admin/ledger/check` answers (the console's money page runs the same check).
pub async fn ledger_report(state: &AppState) -> Result<LedgerCheck, ApiError> {
    let report = ledger::check(&*state.store, &*state.gateway).await?;
    Ok(report.into())
}
