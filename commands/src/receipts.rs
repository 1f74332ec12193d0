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
use tessera_log::store::{EventStore, Position, RecordedEvent, StoreError, StreamId, StreamRead};
use uuid::Uuid;

use crate::error::CommandError;
use crate::handler::{
    AggregateCache, CommandContext, Loaded, load, load_caught_up, replayed, stream_of, write_for,
};
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
    issue_numbered::<ProviderAggregate>(
        store,
        issuer,
        stream_of::<ProviderAggregate>(provider_id),
        DocumentKind::Invoice,
        invoice_document(provider_id, month),
        |state| {
            state
                .provider()
                .and_then(|p| p.invoiced.get(month))
                .copied()
        },
        |state, number| {
            Ok(ProviderAggregate::decide(
                state,
                &ProviderCommand::Invoice {
                    month: month.to_owned(),
                    number,
                },
            )?)
        },
        ctx,
    )
    .await
}

/// Accrues commission on the provider's stream, in the month of the event that moved it.
///
/// A provider's stream grows by one accrual per release, so it is caught up from `cache`
/// rather than replayed whole. A redelivered reaction is recognised by its event id: the store
/// answers the same id with the first result (same content) or `EventIdConflict` (the accrual
/// was made earlier, perhaps into another month): either way it was made once.
#[allow(clippy::too_many_arguments)] // The accrual's facts, each from the event.
async fn accrue(
    store: &dyn EventStore,
    cache: &AggregateCache,
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
    let stream = stream_of::<ProviderAggregate>(provider_id);
    let command = ProviderCommand::Accrue {
        provider_id,
        payment_id,
        month: at.format("%Y-%m").to_string(),
        currency,
        commission_minor,
    };
    for _ in 0..crate::handler::MAX_ATTEMPTS {
        let loaded =
            load_caught_up::<ProviderAggregate>(store, Some(cache), stream.clone(), ctx.command_id)
                .await?;
        if replayed(&[&loaded.caused_by_command]).is_some() {
            return Ok(());
        }
        let events = ProviderAggregate::decide(&loaded.state, &command)?;
        match store.append(vec![write_for(&loaded, &events, ctx)?]).await {
            Ok(result) => {
                cache.advance(&loaded, &events, &result);
                return Ok(());
            }
            Err(StoreError::EventIdConflict { .. }) => return Ok(()),
            Err(e) if e.is_conflict() => cache.forget(&stream),
            Err(e) => return Err(e.into()),
        }
    }
    Err(CommandError::Contention {
        attempts: crate::handler::MAX_ATTEMPTS,
    })
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
    issue_numbered::<PaymentAggregate>(
        store,
        issuer,
        stream_of::<PaymentAggregate>(payment_id),
        kind,
        document,
        |state| {
            let p = state.payment()?;
            match kind {
                DocumentKind::Receipt => p.receipt,
                _ => p.credit_notes.get(&document).copied(),
            }
        },
        |state, number| Ok(PaymentAggregate::decide(state, &command(number))?),
        ctx,
    )
    .await
}

/// Issues a document of `kind` on `stream` (the aggregate it documents) under the next number
/// of the series of the year of `ctx.now`, in one append guarded by both streams' versions;
/// answers the number already issued (`issued`) instead when there is one.
#[allow(clippy::too_many_arguments)] // What is documented, where, and how it is decided.
async fn issue_numbered<A>(
    store: &dyn EventStore,
    issuer: &Issuer,
    stream: StreamId,
    kind: DocumentKind,
    document: Uuid,
    issued: impl Fn(&A::State) -> Option<DocumentNumber>,
    decide: impl Fn(&A::State, DocumentNumber) -> Result<Vec<A::Event>, CommandError>,
    ctx: &CommandContext,
) -> Result<Issued, CommandError>
where
    A: Aggregate,
    A::Event: serde::Serialize + serde::de::DeserializeOwned,
{
    let year = ctx.now.year();
    let series = kind.series(year);
    let series_stream = stream_of::<SeriesAggregate>(&series);
    let turn = issuer.turn_of(&series);
    let _turn = turn.lock().await;
    for attempt in 0..ATTEMPTS {
        let loaded = load::<A>(store, stream.clone(), ctx.command_id).await?;
        // Issued already (a retry, a redelivered event, another issuer): its number.
        if let Some(n) = issued(&loaded.state) {
            return Ok(Issued::Already(n));
        }
        if replayed(&[&loaded.caused_by_command]).is_some() {
            return Err(CommandError::Codec(format!(
                "{stream} holds this command's events but no {}",
                kind.as_str()
            )));
        }
        let head = series_head(store, &series_stream).await?;
        let number = head.state.next(kind, year);
        let events = decide(&loaded.state, number)?;
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
            write_for(&loaded, &events, ctx)?,
            write_for(&head, &numbered, ctx)?,
        ];
        match store.append(writes).await {
            Ok(_) => return Ok(Issued::New(number)),
            Err(e) if e.is_conflict() => crate::onsale::backoff(attempt + 1).await,
            Err(e) => return Err(e.into()),
        }
    }
    Err(CommandError::Contention { attempts: ATTEMPTS })
}

/// Issues receipts for succeeded payments and credit notes for succeeded refunds.
#[derive(Debug)]
pub struct DocumentsReactor {
    pub store: Arc<dyn EventStore>,
    pub issuer: Issuer,
    /// Providers' states, caught up between accruals.
    pub providers: AggregateCache,
}

impl DocumentsReactor {
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self {
            store,
            issuer: Issuer::default(),
            providers: AggregateCache::new(1_000),
        }
    }
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
                        &self.providers,
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
                    &self.providers,
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
