//! Moves to a dearer slot, driven by the reactors and a manual clock through the simulated
//! gateway: the new slot holds the seats while a top-up pays the difference; a declined top-up
//! or an expired move gives them back and leaves the booking where it was (a top-up paid after
//! the expiry is refunded in full); a paid one moves the booking in one append. Afterwards the
//! booking has two payments: both are released and transferred to the provider, a cancellation
//! refunds from both, and the ledger check stays clean throughout.

use tessera_commands::booking::{Moved, TopUpPayer, abandon_move, reschedule_booking};
use tessera_commands::gateway::CARD_DECLINED;
use tessera_commands::handler::{load, stream_of};
use tessera_commands::reactor::{Clock, fire_due_deadlines};
use tessera_commands::{ledger, money};
use tessera_domain::booking::{Booking, BookingAggregate, BookingStatus, Canceller, MoveAbandoned};
use tessera_domain::payment::{Payment, PaymentAggregate};
use tessera_domain::values::{BookingId, Currency, Money, PaymentId, SlotId};
use uuid::Uuid;

use super::lifecycle::{Platform, platform};
use super::*;

async fn booking(p: &Platform, id: BookingId) -> Booking {
    load::<BookingAggregate>(&*p.w.store, stream_of::<BookingAggregate>(id), Uuid::nil())
        .await
        .expect("booking")
        .state
        .booking()
        .cloned()
        .expect("placed")
}

async fn payment(p: &Platform, id: PaymentId) -> Payment {
    load::<PaymentAggregate>(&*p.w.store, stream_of::<PaymentAggregate>(id), Uuid::nil())
        .await
        .expect("payment")
        .state
        .payment()
        .cloned()
        .expect("payment")
}

async fn taken(p: &Platform, slot_id: SlotId) -> (u32, u32) {
    match load::<SlotAggregate>(
        &*p.w.store,
        stream_of::<SlotAggregate>(slot_id),
        Uuid::nil(),
    )
    .await
    .expect("slot")
    .state
    {
        SlotState::Scheduled(s) => (s.held(), s.confirmed()),
        SlotState::New => panic!("no slot {slot_id}"),
    }
}

/// A second slot of the world's listing, four days later, at 80.00 a seat.
async fn dearer_slot(p: &Platform) -> SlotId {
    let slot_id = SlotId(Uuid::new_v4());
    execute::<SlotAggregate>(
        &*p.w.store,
        stream_of::<SlotAggregate>(slot_id),
        &SlotCommand::Schedule {
            id: slot_id,
            listing_id: p.w.listing_id,
            provider_id: p.w.provider,
            starts_at: t(24, 10),
            ends_at: t(24, 14),
            capacity: 4,
            price_per_seat: eur(8_000),
        },
        &p.ctx("user:provider"),
    )
    .await
    .expect("schedule");
    slot_id
}

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::EUR).expect("money")
}

async fn move_to(p: &Platform, id: BookingId, to: SlotId, card: Option<&str>) -> Moved {
    reschedule_booking(
        &*p.w.store,
        id,
        to,
        Some(TopUpPayer {
            gateway: &p.gateway,
            card,
            move_ttl: TimeDelta::minutes(15),
        }),
        &p.ctx("user:c"),
    )
    .await
    .expect("move")
}

