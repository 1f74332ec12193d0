//! The booking state machine: every legal transition with its events, every illegal one refused.

use chrono::TimeDelta;
use tessera_domain::Aggregate;
use tessera_domain::aggregate::spec::given;
use tessera_domain::booking::{
    BookingAggregate as B, BookingCommand as C, BookingError as E, BookingEvent as Ev,
    BookingStatus as S, Canceller,
};
use tessera_domain::values::PaymentId;
use uuid::Uuid;

use crate::fixtures::*;

fn held() -> Vec<Ev> {
    vec![placed()]
}
fn pending() -> Vec<Ev> {
    vec![placed(), payment_started()]
}
fn confirmed_h() -> Vec<Ev> {
    vec![placed(), payment_started(), confirmed()]
}
fn completed() -> Vec<Ev> {
    let mut h = confirmed_h();
    h.push(Ev::BookingCompleted {
        booking_id: BOOKING,
    });
    h
}
fn expired() -> Vec<Ev> {
    vec![
        placed(),
        Ev::BookingExpired {
            booking_id: BOOKING,
        },
    ]
}
fn cancelled_unpaid() -> Vec<Ev> {
    vec![
        placed(),
        Ev::BookingCancelled {
            booking_id: BOOKING,
            by: Canceller::Customer(CUSTOMER),
            reason: None,
            hours_before_start: 456,
            refund_due: eur(0),
        },
    ]
}
fn cancelled_paid() -> Vec<Ev> {
    let mut h = confirmed_h();
    h.push(Ev::BookingCancelled {
        booking_id: BOOKING,
        by: Canceller::Customer(CUSTOMER),
        reason: None,
        hours_before_start: 456,
        refund_due: eur(10_000),
    });
    h
}
fn refunded() -> Vec<Ev> {
    let mut h = cancelled_paid();
    h.push(Ev::BookingRefunded {
        booking_id: BOOKING,
        amount: eur(10_000),
        total_refunded: eur(10_000),
    });
    h
}

fn status(history: &[Ev]) -> S {
    B::replay(history).booking().expect("placed").status
}

#[test]
fn place_holds_until_the_ttl_and_never_past_the_start() {
    let state = given::<B>(&[]).when_then(place(), &[placed()]);
    assert_eq!(state.booking().map(|b| b.status), Some(S::Held));
    // Placed 20 minutes before the start with a 1-hour hold: the hold ends at the start.
    let mut late = place();
    if let C::Place { now, hold_ttl, .. } = &mut late {
        *now = t(20, 10) - TimeDelta::minutes(20);
        *hold_ttl = TimeDelta::hours(1);
    }
    let events = B::decide(&Default::default(), &late).expect("placed");
    assert!(
        matches!(&events[0], Ev::BookingPlaced { hold_expires_at, .. } if *hold_expires_at == t(20, 10))
    );
}

#[test]
fn place_refusals() {
    let mut started = place();
    if let C::Place { now, .. } = &mut started {
        *now = t(20, 10);
    }
    given::<B>(&[]).when_err(started, E::SlotStarted);
    let mut no_ttl = place();
    if let C::Place { hold_ttl, .. } = &mut no_ttl {
        *hold_ttl = TimeDelta::zero();
    }
    given::<B>(&[]).when_err(no_ttl, E::InvalidHoldTtl);
    given::<B>(&held()).when_err(place(), E::AlreadyPlaced);
    given::<B>(&[]).when_err(C::Expire { now: t(2, 0) }, E::NotPlaced);
}

#[test]
fn the_happy_path_to_completed() {
    given::<B>(&held()).when_then(
        C::StartPayment {
            payment_id: PAYMENT,
            now: t(1, 9),
        },
        &[payment_started()],
    );
    given::<B>(&pending()).when_then(
        C::ConfirmPayment {
            payment_id: PAYMENT,
            amount: eur(10_000),
        },
        &[confirmed()],
    );
    let state = given::<B>(&confirmed_h()).when_then(
        C::Complete { now: t(20, 14) },
        &[Ev::BookingCompleted {
            booking_id: BOOKING,
        }],
    );
    assert_eq!(
        state.booking().map(|b| (b.status, b.paid)),
        Some((S::Completed, eur(10_000)))
    );
}

