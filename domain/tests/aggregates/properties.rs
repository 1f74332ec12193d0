//! Invariants under random command sequences.

use chrono::TimeDelta;
use proptest::prelude::*;
use tessera_domain::Aggregate;
use tessera_domain::booking::{BookingAggregate, BookingCommand, BookingState, Canceller};
use tessera_domain::slot::{SlotAggregate, SlotCommand, SlotState};
use tessera_domain::values::{BookingId, Seats};
use uuid::Uuid;

use crate::fixtures::*;

#[derive(Debug, Clone)]
enum SlotOp {
    Hold(u8, u32),
    Confirm(u8),
    Release(u8),
    Capacity(u32),
}

fn slot_op() -> impl Strategy<Value = SlotOp> {
    prop_oneof![
        (0u8..12, 1u32..5).prop_map(|(b, s)| SlotOp::Hold(b, s)),
        (0u8..12).prop_map(SlotOp::Confirm),
        (0u8..12).prop_map(SlotOp::Release),
        (1u32..20).prop_map(SlotOp::Capacity),
    ]
}

proptest! {
    /// Whatever is attempted, held + confirmed seats never exceed capacity, and the seats
    /// accounted for equal holds minus releases (no double release, no drift).
    #[test]
    fn slot_never_overbooks(ops in proptest::collection::vec(slot_op(), 1..80)) {
        let schedule = SlotCommand::Schedule {
            id: SLOT, listing_id: LISTING, provider_id: PROVIDER,
            starts_at: t(20, 10), ends_at: t(20, 14), capacity: 10, price_per_seat: eur(5_000),
        };
        let mut state = SlotState::default();
        for e in SlotAggregate::decide(&state, &schedule).expect("schedule") {
            state = SlotAggregate::evolve(state, &e);
        }
        let (mut held_total, mut released_total) = (0u32, 0u32);
        for op in ops {
            let id = |b: u8| BookingId(Uuid::from_u128(1_000 + u128::from(b)));
            let command = match op {
                SlotOp::Hold(b, s) => SlotCommand::HoldSeats { booking_id: id(b), seats: Seats::new(s).expect("seats"), now: t(1, 9), allow_overbook: false },
                SlotOp::Confirm(b) => SlotCommand::ConfirmSeats { booking_id: id(b) },
                SlotOp::Release(b) => SlotCommand::ReleaseSeats { booking_id: id(b) },
                SlotOp::Capacity(c) => SlotCommand::ChangeCapacity { capacity: c },
            };
            if let Ok(events) = SlotAggregate::decide(&state, &command) {
                for e in &events {
                    match e {
                        tessera_domain::slot::SlotEvent::SeatsHeld { seats, .. } => held_total += seats,
                        tessera_domain::slot::SlotEvent::SeatsReleased { seats, .. } => released_total += seats,
                        _ => {}
                    }
                    state = SlotAggregate::evolve(state, e);
                }
            }
            let SlotState::Scheduled(slot) = &state else { unreachable!("scheduled") };
            prop_assert!(slot.held() + slot.confirmed() <= slot.capacity);
            prop_assert_eq!(slot.taken(), held_total - released_total);
            // The counters that evolve keeps are the sums over the holds.
            let sum = |confirmed: bool| -> u32 {
                slot.holds.values().filter(|h| h.confirmed == confirmed).map(|h| h.seats).sum()
            };
            prop_assert_eq!((slot.held(), slot.confirmed()), (sum(false), sum(true)));
        }
    }

    /// Refunds never exceed what was paid, whatever the sequence of commands.
    #[test]
    fn refunds_never_exceed_payment(steps in proptest::collection::vec((0u8..8, 0i64..12_000, 0u32..480), 1..40)) {
        let mut state = BookingState::default();
        for e in BookingAggregate::decide(&state, &place()).expect("place") {
            state = BookingAggregate::evolve(state, &e);
        }
        for (op, amount, minutes) in steps {
            let now = t(1, 9) + TimeDelta::minutes(i64::from(minutes));
            let command = match op {
                0 => BookingCommand::StartPayment { payment_id: PAYMENT, now },
                1 => BookingCommand::ConfirmPayment { payment_id: PAYMENT, amount: eur(10_000) },
                2 => BookingCommand::FailPayment { payment_id: PAYMENT },
                3 => BookingCommand::Expire { now },
                4 => BookingCommand::Cancel { by: Canceller::Customer(CUSTOMER), now, reason: None, waive_fee: false },
                5 => BookingCommand::RecordRefund { amount: eur(amount) },
                6 => BookingCommand::Reinstate { now, hold_ttl: TimeDelta::minutes(15), allow_overbook: false },
                _ => BookingCommand::Complete { now: t(21, 0) },
            };
            if let Ok(events) = BookingAggregate::decide(&state, &command) {
                for e in &events {
                    state = BookingAggregate::evolve(state, e);
                }
            }
            let b = state.booking().expect("placed");
            prop_assert!(b.refunded.minor <= b.paid.minor);
            prop_assert!(b.refund_due.minor <= b.paid.minor);
        }
    }
}

proptest! {
    /// Points balance = awarded − reversed − redeemed + adjustments, and never negative.
    #[test]
    fn points_balance_is_consistent_and_never_negative(steps in proptest::collection::vec((0u8..6, 0u128..6, -300i64..900), 1..60)) {
        use tessera_domain::loyalty::{LoyaltyAggregate as L, LoyaltyCommand as LC};
        let mut state = L::replay(&[]);
        for (op, b, n) in steps {
            let booking_id = BookingId(Uuid::from_u128(2_000 + b));
            let command = match op {
                0 => LC::RecordBookingConfirmed { booking_id },
                1 => LC::RecordBookingCompleted { booking_id },
                2 => LC::RecordReviewWritten { booking_id },
                3 => LC::ReverseForBooking { booking_id },
                4 => LC::Redeem { booking_id, points: n, value: eur(n.max(0)) },
                _ => LC::Adjust { delta: n },
            };
            if let Ok(events) = L::decide(&state, &command) {
                for e in &events {
                    state = L::evolve(state, e);
                }
            }
            prop_assert!(state.balance >= 0);
            prop_assert_eq!(state.balance, state.awarded - state.reversed - state.redeemed + state.adjusted);
        }
    }
}
