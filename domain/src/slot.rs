//! Slots: a dated occurrence of a listing with a capacity. The slot is where "no overbooking"
//! is decided: every seat held or confirmed is an event on the slot's stream, so two bookings
//! racing for the last seat race on one expected version and exactly one wins.

use chrono::{DateTime, Utc};
use imbl::OrdMap;
use serde::{Deserialize, Serialize};

use crate::aggregate::Aggregate;
use crate::values::{BookingId, ListingId, Money, Seats, SlotId, UserId};

/// Seats one booking has on this slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub seats: u32,
    pub confirmed: bool,
}

/// A scheduled slot. Deciding a hold costs the same on a slot with thousands of holds as on an
/// empty one: the seat counters move with each event instead of being summed over the holds,
/// and the holds are a persistent map, so the copy of the state that each decision works on
/// (the command side caches slots, ADR 0006) shares it rather than copying every hold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Slot {
    pub id: SlotId,
    pub listing_id: ListingId,
    pub provider_id: UserId,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub capacity: u32,
    pub price_per_seat: Money,
    pub holds: OrdMap<BookingId, Hold>,
    /// Seats held and not yet confirmed, and seats confirmed: the sums over `holds`.
    held: u32,
    confirmed: u32,
    pub cancelled: bool,
}

impl Slot {
    /// Seats held or confirmed.
    pub fn taken(&self) -> u32 {
        self.held.saturating_add(self.confirmed)
    }

    pub fn held(&self) -> u32 {
        self.held
    }

    pub fn confirmed(&self) -> u32 {
        self.confirmed
    }

    /// Counts a hold's seats in or out of the held or confirmed total.
    fn count(&mut self, hold: Hold, add: bool) {
        let total = if hold.confirmed {
            &mut self.confirmed
        } else {
            &mut self.held
        };
        *total = if add {
            total.saturating_add(hold.seats)
        } else {
            total.saturating_sub(hold.seats)
        };
    }

