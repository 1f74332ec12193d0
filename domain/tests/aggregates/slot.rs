//! Slots: scheduling, capacity, and seats held, confirmed and released exactly once.

use tessera_domain::Aggregate;
use tessera_domain::aggregate::spec::given;
use tessera_domain::slot::{
    SlotAggregate as A, SlotCommand as C, SlotError as E, SlotEvent as Ev, SlotState,
};
use tessera_domain::values::{BookingId, Seats};
use uuid::Uuid;

use crate::fixtures::*;

fn scheduled() -> Ev {
    Ev::SlotScheduled {
        slot_id: SLOT,
        listing_id: LISTING,
        provider_id: PROVIDER,
        starts_at: t(20, 10),
        ends_at: t(20, 14),
        capacity: 4,
        price_per_seat: eur(5_000),
    }
}

fn booking(n: u128) -> BookingId {
    BookingId(Uuid::from_u128(100 + n))
}

fn hold(n: u128, seats: u32) -> C {
    C::HoldSeats {
        booking_id: booking(n),
        seats: Seats::new(seats).expect("seats"),
        now: t(1, 9),
        allow_overbook: false,
    }
}

fn held(n: u128, seats: u32) -> Ev {
    Ev::SeatsHeld {
        slot_id: SLOT,
        booking_id: booking(n),
        seats,
        overbooked: false,
    }
}

fn remaining(history: &[Ev]) -> u32 {
    match A::replay(history) {
        SlotState::Scheduled(s) => s.remaining(),
        SlotState::New => 0,
    }
}

#[test]
fn scheduling_validates_times_and_capacity() {
    let schedule = |capacity, ends_at| C::Schedule {
        id: SLOT,
        listing_id: LISTING,
        provider_id: PROVIDER,
        starts_at: t(20, 10),
        ends_at,
        capacity,
        price_per_seat: eur(5_000),
    };
    given::<A>(&[]).when_then(schedule(4, t(20, 14)), &[scheduled()]);
    given::<A>(&[]).when_err(schedule(4, t(20, 10)), E::InvalidTimes);
    given::<A>(&[]).when_err(schedule(0, t(20, 14)), E::InvalidCapacity);
    given::<A>(&[scheduled()]).when_err(schedule(4, t(20, 14)), E::AlreadyScheduled);
    given::<A>(&[]).when_err(hold(1, 1), E::NotScheduled);
}

#[test]
fn seats_are_held_until_sold_out() {
    given::<A>(&[scheduled()]).when_then(hold(1, 3), &[held(1, 3)]);
    given::<A>(&[scheduled(), held(1, 3)]).when_err(
        hold(2, 2),
        E::SoldOut {
            requested: 2,
            remaining: 1,
        },
    );
    given::<A>(&[scheduled(), held(1, 3)]).when_then(hold(2, 1), &[held(2, 1)]);
    given::<A>(&[scheduled(), held(1, 3)]).when_err(hold(1, 1), E::AlreadyHolding(booking(1)));
    let late = C::HoldSeats {
        booking_id: booking(3),
        seats: Seats::new(1).expect("seats"),
        now: t(20, 10),
        allow_overbook: false,
    };
    given::<A>(&[scheduled()]).when_err(late, E::Started);
    // An admin's explicit overbooking is allowed and recorded.
    let over = C::HoldSeats {
        booking_id: booking(4),
        seats: Seats::new(2).expect("seats"),
        now: t(1, 9),
        allow_overbook: true,
    };
    given::<A>(&[scheduled(), held(1, 3)]).when_then(
        over,
        &[Ev::SeatsHeld {
            slot_id: SLOT,
            booking_id: booking(4),
            seats: 2,
            overbooked: true,
        }],
    );
}

