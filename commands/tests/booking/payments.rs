//! Payments through the simulated gateway: outcomes arrive later, as webhooks do.

use chrono::TimeDelta;
use tessera_commands::booking::{BookingConfig, cancel_booking, expire_booking, place_booking};
use tessera_commands::gateway::{CARD_DECLINED, CARD_SUCCEEDS, GatewayEvent, SimulatedGateway};
use tessera_commands::handler::{CommandContext, load, stream_of};
use tessera_commands::payment::{
    record_payment_failed, record_payment_succeeded, send_refund, start_payment,
};
use tessera_domain::booking::{BookingAggregate, BookingStatus, Canceller};
use tessera_domain::payment::{PaymentAggregate, PaymentStatus, RefundStatus};
use tessera_domain::values::PaymentId;
use uuid::Uuid;

use super::*;

/// What the gateway reported, as the command that records it would receive it.
async fn next_outcome(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<GatewayEvent>,
) -> GatewayEvent {
    tokio::time::timeout(std::time::Duration::from_secs(30), events.recv())
        .await
        .expect("the gateway reported before the deadline")
        .expect("gateway open")
}

fn ctx_for_webhook(event: &GatewayEvent, now: chrono::DateTime<chrono::Utc>) -> CommandContext {
    let id = match event {
        GatewayEvent::PaymentSucceeded { event_id, .. }
        | GatewayEvent::PaymentFailed { event_id, .. }
        | GatewayEvent::AccountUpdated { event_id, .. }
        | GatewayEvent::PayoutUpdated { event_id, .. }
        | GatewayEvent::Ignored { event_id, .. } => event_id,
    };
    CommandContext::new(
        Uuid::new_v5(&Uuid::NAMESPACE_URL, id.as_bytes()),
        "system:payments",
        now,
    )
}

async fn payment(w: &World, id: PaymentId) -> tessera_domain::payment::Payment {
    load::<PaymentAggregate>(&*w.store, stream_of::<PaymentAggregate>(id), Uuid::nil())
        .await
        .expect("load")
        .state
        .payment()
        .cloned()
        .expect("payment")
}

#[tokio::test]
async fn paying_confirms_the_booking_and_its_seats_once() {
    let w = world(4).await;
    let (gateway, mut outcomes) = SimulatedGateway::new();
    let req = request(&w, 2);
    place_booking(
        &*w.store,
        &BookingConfig::default(),
        &req,
        &ctx("user:c", t(1, 9)),
    )
    .await
    .expect("place");
    let started = start_payment(
        &*w.store,
        &gateway,
        req.booking_id,
        Some(CARD_SUCCEEDS.into()),
        &ctx("user:c", t(1, 9)),
    )
    .await
    .expect("start");
    assert_eq!(
        status(&w, req.booking_id).await,
        BookingStatus::PaymentPending
    );
    let outcome = next_outcome(&mut outcomes).await;
    let GatewayEvent::PaymentSucceeded {
        payment_id: Some(paid),
        ..
    } = &outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(*paid, started.payment_id);
    let webhook = ctx_for_webhook(&outcome, t(1, 9) + TimeDelta::minutes(1));
    let first = record_payment_succeeded(&*w.store, *paid, &webhook)
        .await
        .expect("record");
    // The provider redelivers the same webhook: a replay, nothing doubled.
    let again = record_payment_succeeded(&*w.store, *paid, &webhook)
        .await
        .expect("redelivery");
    assert!(again.replayed && again.position == first.position);
    assert_eq!(status(&w, req.booking_id).await, BookingStatus::Confirmed);
    assert_eq!(payment(&w, *paid).await.status, PaymentStatus::Succeeded);
    let s = slot(&w).await;
    assert_eq!((s.confirmed(), s.held()), (2, 0));
}