    pub fn remaining(&self) -> u32 {
        self.capacity.saturating_sub(self.taken())
    }
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub enum SlotState {
    #[default]
    New,
    Scheduled(Slot),
}

#[derive(Debug, Clone)]
pub enum SlotCommand {
    Schedule {
        id: SlotId,
        listing_id: ListingId,
        provider_id: UserId,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
        capacity: u32,
        price_per_seat: Money,
    },
    ChangeCapacity {
        capacity: u32,
    },
    /// A new price per seat for bookings placed from now on; placed bookings keep theirs.
    Reprice {
        price_per_seat: Money,
    },
    /// Hold seats for a booking (part of placing it). Refused once the slot has started.
    HoldSeats {
        booking_id: BookingId,
        seats: Seats,
        now: DateTime<Utc>,
        /// An admin's explicit, recorded decision to exceed capacity (reinstatements).
        allow_overbook: bool,
    },
    ConfirmSeats {
        booking_id: BookingId,
    },
    /// Give a booking's seats back (expiry, cancellation). Exactly once per hold.
    ReleaseSeats {
        booking_id: BookingId,
    },
    /// The provider cancels the slot; every booking on it is to be cancelled and refunded.
    Cancel {
        reason: String,
    },
    /// Cancel the slot only if no booking holds seats on it (a schedule's change withdrawing
    /// its unbooked slots): decided on the slot's own state, so a booking that got there
    /// first keeps it.
    Withdraw {
        reason: String,
    },
    /// A new capacity and price, only if no booking holds seats on it (a schedule's change to
    /// its unbooked slots).
    Revise {
        capacity: u32,
        price_per_seat: Money,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum SlotEvent {
    SlotScheduled {
        slot_id: SlotId,
        listing_id: ListingId,
        provider_id: UserId,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
        capacity: u32,
        price_per_seat: Money,
    },
    SlotCapacityChanged {
        slot_id: SlotId,
        capacity: u32,
    },
    /// Bookings placed from now on pay this per seat; placed bookings keep their price.
    SlotRepriced {
        slot_id: SlotId,
        price_per_seat: Money,
    },
    SeatsHeld {
        slot_id: SlotId,
        booking_id: BookingId,
        seats: u32,
        #[serde(default)]
        overbooked: bool,
    },
    SeatsConfirmed {
        slot_id: SlotId,
        booking_id: BookingId,
        seats: u32,
    },
    SeatsReleased {
        slot_id: SlotId,
        booking_id: BookingId,
        seats: u32,
    },
    SlotCancelled {
        slot_id: SlotId,
        reason: String,
        /// Bookings holding seats when the slot was cancelled.
        affected_bookings: Vec<BookingId>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    #[error("the slot is already scheduled")]
    AlreadyScheduled,
    #[error("the slot does not exist")]
    NotScheduled,
    #[error("the slot is cancelled")]
    Cancelled,
    #[error("the slot has already started")]
    Started,
    #[error("a slot must end after it starts")]
    InvalidTimes,
    #[error("capacity must be between 1 and 10,000")]
    InvalidCapacity,
    #[error("capacity cannot drop below the {taken} seats already taken")]
    CapacityBelowTaken { taken: u32 },
    #[error("bookings hold seats on the slot")]
    HasBookings,
    #[error("a slot is priced in its listing's currency, {expected}")]
    WrongCurrency { expected: String },
    #[error("sold out: {requested} seats requested, {remaining} remaining")]
    SoldOut { requested: u32, remaining: u32 },
    #[error("booking {0} already holds seats on this slot")]
    AlreadyHolding(BookingId),
    #[error("booking {0} holds no seats on this slot")]
    NotHolding(BookingId),
    #[error("the seats of booking {0} are already confirmed")]
    AlreadyConfirmed(BookingId),
}

const MAX_CAPACITY: u32 = 10_000;

/// The slot aggregate.
#[derive(Debug)]
pub struct SlotAggregate;

impl Aggregate for SlotAggregate {
    type State = SlotState;
    type Command = SlotCommand;
    type Event = SlotEvent;
    type Error = SlotError;
    const CATEGORY: &'static str = "slot";

    fn decide(state: &SlotState, command: &SlotCommand) -> Result<Vec<SlotEvent>, SlotError> {
        let slot = match (state, command) {
            (
                SlotState::New,
                SlotCommand::Schedule {
                    id,
                    listing_id,
                    provider_id,
                    starts_at,
                    ends_at,
                    capacity,
                    price_per_seat,
                },
            ) => {
                if ends_at <= starts_at {
                    return Err(SlotError::InvalidTimes);
                }
                if !(1..=MAX_CAPACITY).contains(capacity) {
                    return Err(SlotError::InvalidCapacity);
                }
                return Ok(vec![SlotEvent::SlotScheduled {
                    slot_id: *id,
                    listing_id: *listing_id,
                    provider_id: *provider_id,
                    starts_at: *starts_at,
                    ends_at: *ends_at,
                    capacity: *capacity,
                    price_per_seat: *price_per_seat,
                }]);
            }
            (SlotState::Scheduled(_), SlotCommand::Schedule { .. }) => {
                return Err(SlotError::AlreadyScheduled);
            }
            (SlotState::New, _) => return Err(SlotError::NotScheduled),
            (SlotState::Scheduled(s), _) => s,
        };
        let slot_id = slot.id;
        // Releasing seats stays possible on a cancelled slot (its bookings are being unwound).
        if slot.cancelled && !matches!(command, SlotCommand::ReleaseSeats { .. }) {
            return Err(SlotError::Cancelled);
        }
        if let SlotCommand::Revise {
            capacity,
            price_per_seat,
        } = command
        {
            if !slot.holds.is_empty() {
                return Err(SlotError::HasBookings);
            }
            if !(1..=MAX_CAPACITY).contains(capacity) {
                return Err(SlotError::InvalidCapacity);
            }
            if price_per_seat.currency != slot.price_per_seat.currency {
                return Err(SlotError::WrongCurrency {
                    expected: slot.price_per_seat.currency.to_string(),
                });
            }
            let mut events = Vec::new();
            if *capacity != slot.capacity {
                events.push(SlotEvent::SlotCapacityChanged {
                    slot_id,
                    capacity: *capacity,
                });
            }
            if *price_per_seat != slot.price_per_seat {
                events.push(SlotEvent::SlotRepriced {
                    slot_id,
                    price_per_seat: *price_per_seat,
                });
            }
            return Ok(events);
        }
        Ok(vec![match command {
            SlotCommand::Schedule { .. } => return Err(SlotError::AlreadyScheduled),
            SlotCommand::Revise { .. } => return Ok(vec![]),
            SlotCommand::Withdraw { reason } => {
                if !slot.holds.is_empty() {
                    return Err(SlotError::HasBookings);
                }
                SlotEvent::SlotCancelled {
                    slot_id,
                    reason: reason.clone(),
                    affected_bookings: vec![],
                }
            }
            SlotCommand::ChangeCapacity { capacity } => {
                if !(1..=MAX_CAPACITY).contains(capacity) {
                    return Err(SlotError::InvalidCapacity);
                }
                if *capacity < slot.taken() {
                    return Err(SlotError::CapacityBelowTaken {
                        taken: slot.taken(),
                    });
                }
                SlotEvent::SlotCapacityChanged {
                    slot_id,
                    capacity: *capacity,
                }
            }
            SlotCommand::Reprice { price_per_seat } => {
                if price_per_seat.currency != slot.price_per_seat.currency {
                    return Err(SlotError::WrongCurrency {
                        expected: slot.price_per_seat.currency.to_string(),
                    });
                }
                SlotEvent::SlotRepriced {
                    slot_id,
                    price_per_seat: *price_per_seat,
                }
            }
            SlotCommand::HoldSeats {
                booking_id,
                seats,
                now,
                allow_overbook,
            } => {
                if *now >= slot.starts_at {
                    return Err(SlotError::Started);
                }
                if slot.holds.contains_key(booking_id) {
                    return Err(SlotError::AlreadyHolding(*booking_id));
                }
                let overbooked = seats.get() > slot.remaining();
                if overbooked && !allow_overbook {
                    return Err(SlotError::SoldOut {
                        requested: seats.get(),
                        remaining: slot.remaining(),
                    });
                }
                SlotEvent::SeatsHeld {
                    slot_id,
                    booking_id: *booking_id,
                    seats: seats.get(),
                    overbooked,
                }
            }
            SlotCommand::ConfirmSeats { booking_id } => match slot.holds.get(booking_id) {
                None => return Err(SlotError::NotHolding(*booking_id)),
                Some(h) if h.confirmed => return Err(SlotError::AlreadyConfirmed(*booking_id)),
                Some(h) => SlotEvent::SeatsConfirmed {
                    slot_id,
                    booking_id: *booking_id,
                    seats: h.seats,
                },
            },
            SlotCommand::ReleaseSeats { booking_id } => match slot.holds.get(booking_id) {
                None => return Err(SlotError::NotHolding(*booking_id)),
                Some(h) => SlotEvent::SeatsReleased {
                    slot_id,
                    booking_id: *booking_id,
                    seats: h.seats,
                },
            },
            SlotCommand::Cancel { reason } => SlotEvent::SlotCancelled {
                slot_id,
                reason: reason.clone(),
                affected_bookings: slot.holds.keys().copied().collect(),
            },
        }])
    }

    fn evolve(state: SlotState, event: &SlotEvent) -> SlotState {
        match (state, event) {
            (
                SlotState::New,
                SlotEvent::SlotScheduled {
                    slot_id,
                    listing_id,
                    provider_id,
                    starts_at,
                    ends_at,
                    capacity,
                    price_per_seat,
                },
            ) => SlotState::Scheduled(Slot {
                id: *slot_id,
                listing_id: *listing_id,
                provider_id: *provider_id,
                starts_at: *starts_at,
                ends_at: *ends_at,
                capacity: *capacity,
                price_per_seat: *price_per_seat,
                holds: OrdMap::new(),
                held: 0,
                confirmed: 0,
                cancelled: false,
            }),
            (SlotState::Scheduled(mut s), e) => {
                match e {
                    SlotEvent::SlotScheduled { .. } => {}
                    SlotEvent::SlotCapacityChanged { capacity, .. } => s.capacity = *capacity,
                    SlotEvent::SlotRepriced { price_per_seat, .. } => {
                        s.price_per_seat = *price_per_seat
                    }
                    SlotEvent::SeatsHeld {
                        booking_id, seats, ..
                    } => {
                        let hold = Hold {
                            seats: *seats,
                            confirmed: false,
                        };
                        if let Some(earlier) = s.holds.insert(*booking_id, hold) {
                            s.count(earlier, false);
                        }
                        s.count(hold, true);
                    }
                    SlotEvent::SeatsConfirmed { booking_id, .. } => {
                        if let Some(h) = s.holds.get(booking_id).copied()
                            && !h.confirmed
                        {
                            let confirmed = Hold {
                                confirmed: true,
                                ..h
                            };
                            s.holds.insert(*booking_id, confirmed);
                            s.count(h, false);
                            s.count(confirmed, true);
                        }
                    }
                    SlotEvent::SeatsReleased { booking_id, .. } => {
                        if let Some(h) = s.holds.remove(booking_id) {
                            s.count(h, false);
                        }
                    }
                    SlotEvent::SlotCancelled { .. } => s.cancelled = true,
                }
                SlotState::Scheduled(s)
            }
            (state, _) => state,
        }
    }
}
