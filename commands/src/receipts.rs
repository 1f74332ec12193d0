//! Receipts and credit notes, numbered gaplessly per year on the log (see
//! [`tessera_domain::receipt`]).
//!
//! A document is issued by **one atomic append** of two writes: its event on the payment's
//! stream (guarded by the payment's version: one receipt per payment, one credit note per
//! refund) and the number's event on the year's series stream (guarded by the series'
//! version: the n-th event takes number n). Two issuers racing for a number both read the
//! series at version v; one append commits, the other is refused and takes v + 2. A number
//! therefore exists only together with its document, and no two documents share one.
//!
//! Issuers in one process take turns per series (first come, first served) instead of racing;
//! across processes, the expected version decides and the loser backs off and retries.
//!
//! [`DocumentsReactor`] issues a receipt when a payment succeeds and a credit note when a
//! refund does, and accrues the platform's commission on the provider's stream (at a release,
//! less what a refund after it gives back), by month. Its commands derive their ids from the
//! event, so a redelivered event, or two reactor processes, replay one another instead of
//! issuing twice. [`issue_due_invoices`] invoices a provider's past months: one commission
//! invoice per month (`INV-2026-000003`), appended with its number like a receipt.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Datelike, Utc};
use tessera_domain::Aggregate;
use tessera_domain::booking::BookingAggregate;
use tessera_domain::payment::{PaymentAggregate, PaymentCommand, PaymentError, PaymentEvent};
use tessera_domain::provider::{
    ProviderAggregate, ProviderCommand, ProviderError, ProviderEvent, invoice_document,
};
use tessera_domain::receipt::{
    DocumentKind, DocumentNumber, SeriesAggregate, SeriesCommand, SeriesEvent, SeriesState,
};
use tessera_domain::values::{PaymentId, UserId, derived_id};
use tessera_log::codec::{self, AnyEvent};
use tessera_log::store::{EventStore, Position, RecordedEvent, StreamId, StreamRead};
use uuid::Uuid;

use crate::error::CommandError;
use crate::handler::{CommandContext, Loaded, execute, load, replayed, stream_of, write_for};
use crate::reactor::Reactor;

/// How often an issuer re-decides after losing a number to another process before giving up
/// (the reactor then retries the event).
const ATTEMPTS: u32 = 200;

/// What issuing did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Issued {
    /// This call issued the document under this number.
    New(DocumentNumber),
    /// The document already existed (a retry, a redelivered event, another issuer).
    Already(DocumentNumber),
}

impl Issued {
    pub fn number(&self) -> DocumentNumber {
        match self {
            Self::New(n) | Self::Already(n) => *n,
        }
    }
}

/// Issues the receipt of a succeeded payment, numbered in the series of the year of `ctx.now`,
/// stating the tax rate its booking snapshotted.
pub async fn issue_receipt(
    store: &dyn EventStore,
    issuer: &Issuer,
    payment_id: PaymentId,
    ctx: &CommandContext,
) -> Result<Issued, CommandError> {
    let tax_rate_bp = booking_tax_rate(store, payment_id).await?;
    issue(
        store,
        issuer,
        payment_id,
        DocumentKind::Receipt,
        payment_id.0,
        |number| PaymentCommand::IssueReceipt {
            number,
            tax_rate_bp,
        },
        ctx,
    )
    .await
}

/// Issues the credit note of a succeeded refund, referencing the payment's receipt.
pub async fn issue_credit_note(
    store: &dyn EventStore,
    issuer: &Issuer,
    payment_id: PaymentId,
    refund_id: Uuid,
    ctx: &CommandContext,
) -> Result<Issued, CommandError> {
    issue(
        store,
        issuer,
        payment_id,
        DocumentKind::CreditNote,
        refund_id,
        |number| PaymentCommand::IssueCreditNote { refund_id, number },
        ctx,
    )
    .await
}