#[test]
fn payments_are_checked() {
    given::<B>(&held()).when_err(
        C::StartPayment {
            payment_id: PAYMENT,
            now: t(1, 10),
        },
        E::HoldExpired(t(1, 9) + TimeDelta::minutes(15)),
    );
    let other = PaymentId(Uuid::from_u128(99));
    given::<B>(&pending()).when_err(
        C::ConfirmPayment {
            payment_id: other,
            amount: eur(10_000),
        },
        E::WrongPayment { got: other },
    );
    given::<B>(&pending()).when_err(
        C::ConfirmPayment {
            payment_id: PAYMENT,
            amount: eur(9_999),
        },
        E::AmountMismatch {
            expected: eur(10_000),
            got: eur(9_999),
        },
    );
    // A failed payment makes the booking payable again until the hold lapses.
    let state = given::<B>(&pending()).when_then(
        C::FailPayment {
            payment_id: PAYMENT,
        },
        &[Ev::BookingPaymentFailed {
            booking_id: BOOKING,
            payment_id: PAYMENT,
        }],
    );
    assert_eq!(state.booking().map(|b| b.status), Some(S::Held));
}

#[test]
fn holds_expire_only_when_due() {
    let due = t(1, 9) + TimeDelta::minutes(15);
    given::<B>(&held()).when_err(
        C::Expire {
            now: due - TimeDelta::seconds(1),
        },
        E::HoldNotExpired(due),
    );
    given::<B>(&held()).when_then(
        C::Expire { now: due },
        &[Ev::BookingExpired {
            booking_id: BOOKING,
        }],
    );
    given::<B>(&pending()).when_then(
        C::Expire { now: due },
        &[Ev::BookingExpired {
            booking_id: BOOKING,
        }],
    );
    given::<B>(&confirmed_h()).when_err(C::Complete { now: t(20, 13) }, E::SlotNotEnded(t(20, 14)));
}

#[test]
fn cancellation_refunds_follow_the_snapshotted_policy() {
    let cancel = |by, now, waive_fee| C::Cancel {
        by,
        now,
        reason: Some("plans changed".into()),
        waive_fee,
    };
    let cancelled = |by, hours, due: i64| Ev::BookingCancelled {
        booking_id: BOOKING,
        by,
        reason: Some("plans changed".into()),
        hours_before_start: hours,
        refund_due: eur(due),
    };
    let customer = Canceller::Customer(CUSTOMER);
    // Unpaid: nothing to refund.
    given::<B>(&held()).when_then(
        cancel(customer, t(1, 9), false),
        &[cancelled(customer, 457, 0)],
    );
    given::<B>(&pending()).when_then(
        cancel(customer, t(1, 9), false),
        &[cancelled(customer, 457, 0)],
    );
    // Paid, by the customer: 100 % at ≥ 7 days, 50 % at ≥ 48 h, 0 % later.
    given::<B>(&confirmed_h()).when_then(
        cancel(customer, t(13, 10), false),
        &[cancelled(customer, 168, 10_000)],
    );
    given::<B>(&confirmed_h()).when_then(
        cancel(customer, t(17, 12), false),
        &[cancelled(customer, 70, 5_000)],
    );
    given::<B>(&confirmed_h()).when_then(
        cancel(customer, t(19, 12), false),
        &[cancelled(customer, 22, 0)],
    );
    // The provider always refunds in full; an admin may waive the fee.
    let provider = Canceller::Provider(PROVIDER);
    given::<B>(&confirmed_h()).when_then(
        cancel(provider, t(19, 12), false),
        &[cancelled(provider, 22, 10_000)],
    );
    let admin = Canceller::Admin(ADMIN);
    given::<B>(&confirmed_h()).when_then(
        cancel(admin, t(19, 12), true),
        &[cancelled(admin, 22, 10_000)],
    );
    given::<B>(&confirmed_h())
        .when_then(cancel(admin, t(19, 12), false), &[cancelled(admin, 22, 0)]);
    // The quote is the same computation, without cancelling.
    let booking = B::replay(&confirmed_h())
        .booking()
        .cloned()
        .expect("booking");
    assert_eq!(
        booking.cancellation_quote(customer, t(17, 12), false),
        Ok(eur(5_000))
    );
}

