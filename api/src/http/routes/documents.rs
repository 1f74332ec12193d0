//! A booking's receipt and credit notes, as JSON or PDF: its customer's, and admins' and
//! auditors'; a provider's monthly commission invoices. Numbers, amounts and tax are as issued
//! on the log (see `tessera_commands::receipts`).

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tessera_projections::models::catalog;
pub use tessera_projections::models::payments::{self, DocumentView, InvoiceRow};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::http::auth::roles::{AuditorOrAdmin, Provider};
use crate::http::auth::{Caller, Require};
use crate::http::error::{ApiError, Problem};
use crate::http::pdf::{self, Line};
use crate::http::positions::{MinPosition, MinPositionHeader, reads};
use crate::http::{ApiPath, ApiQuery, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(booking_receipt))
        .routes(routes!(my_invoices))
        .routes(routes!(my_invoice))
        .routes(routes!(provider_invoices))
}

/// The caller's monthly commission invoices from the platform, newest month first (providers).
#[utoipa::path(get, path = "/provider/invoices", tag = "provider", security(("bearer" = [])),
    params(MinPositionHeader),
    responses(
        (status = 200, description = "The invoices", body = Vec<InvoiceRow>),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn my_invoices(
    State(state): State<AppState>,
    caller: Require<Provider>,
    min: MinPosition,
) -> Result<Json<Vec<InvoiceRow>>, ApiError> {
    state.read_after(reads::PAYMENTS, min).await?;
    Ok(Json(
        payments::provider_invoices(&state.pool, caller.user_id.0)
            .await
            .map_err(tessera_projections::ProjectionError::from)?,
    ))
}

/// One of the caller's commission invoices, as JSON or PDF (`format=pdf`) (providers).
#[utoipa::path(get, path = "/provider/invoices/{number}", tag = "provider", security(("bearer" = [])),
    params(("number" = String, Path, description = "The invoice's number, `INV-2026-000003`"),
           MinPositionHeader, DocumentQuery),
    responses(
        (status = 200, description = "The invoice", content(
            (InvoiceRow = "application/json"),
            (Vec<u8> = "application/pdf"),
        )),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn my_invoice(
    State(state): State<AppState>,
    caller: Require<Provider>,
    min: MinPosition,
    ApiPath(number): ApiPath<String>,
    ApiQuery(q): ApiQuery<DocumentQuery>,
) -> Result<Response, ApiError> {
    state.read_after(reads::PAYMENTS, min).await?;
    let invoice = payments::provider_invoices(&state.pool, caller.user_id.0)
        .await
        .map_err(tessera_projections::ProjectionError::from)?
        .into_iter()
        .find(|i| i.number == number)
        .ok_or_else(|| ApiError::NotFound {
            what: "invoice",
            id: number.clone(),
        })?;
    if q.format != Some(DocumentFormat::Pdf) {
        return Ok(Json(invoice).into_response());
    }
    let mut page = vec![
        Line::heading(format!("Commission invoice {}", invoice.number)),
        Line::text(format!(
            "Issued {} UTC by Tessera to provider {}",
            invoice.issued_at.format("%Y-%m-%d %H:%M"),
            invoice.provider_id
        )),
        Line::text(format!("Commission for {}", invoice.month)),
        Line::blank(),
    ];
    for l in &invoice.lines {
        page.push(Line::strong(format!(
            "Commission: {} ({} release(s) and refund(s))",
            amount(l.commission_minor, &l.currency),
            l.entries
        )));
    }
    pdf_response(
        &format!("Invoice {}", invoice.number),
        &[page],
        &invoice.number,
    )
}

/// A provider's commission invoices, newest month first (admins, auditors).
#[utoipa::path(get, path = "/admin/providers/{provider_id}/invoices", tag = "admin", security(("bearer" = [])),
    params(("provider_id" = Uuid, Path, description = "The provider"), MinPositionHeader),
    responses(
        (status = 200, description = "The invoices", body = Vec<InvoiceRow>),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn provider_invoices(
    State(state): State<AppState>,
    _caller: Require<AuditorOrAdmin>,
    ApiPath(provider_id): ApiPath<Uuid>,
    min: MinPosition,
) -> Result<Json<Vec<InvoiceRow>>, ApiError> {
    state.read_after(reads::PAYMENTS, min).await?;
    Ok(Json(
        payments::provider_invoices(&state.pool, provider_id)
            .await
            .map_err(tessera_projections::ProjectionError::from)?,
    ))
}

fn pdf_response(title: &str, pages: &[Vec<Line>], name: &str) -> Result<Response, ApiError> {
    let bytes = pdf::render(title, pages).map_err(|e| ApiError::Internal(format!("PDF: {e}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/pdf".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("inline; filename=\"{name}.pdf\""),
            ),
        ],
        bytes,
    )
        .into_response())
}

#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DocumentQuery {
    /// `json` (default) or `pdf`.
    #[param(inline)]
    pub format: Option<DocumentFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DocumentFormat {
    Json,
    Pdf,
}

/// A booking's receipt and the credit notes of its refunds.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BookingReceipt {
    pub booking_id: Uuid,
    pub customer_id: Uuid,
    pub listing_id: Uuid,
    /// The listing's title as it reads now.
    pub listing_title: Option<String>,
    /// The seller of record: the listing's provider (the platform collects as its agent).
    pub provider_id: Option<Uuid>,
    pub seats: i64,
    pub slot_starts_at: DateTime<Utc>,
    pub receipt: DocumentView,
    pub credit_notes: Vec<DocumentView>,
}

/// A booking's receipt with its credit notes, as JSON or PDF (`format=pdf`) (its customer,
/// admins, auditors). 404 until the payment succeeded and the receipt was issued.
#[utoipa::path(get, path = "/bookings/{booking_id}/receipt", tag = "bookings", security(("bearer" = [])),
    params(("booking_id" = Uuid, Path, description = "The booking"), MinPositionHeader, DocumentQuery),
    responses(
        (status = 200, description = "The receipt and its credit notes", content(
            (BookingReceipt = "application/json"),
            (Vec<u8> = "application/pdf"),
        )),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn booking_receipt(
    State(state): State<AppState>,
    caller: Caller,
    min: MinPosition,
    ApiPath(booking_id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<DocumentQuery>,
) -> Result<Response, ApiError> {
    state.read_after(reads::BOOKING_RECEIPT, min).await?;
    let booking = super::bookings::visible_booking(&state, &caller, booking_id).await?;
    let documents = payments::booking_documents(&state.pool, booking_id)
        .await
        .map_err(tessera_projections::ProjectionError::from)?;
    let (receipts, credit_notes): (Vec<_>, Vec<_>) =
        documents.into_iter().partition(|d| d.kind == "receipt");
    let receipt = receipts
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::NotFound {
            what: "receipt",
            id: booking_id.to_string(),
        })?;
    let listing = catalog::listing(&state.pool, booking.listing_id)
        .await
        .map_err(tessera_projections::ProjectionError::from)?;
    let doc = BookingReceipt {
        booking_id,
        customer_id: booking.customer_id,
        listing_id: booking.listing_id,
        listing_title: listing.as_ref().map(|l| l.title.clone()),
        provider_id: listing.as_ref().map(|l| l.provider_id),
        seats: booking.seats,
        slot_starts_at: booking.slot_starts_at,
        receipt,
        credit_notes,
    };
    if q.format != Some(DocumentFormat::Pdf) {
        return Ok(Json(doc).into_response());
    }
    pdf_response(
        &format!("Receipt {}", doc.receipt.number),
        &pages(&doc),
        &format!("receipt-{}", doc.receipt.number),
    )
}

/// `123456` minor units of `EUR` as `1,234.56 EUR`.
pub fn amount(minor: i64, currency: &str) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let (units, cents) = (minor.unsigned_abs() / 100, minor.unsigned_abs() % 100);
    let digits = units.to_string();
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{sign}{grouped}.{cents:02} {currency}")
}

fn rate(bp: i32) -> String {
    format!("{}.{:02} %", bp / 100, bp % 100)
}

/// One page for the receipt, one per credit note.
fn pages(doc: &BookingReceipt) -> Vec<Vec<Line>> {
    let r = &doc.receipt;
    let what = format!(
        "{} — {} seat(s), {} UTC",
        doc.listing_title.as_deref().unwrap_or("Booking"),
        doc.seats,
        doc.slot_starts_at.format("%Y-%m-%d %H:%M")
    );
    let parties = |lines: &mut Vec<Line>| {
        lines.push(Line::text(format!("Booking {}", doc.booking_id)));
        lines.push(Line::text(format!("Customer {}", doc.customer_id)));
        if let Some(p) = doc.provider_id {
            lines.push(Line::text(format!(
                "Sold by provider {p}; collected by Tessera as its agent"
            )));
        }
    };
    let mut receipt = vec![
        Line::heading(format!("Receipt {}", r.number)),
        Line::text(format!(
            "Issued {} UTC",
            r.issued_at.format("%Y-%m-%d %H:%M")
        )),
        Line::blank(),
    ];
    parties(&mut receipt);
    receipt.extend([
        Line::blank(),
        Line::text(what.clone()),
        Line::blank(),
        Line::strong(format!("Paid: {}", amount(r.amount_minor, &r.currency))),
        Line::text(format!(
            "Tax included ({}): {}",
            rate(r.tax_rate_bp),
            amount(r.tax_minor, &r.currency)
        )),
        Line::text(format!(
            "Net of tax: {}",
            amount(r.amount_minor - r.tax_minor, &r.currency)
        )),
    ]);
    let mut out = vec![receipt];
    for c in &doc.credit_notes {
        let mut note = vec![
            Line::heading(format!("Credit note {}", c.number)),
            Line::text(format!(
                "Issued {} UTC, corrects receipt {}",
                c.issued_at.format("%Y-%m-%d %H:%M"),
                c.receipt_number.as_deref().unwrap_or(&r.number)
            )),
            Line::blank(),
        ];
        parties(&mut note);
        note.extend([
            Line::blank(),
            Line::text(what.clone()),
            Line::blank(),
            Line::strong(format!("Refunded: {}", amount(c.amount_minor, &c.currency))),
            Line::text(format!(
                "Tax included ({}): {}",
                rate(c.tax_rate_bp),
                amount(c.tax_minor, &c.currency)
            )),
        ]);
        out.push(note);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::amount;

    #[test]
    fn amounts_print_with_grouping_and_two_decimals() {
        assert_eq!(amount(178_000, "EUR"), "1,780.00 EUR");
        assert_eq!(amount(5, "EUR"), "0.05 EUR");
        assert_eq!(amount(123_456_789, "USD"), "1,234,567.89 USD");
        assert_eq!(amount(-1_050, "EUR"), "-10.50 EUR");
    }
}