#[tokio::test]
async fn a_declined_card_leaves_the_booking_payable() {
    let w = world(4).await;
    let (gateway, mut outcomes) = SimulatedGateway::new();
    let req = request(&w, 1);
    place_booking(
        &*w.store,
        &BookingConfig::default(),
        &req,
        &ctx("user:c", t(1, 9)),
    )
    .await
    .expect("place");
    start_payment(
        &*w.store,
        &gateway,
        req.booking_id,
        Some(CARD_DECLINED.into()),
        &ctx("user:c", t(1, 9)),
    )
    .await
    .expect("start");
    let outcome = next_outcome(&mut outcomes).await;
    let GatewayEvent::PaymentFailed {
        payment_id: Some(failed),
        reason,
        ..
    } = &outcome
    else {
        panic!("{outcome:?}")
    };
    record_payment_failed(
        &*w.store,
        *failed,
        reason,
        &ctx_for_webhook(&outcome, t(1, 9)),
    )
    .await
    .expect("record");
    assert_eq!(status(&w, req.booking_id).await, BookingStatus::Held);
    // Paying again with a good card works.
    start_payment(
        &*w.store,
        &gateway,
        req.booking_id,
        Some(CARD_SUCCEEDS.into()),
        &ctx("user:c", t(1, 9)),
    )
    .await
    .expect("retry payment");
    let outcome = next_outcome(&mut outcomes).await;
    let GatewayEvent::PaymentSucceeded {
        payment_id: Some(paid),
        ..
    } = &outcome
    else {
        panic!("{outcome:?}")
    };
    record_payment_succeeded(&*w.store, *paid, &ctx_for_webhook(&outcome, t(1, 9)))
        .await
        .expect("record");
    assert_eq!(status(&w, req.booking_id).await, BookingStatus::Confirmed);
}

/// Decided policy: a payment that succeeds after the hold expired confirms the booking when the
/// slot still has the seats, and is refunded in full otherwise.
#[tokio::test]
async fn late_payments_confirm_if_seats_are_free_and_refund_otherwise() {
    let w = world(2).await;
    let (gateway, mut outcomes) = SimulatedGateway::new();
    let config = BookingConfig::default();
    let expiry = t(1, 9) + TimeDelta::minutes(15);

    // Seats still free: confirmed late.
    let lucky = request(&w, 1);
    place_booking(&*w.store, &config, &lucky, &ctx("user:c", t(1, 9)))
        .await
        .expect("place");
    start_payment(
        &*w.store,
        &gateway,
        lucky.booking_id,
        None,
        &ctx("user:c", t(1, 9)),
    )
    .await
    .expect("start");
    let lucky_outcome = next_outcome(&mut outcomes).await;
    expire_booking(&*w.store, lucky.booking_id, &ctx("system:expiry", expiry))
        .await
        .expect("expire");
    let GatewayEvent::PaymentSucceeded {
        payment_id: Some(p1),
        ..
    } = &lucky_outcome
    else {
        panic!()
    };
    record_payment_succeeded(
        &*w.store,
        *p1,
        &ctx_for_webhook(&lucky_outcome, expiry + TimeDelta::minutes(1)),
    )
    .await
    .expect("late");
    assert_eq!(status(&w, lucky.booking_id).await, BookingStatus::Confirmed);
    assert_eq!(slot(&w).await.confirmed(), 1);

    // Seats gone meanwhile: refunded.
    let unlucky = request(&w, 1);
    place_booking(&*w.store, &config, &unlucky, &ctx("user:c", t(1, 10)))
        .await
        .expect("place");
    start_payment(
        &*w.store,
        &gateway,
        unlucky.booking_id,
        None,
        &ctx("user:c", t(1, 10)),
    )
    .await
    .expect("start");
    let unlucky_outcome = next_outcome(&mut outcomes).await;
    expire_booking(
        &*w.store,
        unlucky.booking_id,
        &ctx("system:expiry", t(1, 10) + TimeDelta::minutes(15)),
    )
    .await
    .expect("expire");
    place_booking(
        &*w.store,
        &config,
        &request(&w, 1),
        &ctx("user:other", t(1, 11)),
    )
    .await
    .expect("someone takes the last seat");
    let GatewayEvent::PaymentSucceeded {
        payment_id: Some(p2),
        ..
    } = &unlucky_outcome
    else {
        panic!()
    };
    record_payment_succeeded(&*w.store, *p2, &ctx_for_webhook(&unlucky_outcome, t(1, 12)))
        .await
        .expect("late");
    assert_eq!(status(&w, unlucky.booking_id).await, BookingStatus::Expired);
    let p = payment(&w, *p2).await;
    assert_eq!(p.status, PaymentStatus::Succeeded);
    assert_eq!(p.refunds.len(), 1);
    assert_eq!(p.refunds[0].amount, p.amount, "refunded in full");
    send_refund(
        &*w.store,
        &gateway,
        *p2,
        p.refunds[0].refund_id,
        &ctx("system:refunds", t(1, 12)),
    )
    .await
    .expect("refund");
    assert_eq!(
        payment(&w, *p2).await.refunds[0].status,
        RefundStatus::Succeeded
    );
}