/// Invoices every past month (before the month of `ctx.now`) in which `provider_id` accrued
/// commission and was not invoiced yet; returns the numbers issued. Safe to run any time, from
/// any number of processes: a month is invoiced once.
pub async fn issue_due_invoices(
    store: &dyn EventStore,
    issuer: &Issuer,
    provider_id: UserId,
    ctx: &CommandContext,
) -> Result<Vec<DocumentNumber>, CommandError> {
    let current = ctx.now.format("%Y-%m").to_string();
    let state = load::<ProviderAggregate>(
        store,
        stream_of::<ProviderAggregate>(provider_id),
        Uuid::nil(),
    )
    .await?
    .state;
    let Some(p) = state.provider() else {
        return Ok(Vec::new());
    };
    let due: Vec<String> = p
        .accrued
        .keys()
        .filter(|m| **m < current)
        .cloned()
        .collect();
    let mut issued = Vec::new();
    for month in due {
        let ctx = CommandContext {
            command_id: derived_id(ctx.command_id, month.as_bytes()),
            ..ctx.clone()
        };
        match issue_invoice(store, issuer, provider_id, &month, &ctx).await {
            Ok(Issued::New(n)) => issued.push(n),
            Ok(Issued::Already(_))
            | Err(CommandError::Provider(ProviderError::NothingToInvoice(_))) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(issued)
}

/// Invoices `provider_id`'s commission of `month`, numbered in the invoice series of the year
/// of `ctx.now`.
pub async fn issue_invoice(
    store: &dyn EventStore,
    issuer: &Issuer,
    provider_id: UserId,
    month: &str,
    ctx: &CommandContext,
) -> Result<Issued, CommandError> {
    let kind = DocumentKind::Invoice;
    let year = ctx.now.year();
    let series = kind.series(year);
    let series_stream = stream_of::<SeriesAggregate>(&series);
    let provider_stream = stream_of::<ProviderAggregate>(provider_id);
    let turn = issuer.turn_of(&series);
    let _turn = turn.lock().await;
    for attempt in 0..ATTEMPTS {
        let provider =
            load::<ProviderAggregate>(store, provider_stream.clone(), ctx.command_id).await?;
        if let Some(n) = provider
            .state
            .provider()
            .and_then(|p| p.invoiced.get(month))
        {
            return Ok(Issued::Already(*n));
        }
        let head = series_head(store, &series_stream).await?;
        let number = head.state.next(kind, year);
        let events = ProviderAggregate::decide(
            &provider.state,
            &ProviderCommand::Invoice {
                month: month.to_owned(),
                number,
            },
        )?;
        let numbered = SeriesAggregate::decide(
            &head.state,
            &SeriesCommand::Take {
                kind,
                year,
                document: invoice_document(provider_id, month),
            },
        )
        .unwrap_or_else(|never| match never {});
        let writes = vec![
            write_for(&provider, &events, ctx)?,
            write_for(&head, &numbered, ctx)?,
        ];
        match store.append(writes).await {
            Ok(_) => return Ok(Issued::New(number)),
            Err(e) if e.is_conflict() => backoff(attempt).await,
            Err(e) => return Err(e.into()),
        }
    }
    Err(CommandError::Contention { attempts: ATTEMPTS })
}

/// Accrues commission on the provider's stream, in the month of the event that moved it.
async fn accrue(
    store: &dyn EventStore,
    provider_id: UserId,
    payment_id: PaymentId,
    at: DateTime<Utc>,
    currency: tessera_domain::values::Currency,
    commission_minor: i64,
    ctx: &CommandContext,
) -> Result<(), CommandError> {
    if commission_minor == 0 {
        return Ok(());
    }
    execute::<ProviderAggregate>(
        store,
        stream_of::<ProviderAggregate>(provider_id),
        &ProviderCommand::Accrue {
            provider_id,
            payment_id,
            month: at.format("%Y-%m").to_string(),
            currency,
            commission_minor,
        },
        ctx,
    )
    .await?;
    Ok(())
}

async fn booking_tax_rate(
    store: &dyn EventStore,
    payment_id: PaymentId,
) -> Result<u32, CommandError> {
    let payment = load::<PaymentAggregate>(
        store,
        stream_of::<PaymentAggregate>(payment_id),
        Uuid::nil(),
    )
    .await?;
    let Some(p) = payment.state.payment() else {
        return Err(PaymentError::NotCreated.into());
    };
    let booking = load::<BookingAggregate>(
        store,
        stream_of::<BookingAggregate>(p.booking_id),
        Uuid::nil(),
    )
    .await?;
    Ok(booking.state.booking().map_or(0, |b| b.tax_rate_bp))
}

/// One process's issuer: it hands out turns per series, so that the process's issuers queue
/// instead of racing each other (across processes the expected version decides). Clones share
/// the turns.
#[derive(Debug, Clone, Default)]
pub struct Issuer {
    turns: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl Issuer {
    fn turn_of(&self, series: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.turns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(series.to_owned())
            .or_default()
            .clone()
    }
}

/// The series stream at its head: its version and how many numbers it handed out, from its
/// last event only (a year's series is long; the next number needs only its end).
async fn series_head(
    store: &dyn EventStore,
    stream: &StreamId,
) -> Result<Loaded<SeriesAggregate>, CommandError> {
    let last = store
        .read_stream(stream, StreamRead::Backward { from: None }, 1)
        .await?;
    let mut loaded = Loaded::<SeriesAggregate>::new_stream(stream.clone());
    if let Some(e) = last.first() {
        let SeriesEvent::DocumentNumbered { number, .. } =
            codec::decode(&e.event_type, e.schema_version, &e.data)
                .map_err(|e| CommandError::Codec(e.to_string()))?;
        loaded.state = SeriesState { taken: number.seq };
        loaded.version = e.stream_version;
        loaded.last_position = e.position;
    }
    Ok(loaded)
}

async fn issue(
    store: &dyn EventStore,
    issuer: &Issuer,
    payment_id: PaymentId,
    kind: DocumentKind,
    document: Uuid,
    command: impl Fn(DocumentNumber) -> PaymentCommand,
    ctx: &CommandContext,
) -> Result<Issued, CommandError> {
    let year = ctx.now.year();
    let series = kind.series(year);
    let series_stream = stream_of::<SeriesAggregate>(&series);
    let payment_stream = stream_of::<PaymentAggregate>(payment_id);
    let turn = issuer.turn_of(&series);
    let _turn = turn.lock().await;
    for attempt in 0..ATTEMPTS {
        let payment =
            load::<PaymentAggregate>(store, payment_stream.clone(), ctx.command_id).await?;
        // Issued already (a retry, a redelivered event, another issuer): its number.
        if let Ok(issued) = already(&payment.state, kind, document) {
            return Ok(issued);
        }
        if replayed(&[&payment.caused_by_command]).is_some() {
            return Err(CommandError::Codec(format!(
                "{payment_stream} holds this command's events but no {}",
                kind.as_str()
            )));
        }
        let head = series_head(store, &series_stream).await?;
        let number = head.state.next(kind, year);
        let events = PaymentAggregate::decide(&payment.state, &command(number))?;
        let numbered = SeriesAggregate::decide(
            &head.state,
            &SeriesCommand::Take {
                kind,
                year,
                document,
            },
        )
        .unwrap_or_else(|never| match never {});
        let writes = vec![
            write_for(&payment, &events, ctx)?,
            write_for(&head, &numbered, ctx)?,
        ];
        match store.append(writes).await {
            Ok(_) => return Ok(Issued::New(number)),
            Err(e) if e.is_conflict() => backoff(attempt).await,
            Err(e) => return Err(e.into()),
        }
    }
    Err(CommandError::Contention { attempts: ATTEMPTS })
}

fn already(
    state: &<PaymentAggregate as Aggregate>::State,
    kind: DocumentKind,
    document: Uuid,
) -> Result<Issued, CommandError> {
    let p = state.payment().ok_or(PaymentError::NotCreated)?;
    let number = match kind {
        DocumentKind::Receipt => p.receipt,
        _ => p.credit_notes.get(&document).copied(),
    };
    number
        .map(Issued::Already)
        .ok_or_else(|| PaymentError::NothingToDocument.into())
}

/// Waits a little before taking the next number after losing one to another process: nothing
/// on the first loss, then up to 1, 2, 4 … 50 ms, jittered so that two processes do not keep
/// colliding.
async fn backoff(attempt: u32) {
    if attempt == 0 {
        return;
    }
    let ceiling = (1u64 << attempt.min(6)).min(50) * 1000;
    let jitter = Uuid::new_v4().as_u128() as u64 % ceiling.max(1);
    tokio::time::sleep(Duration::from_micros(jitter)).await;
}

/// Issues receipts for succeeded payments and credit notes for succeeded refunds.
#[derive(Debug)]
pub struct DocumentsReactor {
    pub store: Arc<dyn EventStore>,
    pub issuer: Issuer,
}

#[async_trait]
impl Reactor for DocumentsReactor {
    fn name(&self) -> &'static str {
        "documents"
    }

    async fn react(
        &self,
        event: &RecordedEvent,
        decoded: &AnyEvent,
        now: DateTime<Utc>,
    ) -> Result<(), CommandError> {
        match decoded {
            AnyEvent::Payment(PaymentEvent::PaymentSucceeded { payment_id, .. }) => {
                let ctx = CommandContext::reacting_to(self.name(), "receipt", event, now);
                issue_receipt(&*self.store, &self.issuer, *payment_id, &ctx).await?;
            }
            AnyEvent::Payment(PaymentEvent::RefundSucceeded {
                payment_id,
                refund_id,
                split,
                amount,
                ..
            }) => {
                if let Some(s) = split {
                    let ctx = CommandContext::reacting_to(self.name(), "accrue", event, now);
                    accrue(
                        &*self.store,
                        s.provider_id,
                        *payment_id,
                        event.effective_at,
                        amount.currency,
                        -s.commission_part,
                        &ctx,
                    )
                    .await?;
                }
                let ctx = CommandContext::reacting_to(self.name(), "credit-note", event, now);
                issue_credit_note(&*self.store, &self.issuer, *payment_id, *refund_id, &ctx)
                    .await?;
            }
            AnyEvent::Payment(PaymentEvent::FundsReleased {
                payment_id,
                provider_id,
                commission,
                ..
            }) => {
                let ctx = CommandContext::reacting_to(self.name(), "accrue", event, now);
                accrue(
                    &*self.store,
                    *provider_id,
                    *payment_id,
                    event.effective_at,
                    commission.currency,
                    commission.minor,
                    &ctx,
                )
                .await?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// What [`verify`] found of the document series.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SeriesReport {
    /// Numbers handed out, per series (`receipt-2026`).
    pub series: std::collections::BTreeMap<String, u64>,
    /// Every gap, double, or number without its document (or document without its number).
    pub findings: Vec<String>,
}

/// Checks every series against the documents, over the whole log: in each series the n-th
/// event takes number n (no gap, no double), each number belongs to one document that states
/// it, and each issued document's number is in its series. An audit: nothing on a hot path.
pub async fn verify(store: &dyn EventStore) -> Result<SeriesReport, CommandError> {
    use futures::TryStreamExt;
    let mut report = SeriesReport::default();
    let mut numbered: HashMap<DocumentNumber, Uuid> = HashMap::new();
    let mut stated: HashMap<DocumentNumber, Uuid> = HashMap::new();
    // Page by page: a finite stream reads at most its limit.
    const PAGE: usize = 10_000;
    let mut after = Position::START;
    loop {
        let mut events = store.stream_all(after, PAGE);
        let mut read = 0;
        while let Some(e) = events.try_next().await? {
            read += 1;
            after = e.position;
            let decoded = match codec::category_of(&e.event_type) {
                Some("series" | "payment" | "provider") => {
                    codec::decode_any(&e.event_type, e.schema_version, &e.data).map_err(|err| {
                        CommandError::Codec(format!("position {}: {err}", e.position))
                    })?
                }
                _ => continue,
            };
            match decoded {
                AnyEvent::Series(SeriesEvent::DocumentNumbered { number, document }) => {
                    let series = number.kind.series(number.year);
                    let count = report.series.entry(series.clone()).or_default();
                    *count += 1;
                    if e.stream_id.as_str() != format!("series-{series}")
                        || number.seq != e.stream_version
                    {
                        report.findings.push(format!(
                            "{} event {} carries number {number}",
                            e.stream_id, e.stream_version
                        ));
                    }
                    if let Some(other) = numbered.insert(number, document) {
                        report.findings.push(format!(
                            "{number} was handed out twice ({other}, {document})"
                        ));
                    }
                }
                AnyEvent::Payment(PaymentEvent::ReceiptIssued {
                    payment_id, number, ..
                }) => {
                    stated.insert(number, payment_id.0);
                }
                AnyEvent::Payment(PaymentEvent::CreditNoteIssued {
                    refund_id, number, ..
                }) => {
                    stated.insert(number, refund_id);
                }
                AnyEvent::Provider(ProviderEvent::CommissionInvoiced {
                    provider_id,
                    number,
                    month,
                    ..
                }) => {
                    stated.insert(number, invoice_document(provider_id, &month));
                }
                _ => {}
            }
        }
        if read < PAGE {
            break;
        }
    }
    let mut missing: Vec<String> = numbered
        .iter()
        .filter(|(n, d)| stated.get(n) != Some(d))
        .map(|(n, d)| format!("{n} was handed out for {d}, which does not state it"))
        .chain(
            stated
                .iter()
                .filter(|(n, _)| !numbered.contains_key(n))
                .map(|(n, d)| format!("{d} states {n}, which its series never handed out")),
        )
        .collect();
    missing.sort();
    report.findings.extend(missing);
    Ok(report)
}