#[test]
fn refunds_never_exceed_what_was_paid() {
    let state = given::<B>(&cancelled_paid()).when_then(
        C::RecordRefund { amount: eur(4_000) },
        &[Ev::BookingRefunded {
            booking_id: BOOKING,
            amount: eur(4_000),
            total_refunded: eur(4_000),
        }],
    );
    assert_eq!(
        state.booking().map(|b| b.status),
        Some(S::Cancelled),
        "partially refunded"
    );
    let mut history = cancelled_paid();
    history.push(Ev::BookingRefunded {
        booking_id: BOOKING,
        amount: eur(4_000),
        total_refunded: eur(4_000),
    });
    let state = given::<B>(&history).when_then(
        C::RecordRefund { amount: eur(6_000) },
        &[Ev::BookingRefunded {
            booking_id: BOOKING,
            amount: eur(6_000),
            total_refunded: eur(10_000),
        }],
    );
    assert_eq!(state.booking().map(|b| b.status), Some(S::Refunded));
    given::<B>(&refunded()).when_err(
        C::RecordRefund { amount: eur(1) },
        E::RefundExceedsPaid {
            paid: eur(10_000),
            refunded: eur(10_000),
            requested: eur(1),
        },
    );
    given::<B>(&cancelled_paid()).when_err(C::RecordRefund { amount: eur(0) }, E::EmptyRefund);
    // An admin's compensating refund on a confirmed booking keeps it confirmed.
    let state = given::<B>(&confirmed_h()).when_then(
        C::RecordRefund { amount: eur(2_500) },
        &[Ev::BookingRefunded {
            booking_id: BOOKING,
            amount: eur(2_500),
            total_refunded: eur(2_500),
        }],
    );
    assert_eq!(state.booking().map(|b| b.status), Some(S::Confirmed));
    // A later cancellation refunds from what is left, and the booking ends refunded once that
    // is paid back too.
    let b = state.booking().expect("booking");
    assert_eq!(b.refund_due, eur(2_500));
    assert_eq!(
        b.cancellation_quote(Canceller::Customer(CUSTOMER), t(1, 10), false),
        Ok(eur(7_500))
    );
    let mut history = confirmed_h();
    history.extend([
        Ev::BookingRefunded {
            booking_id: BOOKING,
            amount: eur(2_500),
            total_refunded: eur(2_500),
        },
        Ev::BookingCancelled {
            booking_id: BOOKING,
            by: Canceller::Customer(CUSTOMER),
            reason: None,
            hours_before_start: 456,
            refund_due: eur(7_500),
        },
    ]);
    let state = given::<B>(&history).when_then(
        C::RecordRefund { amount: eur(7_500) },
        &[Ev::BookingRefunded {
            booking_id: BOOKING,
            amount: eur(7_500),
            total_refunded: eur(10_000),
        }],
    );
    assert_eq!(state.booking().map(|b| b.status), Some(S::Refunded));
}

#[test]
fn expired_bookings_can_be_reinstated() {
    let state = given::<B>(&expired()).when_then(
        C::Reinstate {
            now: t(2, 9),
            hold_ttl: TimeDelta::minutes(15),
            allow_overbook: false,
        },
        &[Ev::BookingReinstated {
            booking_id: BOOKING,
            hold_expires_at: t(2, 9) + TimeDelta::minutes(15),
            allow_overbook: false,
        }],
    );
    assert_eq!(state.booking().map(|b| b.status), Some(S::Held));
}

