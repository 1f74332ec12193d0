//! Money to providers through the simulated gateway, driven by the reactors and a manual clock:
//! commission snapshotted at placement, the share held until the slot ended and the dispute
//! window passed, released and transferred, a refund after the release taken back pro rata, a
//! provider without an account paid when it onboards — and the ledger check clean throughout,
//! also after every reactor replays the whole log.

use tessera_commands::booking::{BookingConfig, cancel_booking, place_booking};
use tessera_commands::gateway::PaymentGateway;
use tessera_commands::handler::{load, stream_of};
use tessera_commands::reactor::{Clock, fire_due_deadlines};
use tessera_commands::{admin, ledger, money};
use tessera_domain::booking::{BookingAggregate, BookingStatus, Canceller};
use tessera_domain::payment::{Payment, PaymentAggregate};
use tessera_domain::values::{BookingId, Currency, Money};
use uuid::Uuid;

use super::lifecycle::{Platform, platform};
use super::*;

async fn payment_of(p: &Platform, booking: BookingId) -> Payment {
    let b = load::<BookingAggregate>(
        &*p.w.store,
        stream_of::<BookingAggregate>(booking),
        Uuid::nil(),
    )
    .await
    .expect("booking");
    let id = b.state.booking().and_then(|b| b.payment_id).expect("paid");
    load::<PaymentAggregate>(&*p.w.store, stream_of::<PaymentAggregate>(id), Uuid::nil())
        .await
        .expect("payment")
        .state
        .payment()
        .cloned()
        .expect("payment")
}

async fn commission_of(p: &Platform, booking: BookingId) -> u32 {
    load::<BookingAggregate>(
        &*p.w.store,
        stream_of::<BookingAggregate>(booking),
        Uuid::nil(),
    )
    .await
    .expect("booking")
    .state
    .booking()
    .expect("placed")
    .commission_bp
}

async fn fire(p: &mut Platform) {
    fire_due_deadlines(&*p.w.store, &p.pool, Some(&p.cache), p.clock.now())
        .await
        .expect("fire");
    p.settle().await;
}

async fn clean_check(p: &Platform) -> ledger::LedgerReport {
    let report = ledger::check(&*p.w.store, &p.gateway).await.expect("check");
    assert!(report.is_clean(), "{report:#?}");
    report
}