async fn clean(p: &Platform) {
    let report = ledger::check(&*p.w.store, &p.gateway).await.expect("check");
    assert!(report.is_clean(), "{report:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dearer_move_waits_for_its_top_up_and_the_booking_then_has_two_payments() {
    let mut p = platform(6).await;
    money::open_payout_account(
        &*p.w.store,
        &p.gateway,
        p.w.provider,
        "kayaks@example.org",
        &p.ctx("user:provider"),
    )
    .await
    .expect("onboard");
    let dearer = dearer_slot(&p).await;
    let a = p.paid_booking(2).await;
    let first = booking(&p, a.booking_id).await.payment_id.expect("paid");

    // Declined: the move ends, the new slot's seats go back, the booking stays.
    let Moved::AwaitingPayment { charge, .. } =
        move_to(&p, a.booking_id, dearer, Some(CARD_DECLINED)).await
    else {
        panic!("a dearer slot waits for its top-up")
    };
    assert_eq!(charge, eur(6_000), "2 seats × 30.00");
    assert_eq!(
        taken(&p, dearer).await,
        (2, 0),
        "held while the top-up is decided"
    );
    p.settle().await;
    let b = booking(&p, a.booking_id).await;
    assert_eq!(
        (b.slot_id, b.pending_move, b.paid),
        (p.w.slot_id, None, eur(10_000))
    );
    assert_eq!(taken(&p, dearer).await, (0, 0));

    // Expired: nobody paid in time (the outcome is not delivered before the deadline).
    let Moved::AwaitingPayment {
        started,
        expires_at,
        ..
    } = move_to(&p, a.booking_id, dearer, None).await
    else {
        panic!("a dearer slot waits for its top-up")
    };
    assert_eq!(expires_at, p.clock.now() + TimeDelta::minutes(15));
    let late = p.take_outcomes();
    for r in &p.reactors {
        p.runner.run_until_idle(&**r).await.expect("reactor");
    }
    // Too early, the deadline does nothing; on time, the move lapses.
    fire_due_deadlines(&*p.w.store, &p.pool, Some(&p.cache), p.clock.now())
        .await
        .expect("fire");
    assert!(booking(&p, a.booking_id).await.pending_move.is_some());
    let refused = abandon_move(
        &*p.w.store,
        a.booking_id,
        None,
        MoveAbandoned::Expired,
        &p.ctx("system:test"),
    )
    .await;
    assert!(refused.is_err_and(|e| e.is_refusal()), "not expired yet");
    p.clock.set(expires_at);
    fire_due_deadlines(&*p.w.store, &p.pool, Some(&p.cache), p.clock.now())
        .await
        .expect("fire");
    let b = booking(&p, a.booking_id).await;
    assert_eq!((b.slot_id, b.pending_move), (p.w.slot_id, None));
    assert_eq!(taken(&p, dearer).await, (0, 0));
    // The top-up succeeds after all: nothing moves, and it goes back in full.
    for outcome in &late {
        tessera_commands::reactor::handle_gateway_event(&*p.w.store, outcome, p.clock.now())
            .await
            .expect("late outcome");
    }
    p.settle().await;
    let late_top_up = payment(&p, started.payment_id).await;
    assert_eq!(
        (late_top_up.amount.minor, late_top_up.refunded()),
        (6_000, 6_000)
    );
    let b = booking(&p, a.booking_id).await;
    assert_eq!(
        (b.slot_id, b.paid, b.refunded),
        (p.w.slot_id, eur(10_000), eur(0))
    );
    clean(&p).await;

    // Paid: one append moves the booking; it now has two payments.
    let Moved::AwaitingPayment { started, .. } = move_to(&p, a.booking_id, dearer, None).await
    else {
        panic!("a dearer slot waits for its top-up")
    };
    p.settle().await;
    let b = booking(&p, a.booking_id).await;
    assert_eq!(
        (b.slot_id, b.status, b.total, b.paid, b.pending_move),
        (
            dearer,
            BookingStatus::Confirmed,
            eur(16_000),
            eur(16_000),
            None
        )
    );
    assert_eq!(b.payments(), vec![first, started.payment_id]);
    assert_eq!(taken(&p, dearer).await, (0, 2));
    assert_eq!(taken(&p, p.w.slot_id).await, (0, 0));
    clean(&p).await;

    // B moves too, then the provider cancels it: all 160.00 comes back, newest payment first.
    let bk = p.paid_booking(2).await;
    let Moved::AwaitingPayment { started: b_top, .. } =
        move_to(&p, bk.booking_id, dearer, None).await
    else {
        panic!("a dearer slot waits for its top-up")
    };
    p.settle().await;
    assert_eq!(booking(&p, bk.booking_id).await.slot_id, dearer);
    cancel_booking(
        &*p.w.store,
        bk.booking_id,
        Canceller::Provider(p.w.provider),
        false,
        &p.ctx("user:provider"),
    )
    .await
    .expect("cancel");
    p.settle().await;
    let b = booking(&p, bk.booking_id).await;
    assert_eq!(
        (b.status, b.refunded),
        (BookingStatus::Refunded, eur(16_000))
    );
    let b_first = b.payment_id.expect("paid");
    assert_eq!(payment(&p, b_top.payment_id).await.refunded(), 6_000);
    assert_eq!(payment(&p, b_first).await.refunded(), 10_000);
    assert_eq!(taken(&p, dearer).await, (0, 2), "only A's seats are left");
    clean(&p).await;

    // A's slot ends and the dispute window passes: both payments are released and
    // transferred, 85 % of the 160.00.
    p.clock.set(t(24, 14));
    fire_due_deadlines(&*p.w.store, &p.pool, Some(&p.cache), p.clock.now())
        .await
        .expect("fire");
    p.settle().await;
    p.clock.set(t(26, 14));
    fire_due_deadlines(&*p.w.store, &p.pool, Some(&p.cache), p.clock.now())
        .await
        .expect("fire");
    p.settle().await;
    assert_eq!(
        booking(&p, a.booking_id).await.status,
        BookingStatus::Completed
    );
    let (pf, pt) = (
        payment(&p, first).await,
        payment(&p, started.payment_id).await,
    );
    assert_eq!((pf.transferred(), pt.transferred()), (8_500, 5_100));
    clean(&p).await;
}