/// Every command that is not a legal transition from a state is refused with
/// `InvalidTransition` naming that state.
#[test]
fn illegal_transitions_are_typed_errors() {
    let now = t(1, 9);
    let commands: Vec<(&str, C)> = vec![
        (
            "start",
            C::StartPayment {
                payment_id: PAYMENT,
                now,
            },
        ),
        (
            "fail",
            C::FailPayment {
                payment_id: PAYMENT,
            },
        ),
        (
            "confirm",
            C::ConfirmPayment {
                payment_id: PAYMENT,
                amount: eur(10_000),
            },
        ),
        ("expire", C::Expire { now: t(21, 0) }),
        (
            "cancel",
            C::Cancel {
                by: Canceller::Customer(CUSTOMER),
                now,
                reason: None,
                waive_fee: false,
            },
        ),
        ("complete", C::Complete { now: t(21, 0) }),
        ("refund", C::RecordRefund { amount: eur(1) }),
        (
            "reinstate",
            C::Reinstate {
                now,
                hold_ttl: TimeDelta::minutes(15),
                allow_overbook: false,
            },
        ),
    ];
    // (state, commands that are legal from it)
    let states: Vec<(Vec<Ev>, &[&str])> = vec![
        (held(), &["start", "expire", "cancel"]),
        (pending(), &["fail", "confirm", "expire", "cancel"]),
        (confirmed_h(), &["cancel", "complete", "refund"]),
        (completed(), &["refund"]),
        (expired(), &["reinstate"]),
        (cancelled_unpaid(), &[]),
        (cancelled_paid(), &["refund"]),
        (refunded(), &["refund"]),
    ];
    let mut checked = 0;
    for (history, legal) in &states {
        let state = B::replay(history);
        let from = status(history);
        for (name, command) in &commands {
            let outcome = B::decide(&state, command);
            if legal.contains(name) {
                // Legal from this state (it may still be refused for another reason, such as a
                // refund beyond what was paid).
                assert!(
                    !matches!(outcome, Err(E::InvalidTransition { .. })),
                    "{name} from {from:?} must be legal: {outcome:?}"
                );
            } else {
                match outcome {
                    Err(E::InvalidTransition { from: f, .. }) => assert_eq!(f, from, "{name}"),
                    other => {
                        panic!("{name} from {from:?} must be an invalid transition, got {other:?}")
                    }
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 64);
}

#[test]
fn a_confirmed_booking_moves_within_its_listing_while_its_policy_refunds() {
    use tessera_domain::values::{ListingId, SlotId};
    let other = SlotId(Uuid::from_u128(0x60));
    let move_to = |slot, listing, price, now| C::Reschedule {
        to_slot: slot,
        to_listing: listing,
        slot_starts_at: t(27, 10),
        slot_ends_at: t(27, 14),
        price_per_seat: eur(price),
        now,
        top_up: None,
        move_ttl: TimeDelta::minutes(15),
    };
    let moved = |total: i64, refund: i64, hours| Ev::BookingRescheduled {
        booking_id: BOOKING,
        from_slot: SLOT,
        to_slot: other,
        slot_starts_at: t(27, 10),
        slot_ends_at: t(27, 14),
        total: eur(total),
        refund: eur(refund),
        hours_before_start: hours,
        top_up: None,
    };
    // Same price: nothing owed; the booking is on the new slot, still confirmed.
    let state = given::<B>(&confirmed_h()).when_then(
        move_to(other, LISTING, 5_000, t(10, 10)),
        &[moved(10_000, 0, 240)],
    );
    let b = state.booking().expect("booking");
    assert_eq!(
        (b.slot_id, b.slot_starts_at, b.status),
        (other, t(27, 10), S::Confirmed)
    );
    // Cheaper: the difference is owed back, and a later cancellation refunds from what is left.
    let mut h = confirmed_h();
    h.push(moved(8_000, 2_000, 240));
    let b = B::replay(&h).booking().cloned().expect("booking");
    assert_eq!((b.total, b.refund_due), (eur(8_000), eur(2_000)));
    assert_eq!(
        b.cancellation_quote(Canceller::Customer(CUSTOMER), t(10, 10), false),
        Ok(eur(8_000))
    );
    // Refused: dearer, same slot, another listing, past the last refunding tier (48 h before
    // the start under the standard policy), started, or not confirmed.
    given::<B>(&confirmed_h()).when_err(
        move_to(other, LISTING, 6_000, t(10, 10)),
        E::RescheduleCostsMore {
            difference: eur(2_000),
        },
    );
    given::<B>(&confirmed_h()).when_err(move_to(SLOT, LISTING, 5_000, t(10, 10)), E::SameSlot);
    given::<B>(&confirmed_h()).when_err(
        move_to(other, ListingId(Uuid::from_u128(0x61)), 5_000, t(10, 10)),
        E::OtherListing,
    );
    given::<B>(&confirmed_h()).when_err(
        move_to(other, LISTING, 5_000, t(18, 10)),
        E::RescheduleClosed(t(18, 10)),
    );
    given::<B>(&confirmed_h()).when_err(move_to(other, LISTING, 5_000, t(21, 10)), E::SlotStarted);
    given::<B>(&held()).when_err(
        move_to(other, LISTING, 5_000, t(10, 10)),
        E::InvalidTransition {
            from: S::Held,
            action: "be rescheduled",
        },
    );
}

#[test]
fn a_move_to_a_dearer_slot_waits_for_its_top_up() {
    use tessera_domain::booking::{MoveAbandoned, TopUp};
    use tessera_domain::values::SlotId;
    let other = SlotId(Uuid::from_u128(0x60));
    let top_up = PaymentId(Uuid::from_u128(0x70));
    let dearer = |now, ttl| C::Reschedule {
        to_slot: other,
        to_listing: LISTING,
        slot_starts_at: t(27, 10),
        slot_ends_at: t(27, 14),
        price_per_seat: eur(6_000),
        now,
        top_up: Some(top_up),
        move_ttl: ttl,
    };
    let requested = |expires_at| Ev::BookingMoveRequested {
        booking_id: BOOKING,
        payment_id: top_up,
        from_slot: SLOT,
        to_slot: other,
        slot_starts_at: t(27, 10),
        slot_ends_at: t(27, 14),
        total: eur(12_000),
        charge: eur(2_000),
        expires_at,
    };
    // Requested: the booking stays where it is, and waits at most the TTL, never past the
    // time it could be moved (48 h before the start: t(18, 10)).
    let state = given::<B>(&confirmed_h()).when_then(
        dearer(t(10, 10), TimeDelta::minutes(15)),
        &[requested(t(10, 10) + TimeDelta::minutes(15))],
    );
    let b = state.booking().expect("booking");
    assert_eq!(
        (b.slot_id, b.total, b.status),
        (SLOT, eur(10_000), S::Confirmed)
    );
    given::<B>(&confirmed_h()).when_then(
        dearer(t(18, 9), TimeDelta::hours(2)),
        &[requested(t(18, 10))],
    );
    let mut h = confirmed_h();
    h.push(requested(t(10, 10) + TimeDelta::minutes(15)));
    // One move at a time.
    given::<B>(&h).when_err(
        dearer(t(10, 11), TimeDelta::minutes(15)),
        E::MovePending {
            to_slot: other,
            expires_at: t(10, 10) + TimeDelta::minutes(15),
        },
    );
    // The top-up of the wrong amount, or another payment, completes nothing.
    given::<B>(&h).when_err(
        C::CompleteMove {
            payment_id: top_up,
            amount: eur(1_999),
            now: t(10, 12),
        },
        E::AmountMismatch {
            expected: eur(2_000),
            got: eur(1_999),
        },
    );
    given::<B>(&h).when_err(
        C::CompleteMove {
            payment_id: PAYMENT,
            amount: eur(2_000),
            now: t(10, 12),
        },
        E::NoPendingMove,
    );
    // Paid: the booking moves, and counts both payments.
    let moved = Ev::BookingRescheduled {
        booking_id: BOOKING,
        from_slot: SLOT,
        to_slot: other,
        slot_starts_at: t(27, 10),
        slot_ends_at: t(27, 14),
        total: eur(12_000),
        refund: eur(0),
        hours_before_start: (t(20, 10) - t(10, 12)).num_hours(),
        top_up: Some(TopUp {
            payment_id: top_up,
            amount: eur(2_000),
        }),
    };
    let state = given::<B>(&h).when_then(
        C::CompleteMove {
            payment_id: top_up,
            amount: eur(2_000),
            now: t(10, 12),
        },
        std::slice::from_ref(&moved),
    );
    let b = state.booking().cloned().expect("booking");
    assert_eq!(
        (b.slot_id, b.total, b.paid, b.pending_move),
        (other, eur(12_000), eur(12_000), None)
    );
    assert_eq!(b.payments(), vec![PAYMENT, top_up]);
    // A cancellation now refunds from both payments' worth.
    assert_eq!(
        b.cancellation_quote(Canceller::Provider(CUSTOMER), t(10, 13), false),
        Ok(eur(12_000))
    );
    // Expiry: not before its time; then abandoned, and the booking can move again.
    given::<B>(&h).when_err(
        C::AbandonMove {
            payment_id: top_up,
            why: MoveAbandoned::Expired,
            now: t(10, 10) + TimeDelta::minutes(10),
        },
        E::MoveNotExpired(t(10, 10) + TimeDelta::minutes(15)),
    );
    let abandoned = Ev::BookingMoveAbandoned {
        booking_id: BOOKING,
        payment_id: top_up,
        to_slot: other,
        why: MoveAbandoned::Expired,
    };
    let state = given::<B>(&h).when_then(
        C::AbandonMove {
            payment_id: top_up,
            why: MoveAbandoned::Expired,
            now: t(10, 11),
        },
        std::slice::from_ref(&abandoned),
    );
    let b = state.booking().expect("booking");
    assert_eq!(
        (b.slot_id, b.paid, b.pending_move),
        (SLOT, eur(10_000), None)
    );
    // A failed top-up abandons at once.
    given::<B>(&h).when_then(
        C::AbandonMove {
            payment_id: top_up,
            why: MoveAbandoned::PaymentFailed,
            now: t(10, 11),
        },
        &[Ev::BookingMoveAbandoned {
            booking_id: BOOKING,
            payment_id: top_up,
            to_slot: other,
            why: MoveAbandoned::PaymentFailed,
        }],
    );
    // A cancellation ends the pending move too (its handler releases the new slot's seats).
    let mut c = h.clone();
    c.push(Ev::BookingCancelled {
        booking_id: BOOKING,
        by: Canceller::Customer(CUSTOMER),
        reason: None,
        hours_before_start: 240,
        refund_due: eur(10_000),
    });
    assert_eq!(B::replay(&c).booking().expect("booking").pending_move, None);
}