#[tokio::test]
async fn a_paid_cancellation_is_refunded_per_policy_then_marked_refunded() {
    let w = world(4).await;
    let (gateway, mut outcomes) = SimulatedGateway::new();
    let req = request(&w, 2);
    place_booking(
        &*w.store,
        &BookingConfig::default(),
        &req,
        &ctx("user:c", t(1, 9)),
    )
    .await
    .expect("place");
    start_payment(
        &*w.store,
        &gateway,
        req.booking_id,
        None,
        &ctx("user:c", t(1, 9)),
    )
    .await
    .expect("start");
    let outcome = next_outcome(&mut outcomes).await;
    let GatewayEvent::PaymentSucceeded {
        payment_id: Some(paid),
        ..
    } = &outcome
    else {
        panic!()
    };
    record_payment_succeeded(&*w.store, *paid, &ctx_for_webhook(&outcome, t(1, 9)))
        .await
        .expect("record");
    // 70 hours before the start: 50 %.
    cancel_booking(
        &*w.store,
        req.booking_id,
        Canceller::Customer(req.customer_id),
        false,
        &ctx("user:c", t(17, 12)),
    )
    .await
    .expect("cancel");
    let booking = load::<BookingAggregate>(
        &*w.store,
        stream_of::<BookingAggregate>(req.booking_id),
        Uuid::nil(),
    )
    .await
    .expect("load");
    let due = booking.state.booking().expect("booking").refund_due;
    assert_eq!(due.minor, 5_000);
    tessera_commands::payment::request_refund(
        &*w.store,
        req.booking_id,
        due,
        &ctx("system:refunds", t(17, 12)),
    )
    .await
    .expect("request");
    let refund_id = payment(&w, *paid).await.refunds[0].refund_id;
    send_refund(
        &*w.store,
        &gateway,
        *paid,
        refund_id,
        &ctx("system:refunds", t(17, 12)),
    )
    .await
    .expect("send");
    assert_eq!(status(&w, req.booking_id).await, BookingStatus::Refunded);
    assert_eq!(slot(&w).await.taken(), 0, "seats released on cancellation");
}

/// A goodwill refund still under way when the customer cancels: the cancellation's refund is
/// what the payment has left, not refused for exceeding it, and the booking ends refunded.
#[tokio::test]
async fn a_cancellation_refunds_what_a_goodwill_refund_under_way_left() {
    let w = world(4).await;
    let (gateway, mut outcomes) = SimulatedGateway::new();
    let req = request(&w, 2);
    place_booking(
        &*w.store,
        &BookingConfig::default(),
        &req,
        &ctx("user:c", t(1, 9)),
    )
    .await
    .expect("place");
    start_payment(
        &*w.store,
        &gateway,
        req.booking_id,
        None,
        &ctx("user:c", t(1, 9)),
    )
    .await
    .expect("start");
    let outcome = next_outcome(&mut outcomes).await;
    let GatewayEvent::PaymentSucceeded {
        payment_id: Some(paid),
        ..
    } = &outcome
    else {
        panic!()
    };
    record_payment_succeeded(&*w.store, *paid, &ctx_for_webhook(&outcome, t(1, 9)))
        .await
        .expect("record");
    let total = payment(&w, *paid).await.amount;
    let goodwill = tessera_domain::values::Money {
        minor: 2_500,
        ..total
    };
    tessera_commands::admin::refund(
        &*w.store,
        req.booking_id,
        goodwill,
        &ctx("user:admin", t(1, 10)).with_reason("goodwill"),
    )
    .await
    .expect("goodwill requested");
    // Cancelled with everything refundable by the policy (≥ 7 days ahead).
    cancel_booking(
        &*w.store,
        req.booking_id,
        Canceller::Customer(req.customer_id),
        false,
        &ctx("user:c", t(1, 11)),
    )
    .await
    .expect("cancel");
    let owed = tessera_domain::values::Money {
        minor: total.minor,
        ..total
    };
    let cancel_ctx = ctx("system:payments", t(1, 11));
    tessera_commands::payment::request_owed_refund(&*w.store, req.booking_id, owed, &cancel_ctx)
        .await
        .expect("requested")
        .expect("something was left");
    // A retry of the reaction requests nothing more.
    let again = tessera_commands::payment::request_owed_refund(
        &*w.store,
        req.booking_id,
        owed,
        &cancel_ctx,
    )
    .await
    .expect("retry");
    assert!(again.is_some_and(|e| e.replayed));
    let refunds = payment(&w, *paid).await.refunds;
    let amounts: Vec<i64> = refunds.iter().map(|r| r.amount.minor).collect();
    assert_eq!(amounts, vec![2_500, total.minor - 2_500]);
    for r in &refunds {
        send_refund(
            &*w.store,
            &gateway,
            *paid,
            r.refund_id,
            &ctx("system:refunds", t(1, 12)),
        )
        .await
        .expect("send");
    }
    assert_eq!(status(&w, req.booking_id).await, BookingStatus::Refunded);
}