#[test]
fn seats_are_confirmed_once_and_released_once() {
    let history = [scheduled(), held(1, 3)];
    given::<A>(&history).when_then(
        C::ConfirmSeats {
            booking_id: booking(1),
        },
        &[Ev::SeatsConfirmed {
            slot_id: SLOT,
            booking_id: booking(1),
            seats: 3,
        }],
    );
    let confirmed = [
        scheduled(),
        held(1, 3),
        Ev::SeatsConfirmed {
            slot_id: SLOT,
            booking_id: booking(1),
            seats: 3,
        },
    ];
    given::<A>(&confirmed).when_err(
        C::ConfirmSeats {
            booking_id: booking(1),
        },
        E::AlreadyConfirmed(booking(1)),
    );
    let released = Ev::SeatsReleased {
        slot_id: SLOT,
        booking_id: booking(1),
        seats: 3,
    };
    given::<A>(&confirmed).when_then(
        C::ReleaseSeats {
            booking_id: booking(1),
        },
        std::slice::from_ref(&released),
    );
    let after = [scheduled(), held(1, 3), released];
    assert_eq!(remaining(&after), 4, "released seats are free again");
    given::<A>(&after).when_err(
        C::ReleaseSeats {
            booking_id: booking(1),
        },
        E::NotHolding(booking(1)),
    );
    given::<A>(&[scheduled()]).when_err(
        C::ConfirmSeats {
            booking_id: booking(9),
        },
        E::NotHolding(booking(9)),
    );
}

#[test]
fn capacity_cannot_drop_below_taken_seats() {
    let history = [scheduled(), held(1, 3)];
    given::<A>(&history).when_err(
        C::ChangeCapacity { capacity: 2 },
        E::CapacityBelowTaken { taken: 3 },
    );
    given::<A>(&history).when_then(
        C::ChangeCapacity { capacity: 3 },
        &[Ev::SlotCapacityChanged {
            slot_id: SLOT,
            capacity: 3,
        }],
    );
}

#[test]
fn cancelling_a_slot_names_its_bookings_and_stops_new_holds() {
    let history = [scheduled(), held(1, 1), held(2, 2)];
    let cancelled = Ev::SlotCancelled {
        slot_id: SLOT,
        reason: "storm".into(),
        affected_bookings: vec![booking(1), booking(2)],
    };
    given::<A>(&history).when_then(
        C::Cancel {
            reason: "storm".into(),
        },
        std::slice::from_ref(&cancelled),
    );
    let after = [scheduled(), held(1, 1), held(2, 2), cancelled];
    given::<A>(&after).when_err(hold(3, 1), E::Cancelled);
    given::<A>(&after).when_err(
        C::Cancel {
            reason: "again".into(),
        },
        E::Cancelled,
    );
    // Its bookings' seats can still be released while they are unwound.
    given::<A>(&after).when_then(
        C::ReleaseSeats {
            booking_id: booking(2),
        },
        &[Ev::SeatsReleased {
            slot_id: SLOT,
            booking_id: booking(2),
            seats: 2,
        }],
    );
}

#[test]
fn a_schedule_withdraws_or_revises_a_slot_only_while_nobody_holds_seats() {
    let empty = [scheduled()];
    let price = tessera_domain::values::Money::new(7_000, tessera_domain::values::Currency::EUR)
        .expect("money");
    given::<A>(&empty).when_then(
        C::Withdraw {
            reason: "its schedule changed".into(),
        },
        &[Ev::SlotCancelled {
            slot_id: SLOT,
            reason: "its schedule changed".into(),
            affected_bookings: vec![],
        }],
    );
    given::<A>(&empty).when_then(
        C::Revise {
            capacity: 12,
            price_per_seat: price,
        },
        &[
            Ev::SlotCapacityChanged {
                slot_id: SLOT,
                capacity: 12,
            },
            Ev::SlotRepriced {
                slot_id: SLOT,
                price_per_seat: price,
            },
        ],
    );
    let booked = [scheduled(), held(1, 1)];
    given::<A>(&booked).when_err(C::Withdraw { reason: "x".into() }, E::HasBookings);
    given::<A>(&booked).when_err(
        C::Revise {
            capacity: 12,
            price_per_seat: price,
        },
        E::HasBookings,
    );
    // A plain reprice keeps the currency.
    given::<A>(&booked).when_err(
        C::Reprice {
            price_per_seat: tessera_domain::values::Money::new(
                7_000,
                tessera_domain::values::Currency::new("USD").expect("usd"),
            )
            .expect("money"),
        },
        E::WrongCurrency {
            expected: "EUR".into(),
        },
    );
}
