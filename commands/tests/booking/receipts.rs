//! Receipts and credit notes: numbered gaplessly per year on the log, one per payment and one
//! per refund, with the tax the booking snapshotted — also when confirmations and issuers in
//! several processes race, and when the reactors replay the whole log.

use std::collections::BTreeSet;

use tessera_commands::booking::{BookingConfig, cancel_booking, place_booking};
use tessera_commands::handler::{load, stream_of};
use tessera_commands::payment::start_payment;
use tessera_commands::reactor::{Clock, handle_gateway_event_cached};
use tessera_commands::receipts::{self, Issued, Issuer};
use tessera_domain::booking::Canceller;
use tessera_domain::payment::{Payment, PaymentAggregate};
use tessera_domain::values::PaymentId;
use uuid::Uuid;

use super::lifecycle::platform;
use super::*;

async fn payment(store: &dyn tessera_log::store::EventStore, id: PaymentId) -> Payment {
    load::<PaymentAggregate>(store, stream_of::<PaymentAggregate>(id), Uuid::nil())
        .await
        .expect("payment")
        .state
        .payment()
        .cloned()
        .expect("created")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_confirmations_get_two_hundred_dense_receipt_numbers() {
    const N: usize = 200;
    let mut p = platform(N as u32).await;
    let mut payments = Vec::with_capacity(N);
    for _ in 0..N {
        let req = request(&p.w, 1);
        place_booking(
            &*p.w.store,
            &BookingConfig::default(),
            &req,
            &p.ctx("user:c"),
        )
        .await
        .expect("place");
        let started = start_payment(
            &*p.w.store,
            &p.gateway,
            req.booking_id,
            None,
            &p.ctx("user:c"),
        )
        .await
        .expect("pay");
        payments.push(started.payment_id);
    }
    // The 200 confirmations arrive at once.
    let outcomes = p.take_outcomes();
    assert_eq!(outcomes.len(), N);
    let now = p.clock.now();
    let confirmations = outcomes.iter().map(|o| {
        let (store, cache) = (&*p.w.store, &p.cache);
        async move { handle_gateway_event_cached(store, Some(cache), o, now).await }
    });
    for r in futures::future::join_all(confirmations).await {
        r.expect("confirmed");
    }

    // Four processes issue every receipt at once (each its own turns, racing through the
    // store's expected versions), each with commands of its own.
    let issuers: Vec<Issuer> = (0..4).map(|_| Issuer::default()).collect();
    let store = &*p.w.store;
    let mut calls = Vec::new();
    for issuer in &issuers {
        for id in &payments {
            let ctx = p.ctx("system:documents");
            calls.push(async move { receipts::issue_receipt(store, issuer, *id, &ctx).await });
        }
    }
    let mut new = Vec::new();
    for r in futures::future::join_all(calls).await {
        if let Issued::New(n) = r.expect("issued") {
            new.push(n.seq);
        }
    }
    new.sort_unstable();
    assert_eq!(
        new,
        (1..=N as u64).collect::<Vec<_>>(),
        "each number handed out once, none skipped"
    );

    let mut numbers = BTreeSet::new();
    for id in &payments {
        let paid = payment(store, *id).await;
        let number = paid
            .receipt
            .expect("every confirmed payment has its receipt");
        assert_eq!(number.year, 2026);
        assert!(numbers.insert(number), "{number} given twice");
        assert_eq!(paid.receipt_tax_rate_bp, 1000);
    }
    assert_eq!(numbers.len(), N);
    let report = receipts::verify(&*p.w.store).await.expect("verify");
    assert_eq!(report.findings, Vec::<String>::new());
    assert_eq!(report.series.get("receipt-2026"), Some(&(N as u64)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_gets_a_credit_note_referencing_the_receipt_and_replays_issue_nothing() {
    let mut p = platform(4).await;
    let b = p.paid_booking(2).await;
    let id = payment_id_of(&p, b.booking_id).await;
    let paid = payment(&*p.w.store, id).await;
    let receipt = paid
        .receipt
        .expect("the documents reactor issued the receipt");
    assert_eq!(receipt.to_string(), "2026-000001");

    // Cancelled 72 h before the start: half back, and a credit note for it.
    p.clock.set(t(17, 10));
    cancel_booking(
        &*p.w.store,
        b.booking_id,
        Canceller::Customer(b.customer_id),
        false,
        &p.ctx("user:c"),
    )
    .await
    .expect("cancel");
    p.settle().await;
    let refunded = payment(&*p.w.store, id).await;
    assert_eq!(refunded.credit_notes.len(), 1);
    let note = *refunded.credit_notes.values().next().expect("note");
    assert_eq!(note.to_string(), "CN-2026-000001");

    // The stored events state the amounts and the tax included (10 %).
    let events =
        tessera_log::store::read_whole_stream(&*p.w.store, &stream_of::<PaymentAggregate>(id))
            .await
            .expect("read");
    let data = |t: &str| -> serde_json::Value {
        let e = events.iter().find(|e| e.event_type == t).expect(t);
        serde_json::from_str(&e.data).expect("json")
    };
    let r = data("ReceiptIssued");
    assert_eq!(r["amount"]["minor"], paid.amount.minor);
    assert_eq!(r["tax"]["minor"], receipts_tax(paid.amount.minor));
    let c = data("CreditNoteIssued");
    assert_eq!(c["receipt"], "2026-000001");
    assert_eq!(c["amount"]["minor"], paid.amount.minor / 2);
    assert_eq!(c["tax"]["minor"], receipts_tax(paid.amount.minor / 2));

    // Every reactor replays the whole log: nothing is issued twice.
    let before = events.len();
    for r in &p.reactors {
        p.runner
            .save(r.name(), tessera_log::store::Position::START)
            .await
            .expect("rewind");
    }
    p.settle().await;
    let after =
        tessera_log::store::read_whole_stream(&*p.w.store, &stream_of::<PaymentAggregate>(id))
            .await
            .expect("read")
            .len();
    assert_eq!(after, before);
    let report = receipts::verify(&*p.w.store).await.expect("verify");
    assert!(report.findings.is_empty(), "{report:?}");
    assert_eq!(report.series.get("receipt-2026"), Some(&1));
    assert_eq!(report.series.get("credit-note-2026"), Some(&1));
}

fn receipts_tax(gross: i64) -> i64 {
    tessera_domain::receipt::tax_included(gross, 1000)
}

async fn payment_id_of(
    p: &super::lifecycle::Platform,
    booking: tessera_domain::values::BookingId,
) -> PaymentId {
    load::<tessera_domain::booking::BookingAggregate>(
        &*p.w.store,
        stream_of::<tessera_domain::booking::BookingAggregate>(booking),
        Uuid::nil(),
    )
    .await
    .expect("booking")
    .state
    .booking()
    .and_then(|b| b.payment_id)
    .expect("paid")
}