fn balance(report: &ledger::LedgerReport, account: &str) -> i64 {
    report
        .balances
        .iter()
        .filter(|b| b.account == account && b.currency == "EUR")
        .map(|b| b.amount_minor)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shares_are_held_released_transferred_and_taken_back_pro_rata() {
    let mut p = platform(6).await;
    let provider = p.w.provider;
    let view = money::open_payout_account(
        &*p.w.store,
        &p.gateway,
        provider,
        "kayaks@example.org",
        &p.ctx("user:provider"),
    )
    .await
    .expect("onboard");
    assert!(
        view.provider.can_receive_transfers(),
        "the simulated gateway onboards at once"
    );
    assert_eq!(view.onboarding_url, None);

    // A: 2 seats (100.00) at the default 15 %.
    let a = p.paid_booking(2).await;
    assert_eq!(commission_of(&p, a.booking_id).await, 1500);
    // The rate changes: A keeps its snapshot, B (placed after) takes the new one.
    let mut admin_ctx = p.ctx("user:admin");
    admin_ctx.reason = Some("launch partner".into());
    money::set_commission(&*p.w.store, provider, 1000, &admin_ctx)
        .await
        .expect("rate");
    let b = p.paid_booking(1).await;
    assert_eq!(commission_of(&p, a.booking_id).await, 1500);
    assert_eq!(commission_of(&p, b.booking_id).await, 1000);

    // B's customer cancels 72 h before the start: half back, the other half is kept.
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
    assert_eq!(status(&p.w, b.booking_id).await, BookingStatus::Refunded);

    // Before the slot ends and the window passes, everything is held.
    p.clock.set(t(20, 14));
    fire(&mut p).await;
    assert_eq!(status(&p.w, a.booking_id).await, BookingStatus::Completed);
    assert!(payment_of(&p, a.booking_id).await.escrow.is_none());
    let held = clean_check(&p).await;
    assert_eq!(balance(&held, "customer_funds"), -(10_000 + 2_500));
    p.clock.set(t(22, 13));
    fire(&mut p).await;
    assert!(payment_of(&p, a.booking_id).await.escrow.is_none(), "47 h");

    // 48 h after the end: released and transferred, 85 % of A and 90 % of B's kept 25.00.
    p.clock.set(t(22, 14));
    fire(&mut p).await;
    let pa = payment_of(&p, a.booking_id).await;
    let pb = payment_of(&p, b.booking_id).await;
    assert_eq!(pa.transferred(), 8_500);
    assert_eq!(pb.transferred(), 2_250);
    let released = clean_check(&p).await;
    assert_eq!(balance(&released, "customer_funds"), 0);
    assert_eq!(
        balance(&released, &format!("provider_payable:{provider}")),
        0
    );
    assert_eq!(balance(&released, "commission_revenue"), -(1_500 + 250));
    assert_eq!(
        balance(&released, "gateway"),
        10_000 + 5_000 - 2_500 - 8_500 - 2_250
    );

    // An admin refunds 40.00 of A after the release: the provider gives back 85 % of it (34.00)
    // before the refund goes out; the platform gives back its commission on it (6.00).
    let mut admin_ctx = p.ctx("user:admin");
    admin_ctx.reason = Some("the guide was late".into());
    admin::refund(
        &*p.w.store,
        a.booking_id,
        Money::new(4_000, Currency::EUR).expect("money"),
        &admin_ctx,
    )
    .await
    .expect("refund");
    p.settle().await;
    let pa = payment_of(&p, a.booking_id).await;
    assert_eq!((pa.refunded(), pa.transferred()), (4_000, 5_100));
    let escrow = pa.escrow.as_ref().expect("released");
    assert_eq!(escrow.transfers.len(), 1);
    assert_eq!(escrow.transfers[0].reversed, 3_400);

    // The weekly payout run pays the account's balance out to the bank, once a week.
    assert_eq!(p.gateway.run_payouts(p.clock.now()).await.expect("run"), 1);
    p.settle().await;
    assert_eq!(p.gateway.run_payouts(p.clock.now()).await.expect("run"), 0);
    let state = money::provider_state(&*p.w.store, provider)
        .await
        .expect("provider");
    let payouts = &state.provider().expect("known").payouts;
    assert_eq!(payouts.len(), 1);
    let book = p.gateway.book().await.expect("book");
    assert_eq!(
        book.payouts.values().collect::<Vec<_>>(),
        vec![&(
            format!("sim_acct_{}", provider.0.simple()),
            5_100 + 2_250,
            true
        )]
    );
    let after = clean_check(&p).await;
    assert_eq!(balance(&after, "commission_revenue"), -(900 + 250));

    // On 1 January, December's commission is invoiced, once: 15.00 and 2.50 kept at the
    // releases, 6.00 given back with the refund.
    let issuer = tessera_commands::receipts::Issuer::default();
    let mut january = p.ctx("system:invoices");
    january.now = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2027, 1, 1, 0, 5, 0)
        .single()
        .expect("time");
    let issued =
        tessera_commands::receipts::issue_due_invoices(&*p.w.store, &issuer, provider, &january)
            .await
            .expect("invoices");
    assert_eq!(
        issued.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["INV-2027-000001"]
    );
    let again =
        tessera_commands::receipts::issue_due_invoices(&*p.w.store, &issuer, provider, &january)
            .await
            .expect("invoices");
    assert!(again.is_empty(), "a month is invoiced once");
    let stream = tessera_log::store::read_whole_stream(
        &*p.w.store,
        &stream_of::<tessera_domain::provider::ProviderAggregate>(provider),
    )
    .await
    .expect("provider stream");
    let invoice = stream
        .iter()
        .find(|e| e.event_type == "CommissionInvoiced")
        .expect("invoiced");
    let data: serde_json::Value = serde_json::from_str(&invoice.data).expect("json");
    assert_eq!(data["month"], "2026-12");
    assert_eq!(data["lines"][0]["commission_minor"], 1_500 + 250 - 600);
    assert_eq!(data["lines"][0]["entries"], 3);
    let after = clean_check(&p).await;
    assert_eq!(after.documents.series.get("invoice-2027"), Some(&1));
    let book = p.gateway.book().await.expect("book");
    assert_eq!(book.transfers.len(), 2);

    // Every reactor replays the whole log, every deadline fires again: nothing is doubled.
    let head = p.w.store.head().await.expect("head");
    sqlx::query("UPDATE reactor_checkpoints SET position = 0")
        .execute(&p.pool)
        .await
        .expect("reset");
    sqlx::query("UPDATE deadlines SET done_at = NULL")
        .execute(&p.pool)
        .await
        .expect("reset");
    fire(&mut p).await;
    assert_eq!(p.w.store.head().await.expect("head"), head);
    assert_eq!(p.gateway.book().await.expect("book"), book);
    clean_check(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_without_an_account_is_paid_when_it_onboards() {
    let mut p = platform(4).await;
    let provider = p.w.provider;
    let a = p.paid_booking(2).await;
    p.clock.set(t(22, 14));
    fire(&mut p).await;
    let pa = payment_of(&p, a.booking_id).await;
    assert!(pa.escrow.is_some(), "released");
    assert_eq!(pa.transferred(), 0, "no account: nothing went out");
    let waiting = clean_check(&p).await;
    assert_eq!(
        balance(&waiting, &format!("provider_payable:{provider}")),
        -8_500,
        "owed and waiting"
    );
    let state = money::provider_state(&*p.w.store, provider)
        .await
        .expect("provider");
    assert!(state.provider().is_some_and(|s| s.waiting.contains(&pa.id)));

    money::open_payout_account(
        &*p.w.store,
        &p.gateway,
        provider,
        "kayaks@example.org",
        &p.ctx("user:provider"),
    )
    .await
    .expect("onboard");
    p.settle().await;
    assert_eq!(payment_of(&p, a.booking_id).await.transferred(), 8_500);
    let paid = clean_check(&p).await;
    assert_eq!(balance(&paid, &format!("provider_payable:{provider}")), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_slot_earns_no_commission_and_transfers_nothing() {
    let mut p = platform(4).await;
    money::open_payout_account(
        &*p.w.store,
        &p.gateway,
        p.w.provider,
        "kayaks@example.org",
        &p.ctx("user:provider"),
    )
    .await
    .expect("onboard");
    let a = p.paid_booking(2).await;
    p.clock.set(t(19, 12));
    tessera_commands::handler::execute::<SlotAggregate>(
        &*p.w.store,
        stream_of::<SlotAggregate>(p.w.slot_id),
        &SlotCommand::Cancel {
            reason: "storm warning".into(),
        },
        &p.ctx("user:provider"),
    )
    .await
    .expect("cancel slot");
    p.settle().await;
    p.clock.set(t(25, 14));
    fire(&mut p).await;
    assert_eq!(status(&p.w, a.booking_id).await, BookingStatus::Refunded);
    assert!(payment_of(&p, a.booking_id).await.escrow.is_none());
    let report = clean_check(&p).await;
    assert!(
        report.balances.is_empty(),
        "everything paid went back: {report:#?}"
    );
    // Placing after the slot was cancelled is refused; nothing else moved.
    let late = request(&p.w, 1);
    assert!(
        place_booking(
            &*p.w.store,
            &BookingConfig::default(),
            &late,
            &p.ctx("user:c")
        )
        .await
        .is_err()
    );
}

/// One step of a generated money history.
#[derive(Debug, Clone)]
enum Step {
    /// A customer places and pays a booking of this many seats (before the slot starts).
    Pay(u32),
    /// The customer of the i-th booking cancels it (refused once the slot started).
    Cancel(usize),
    /// An admin refunds part of the i-th booking (before or after the release).
    Refund(usize, i64),
    /// Time passes: deadlines fire (completions, releases) and reactors settle.
    Advance(i64),
    /// The provider opens its payout account (money waiting for it goes out).
    Onboard,
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        (1u32..3).prop_map(Step::Pay),
        (0usize..8).prop_map(Step::Cancel),
        (0usize..8, 100i64..6_000).prop_map(|(b, a)| Step::Refund(b, a)),
        (1i64..240).prop_map(Step::Advance),
        Just(Step::Onboard),
    ]
}

fn refusal<T>(r: Result<T, tessera_commands::error::CommandError>) {
    if let Err(e) = r {
        assert!(e.is_refusal(), "only the domain may refuse: {e}");
    }
}

async fn walk(steps: Vec<Step>) {
    let mut p = platform(40).await;
    let provider = p.w.provider;
    let mut bookings = Vec::new();
    for s in steps {
        match s {
            Step::Pay(seats) if p.clock.now() < t(20, 9) => {
                bookings.push(p.paid_booking(seats).await);
            }
            Step::Pay(_) => {}
            Step::Cancel(i) if !bookings.is_empty() => {
                let b = &bookings[i % bookings.len()];
                refusal(
                    cancel_booking(
                        &*p.w.store,
                        b.booking_id,
                        Canceller::Customer(b.customer_id),
                        false,
                        &p.ctx("user:c"),
                    )
                    .await,
                );
                p.settle().await;
            }
            Step::Refund(i, amount) if !bookings.is_empty() => {
                let b = &bookings[i % bookings.len()];
                let ctx = p.ctx("user:admin").with_reason("goodwill");
                refusal(
                    admin::refund(
                        &*p.w.store,
                        b.booking_id,
                        Money::new(amount, Currency::EUR).expect("money"),
                        &ctx,
                    )
                    .await,
                );
                p.settle().await;
            }
            Step::Cancel(_) | Step::Refund(..) => {}
            Step::Advance(hours) => {
                p.clock.set(p.clock.now() + chrono::TimeDelta::hours(hours));
                fire(&mut p).await;
            }
            Step::Onboard => {
                refusal(
                    money::open_payout_account(
                        &*p.w.store,
                        &p.gateway,
                        provider,
                        "kayaks@example.org",
                        &p.ctx("user:provider"),
                    )
                    .await,
                );
                p.settle().await;
            }
        }
        // After every step: every posting balances, no payable is negative, what went out is
        // what was due, and the gateway's book agrees with the log.
        clean_check(&p).await;
    }
    // Everything delivered is released in the end; the books still agree.
    p.clock.set(t(28, 0));
    fire(&mut p).await;
    clean_check(&p).await;
}

/// Generated histories (payments, cancellations and refunds before and after the release,
/// releases and transfers as time passes, onboarding at any point) through the real commands,
/// reactors and the simulated gateway: after every step the ledger's invariants hold and
/// `ledger check` finds no difference with the gateway's book.
#[test]
fn generated_money_histories_keep_the_books_and_agree_with_the_gateway() {
    use proptest::test_runner::{Config, TestRunner};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut runner = TestRunner::new(Config {
        cases: 12,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&proptest::collection::vec(step(), 1..14), |steps| {
            rt.block_on(walk(steps));
            Ok(())
        })
        .expect("every generated history keeps the books");
}
