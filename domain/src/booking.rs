//! Bookings: the state machine at the heart of the platform.
//!
//! ```text
//!   Place ──▶ Held ──StartPayment──▶ PaymentPending ──ConfirmPayment──▶ Confirmed ──Complete──▶ Completed
//!              ▲ │  ◀──FailPayment──       │                               │
//!   Reinstate  │ │ Expire                  │ Expire                        │ Cancel (paid)
//!              │ ▼                         ▼                               ▼
//!            Expired ◀─────────────────────┘                           Cancelled ──RecordRefund──▶ Refunded
//!   Held / PaymentPending ──Cancel (unpaid)──▶ Cancelled
//! ```
//! At the door, each seat's ticket is checked in once (`CheckIn`: Confirmed stays Confirmed).
//! After the slot ends, a booking of a listing that scans tickets with no seat checked in is
//! a no-show (`MarkNoShow`: Confirmed → NoShow) instead of completed.
//! A payment that succeeds after the hold expired confirms the booking if the slot can still
//! take its seats (`AcceptLatePayment`: Expired → Confirmed); otherwise the payment is refunded.
//! A confirmed booking moves to another slot of its listing (`Reschedule`: Confirmed stays
//! Confirmed) while its policy still refunds something; a cheaper slot refunds the difference.
//! The handler releases the old slot's seats and holds and confirms the new slot's in the same
//! append. A dearer slot is a *pending move* (`BookingMoveRequested`): the new slot's seats are
//! held and a second payment (a top-up) is started for the difference; its success completes
//! the move (`CompleteMove` → `BookingRescheduled` naming the top-up), its failure, the move's
//! expiry or a cancellation abandons it (`BookingMoveAbandoned`). See ADR 0020.
//! Every other transition is a typed [`BookingError::InvalidTransition`]. The cancellation policy
//! is snapshotted when the booking is placed.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::aggregate::Aggregate;
use crate::policy::CancellationPolicy;
use crate::values::{BookingId, ListingId, Money, PaymentId, Seats, SlotId, UserId, ValueError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BookingStatus {
    Held,
    PaymentPending,
    Confirmed,
    Completed,
    /// The slot ended and none of the booking's tickets was checked in (listings that scan).
    NoShow,
    Expired,
    Cancelled,
    Refunded,
}

/// Who cancels, which decides the refund.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "role", content = "user_id", rename_all = "snake_case")]
pub enum Canceller {
    /// The customer: the snapshotted policy applies.
    Customer(UserId),
    /// The provider: always a full refund.
    Provider(UserId),
    /// An admin: the policy applies unless the fee is waived.
    Admin(UserId),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Booking {
    pub id: BookingId,
    pub customer_id: UserId,
    pub listing_id: ListingId,
    pub slot_id: SlotId,
    /// The slot's provider (unknown on bookings placed before v2 of `BookingPlaced`).
    pub provider_id: Option<UserId>,
    /// The platform's commission in basis points, snapshotted when placed.
    pub commission_bp: u32,
    /// The listing's tax rate (included in the price), snapshotted when placed.
    pub tax_rate_bp: u32,
    pub seats: u32,
    pub total: Money,
    pub policy: CancellationPolicy,
    pub slot_starts_at: DateTime<Utc>,
    pub slot_ends_at: DateTime<Utc>,
    pub hold_expires_at: DateTime<Utc>,
    pub status: BookingStatus,
    pub payment_id: Option<PaymentId>,
    pub paid: Money,
    /// Everything the customer is owed back: the differences of moves to cheaper slots, plus
    /// a cancellation's refund once cancelled.
    pub refund_due: Money,
    pub refunded: Money,
    /// Seats (1-based) whose ticket was checked in, with when and by whom.
    #[serde(default)]
    pub checked_in: std::collections::BTreeMap<u32, CheckedIn>,
    /// Succeeded payments beyond the first: the differences of moves to dearer slots. `paid`
    /// counts them too.
    #[serde(default)]
    pub top_ups: Vec<TopUp>,
    /// A move to a dearer slot waiting for its top-up.
    #[serde(default)]
    pub pending_move: Option<PendingMove>,
}

impl Booking {
    /// Every succeeded payment of the booking, oldest first: the first payment, then the
    /// top-ups of moves to dearer slots.
    pub fn payments(&self) -> Vec<PaymentId> {
        let first = self.payment_id.filter(|_| self.paid.minor > 0);
        first
            .into_iter()
            .chain(self.top_ups.iter().map(|t| t.payment_id))
            .collect()
    }
}

/// A payment that paid the difference of a move to a dearer slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopUp {
    pub payment_id: PaymentId,
    pub amount: Money,
}

/// A move to a dearer slot, waiting for its top-up payment. The new slot holds the seats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingMove {
    pub payment_id: PaymentId,
    pub to_slot: SlotId,
    pub slot_starts_at: DateTime<Utc>,
    pub slot_ends_at: DateTime<Utc>,
    /// The booking's price on the new slot.
    pub total: Money,
    /// What the top-up charges: `total` less the booking's current price.
    pub charge: Money,
    pub expires_at: DateTime<Utc>,
}

/// Why a pending move ended without moving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MoveAbandoned {
    /// The top-up payment failed.
    PaymentFailed,
    /// Nobody paid before the move expired.
    Expired,
    /// The new slot was cancelled.
    SlotCancelled,
    /// The customer withdrew it.
    Withdrawn,
}

/// When and by whom a ticket was checked in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckedIn {
    pub at: DateTime<Utc>,
    pub by: UserId,
}

/// Check-in opens this long before the slot starts (and closes when it ends).
pub const CHECK_IN_OPENS_BEFORE: TimeDelta = TimeDelta::hours(24);

impl Booking {
    /// Hours from `now` to the start of the slot (negative once it started), rounded down.
    pub fn hours_before_start(&self, now: DateTime<Utc>) -> i64 {
        (self.slot_starts_at - now).num_hours()
    }

    /// What a cancellation by `by` at `now` would refund, without cancelling.
    pub fn cancellation_quote(
        &self,
        by: Canceller,
        now: DateTime<Utc>,
        waive_fee: bool,
    ) -> Result<Money, BookingError> {
        match self.status {
            BookingStatus::Held | BookingStatus::PaymentPending => {
                Ok(Money::zero(self.total.currency))
            }
            BookingStatus::Confirmed => {
                // What the booking is worth now: a move to a cheaper slot already owes back
                // the difference.
                let paid = Money {
                    minor: self.paid.minor - self.refund_due.minor,
                    ..self.paid
                };
                Ok(match by {
                    Canceller::Provider(_) => paid,
                    Canceller::Admin(_) if waive_fee => paid,
                    Canceller::Customer(_) | Canceller::Admin(_) => {
                        self.policy.refund_for(paid, self.hours_before_start(now))
                    }
                })
            }
            from => Err(BookingError::InvalidTransition {
                from,
                action: "cancel",
            }),
        }
    }
}

/// One value per aggregate instance, so the size gap between variants costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub enum BookingState {
    #[default]
    New,
    Placed(Booking),
}

impl BookingState {
    pub fn booking(&self) -> Option<&Booking> {
        match self {
            Self::New => None,
            Self::Placed(b) => Some(b),
        }
    }
}

#[derive(Debug, Clone)]
pub enum BookingCommand {
    Place {
        id: BookingId,
        customer_id: UserId,
        listing_id: ListingId,
        slot_id: SlotId,
        provider_id: UserId,
        commission_bp: u32,
        tax_rate_bp: u32,
        seats: Seats,
        price_per_seat: Money,
        policy: CancellationPolicy,
        slot_starts_at: DateTime<Utc>,
        slot_ends_at: DateTime<Utc>,
        now: DateTime<Utc>,
        hold_ttl: TimeDelta,
    },
    StartPayment {
        payment_id: PaymentId,
        now: DateTime<Utc>,
    },
    FailPayment {
        payment_id: PaymentId,
    },
    ConfirmPayment {
        payment_id: PaymentId,
        amount: Money,
    },
    Expire {
        now: DateTime<Utc>,
    },
    Cancel {
        by: Canceller,
        now: DateTime<Utc>,
        reason: Option<String>,
        waive_fee: bool,
    },
    Complete {
        now: DateTime<Utc>,
    },
    /// A payment succeeded after the hold expired and the slot still has the seats: the booking
    /// is confirmed after all (the handler re-holds the seats in the same append).
    AcceptLatePayment {
        payment_id: PaymentId,
        amount: Money,
    },
    /// A refund of `amount` succeeded at the payment provider.
    RecordRefund {
        amount: Money,
    },
    /// An admin brings an expired booking back to `Held` (the slot decides about capacity).
    Reinstate {
        now: DateTime<Utc>,
        hold_ttl: TimeDelta,
        allow_overbook: bool,
    },
    /// The ticket of `seat`, scanned at the door of `slot_id` by `by`.
    CheckIn {
        seat: u32,
        slot_id: SlotId,
        by: UserId,
        now: DateTime<Utc>,
    },
    /// The slot ended and no ticket was checked in (listings that scan tickets).
    MarkNoShow {
        now: DateTime<Utc>,
    },
    /// Move a confirmed booking to `to_slot` (of the same listing; the handler checks that and
    /// the new slot's seats), whose seats cost `price_per_seat`. A dearer slot needs `top_up`,
    /// the payment that will charge the difference: the move then waits for it (at most
    /// `move_ttl`, and never past the time the booking could be moved).
    Reschedule {
        to_slot: SlotId,
        /// The new slot's listing, which must be the booking's.
        to_listing: ListingId,
        slot_starts_at: DateTime<Utc>,
        slot_ends_at: DateTime<Utc>,
        price_per_seat: Money,
        now: DateTime<Utc>,
        top_up: Option<PaymentId>,
        move_ttl: TimeDelta,
    },
    /// The top-up of the pending move succeeded with `amount`: the move happens.
    CompleteMove {
        payment_id: PaymentId,
        amount: Money,
        now: DateTime<Utc>,
    },
    /// The pending move ends without moving (its payment failed, or it expired).
    AbandonMove {
        payment_id: PaymentId,
        why: MoveAbandoned,
        now: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum BookingEvent {
    BookingPlaced {
        booking_id: BookingId,
        customer_id: UserId,
        listing_id: ListingId,
        slot_id: SlotId,
        /// v2: the slot's provider and the commission snapshotted for it.
        provider_id: Option<UserId>,
        commission_bp: u32,
        /// v3: the listing's tax rate, included in the price (the receipt states it).
        tax_rate_bp: u32,
        seats: u32,
        total: Money,
        policy: CancellationPolicy,
        slot_starts_at: DateTime<Utc>,
        slot_ends_at: DateTime<Utc>,
        hold_expires_at: DateTime<Utc>,
    },
    BookingPaymentStarted {
        booking_id: BookingId,
        payment_id: PaymentId,
    },
    BookingPaymentFailed {
        booking_id: BookingId,
        payment_id: PaymentId,
    },
    BookingConfirmed {
        booking_id: BookingId,
        payment_id: PaymentId,
        amount_paid: Money,
    },
    BookingExpired {
        booking_id: BookingId,
    },
    BookingCancelled {
        booking_id: BookingId,
        by: Canceller,
        reason: Option<String>,
        hours_before_start: i64,
        refund_due: Money,
    },
    BookingCompleted {
        booking_id: BookingId,
    },
    LatePaymentAccepted {
        booking_id: BookingId,
        payment_id: PaymentId,
        amount_paid: Money,
    },
    BookingRefunded {
        booking_id: BookingId,
        amount: Money,
        total_refunded: Money,
    },
    BookingReinstated {
        booking_id: BookingId,
        hold_expires_at: DateTime<Utc>,
        allow_overbook: bool,
    },
    TicketCheckedIn {
        booking_id: BookingId,
        seat: u32,
        by: UserId,
        at: DateTime<Utc>,
    },
    BookingNoShow {
        booking_id: BookingId,
    },
    /// The booking moved from `from_slot` to `to_slot`; `total` is its new price and `refund`
    /// the difference owed back (zero when both cost the same).
    BookingRescheduled {
        booking_id: BookingId,
        from_slot: SlotId,
        to_slot: SlotId,
        slot_starts_at: DateTime<Utc>,
        slot_ends_at: DateTime<Utc>,
        total: Money,
        refund: Money,
        hours_before_start: i64,
        /// v2: the top-up that paid the difference of a move to a dearer slot.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        top_up: Option<TopUp>,
    },
    /// A move to a dearer slot waits for `payment_id` to charge `charge`; the new slot holds
    /// the seats until `expires_at`.
    BookingMoveRequested {
        booking_id: BookingId,
        payment_id: PaymentId,
        from_slot: SlotId,
        to_slot: SlotId,
        slot_starts_at: DateTime<Utc>,
        slot_ends_at: DateTime<Utc>,
        total: Money,
        charge: Money,
        expires_at: DateTime<Utc>,
    },
    /// The pending move ended without moving; the new slot's seats were released with it.
    BookingMoveAbandoned {
        booking_id: BookingId,
        payment_id: PaymentId,
        to_slot: SlotId,
        why: MoveAbandoned,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BookingError {
    #[error("the booking already exists")]
    AlreadyPlaced,
    #[error("the booking does not exist")]
    NotPlaced,
    #[error("a {from:?} booking cannot {action}")]
    InvalidTransition {
        from: BookingStatus,
        action: &'static str,
    },
    #[error("the hold expired at {0}")]
    HoldExpired(DateTime<Utc>),
    #[error("the hold only expires at {0}")]
    HoldNotExpired(DateTime<Utc>),
    #[error("the slot only ends at {0}")]
    SlotNotEnded(DateTime<Utc>),
    #[error("the slot has already started")]
    SlotStarted,
    #[error("the hold time must be positive")]
    InvalidHoldTtl,
    #[error("payment {got} is not this booking's payment")]
    WrongPayment { got: PaymentId },
    #[error("paid {got}, expected {expected}")]
    AmountMismatch { expected: Money, got: Money },
    #[error(
        "refunding {requested} would exceed what was paid ({paid}, {refunded} already refunded)"
    )]
    RefundExceedsPaid {
        paid: Money,
        refunded: Money,
        requested: Money,
    },
    #[error("refund amount must be positive")]
    EmptyRefund,
    #[error("seat {seat} was checked in at {at} by {by}")]
    AlreadyCheckedIn {
        seat: u32,
        at: DateTime<Utc>,
        by: UserId,
    },
    #[error("the ticket is for slot {ticket}, not this one")]
    WrongSlot { ticket: SlotId },
    #[error("the booking has no seat {0}")]
    NoSuchSeat(u32),
    #[error("check-in opens at {0}")]
    CheckInNotOpen(DateTime<Utc>),
    #[error("the slot ended at {0}")]
    SlotEnded(DateTime<Utc>),
    #[error("a ticket was checked in: the booking is not a no-show")]
    Attended,
    #[error("the booking is already on this slot")]
    SameSlot,
    #[error("a booking moves only to another slot of its own listing")]
    OtherListing,
    #[error("the booking's policy refunds nothing, so it cannot be moved")]
    NotMovable,
    #[error("the booking could be moved until {0}, when its policy stopped refunding")]
    RescheduleClosed(DateTime<Utc>),
    #[error("the new slot costs {difference} more and this move cannot charge it")]
    RescheduleCostsMore { difference: Money },
    #[error("a move to slot {to_slot} waits for its payment until {expires_at}")]
    MovePending {
        to_slot: SlotId,
        expires_at: DateTime<Utc>,
    },
    #[error("no move of the booking waits for this payment")]
    NoPendingMove,
    #[error("the pending move only expires at {0}")]
    MoveNotExpired(DateTime<Utc>),
    #[error(transparent)]
    Value(#[from] ValueError),
}

fn invalid(from: BookingStatus, action: &'static str) -> BookingError {
    BookingError::InvalidTransition { from, action }
}

/// The booking aggregate.
#[derive(Debug)]
pub struct BookingAggregate;

impl Aggregate for BookingAggregate {
    type State = BookingState;
    type Command = BookingCommand;
    type Event = BookingEvent;
    type Error = BookingError;
    const CATEGORY: &'static str = "booking";

    fn decide(
        state: &BookingState,
        command: &BookingCommand,
    ) -> Result<Vec<BookingEvent>, BookingError> {
        use BookingStatus as S;
        let b = match (state, command) {
            (
                BookingState::New,
                BookingCommand::Place {
                    id,
                    customer_id,
                    listing_id,
                    slot_id,
                    provider_id,
                    commission_bp,
                    tax_rate_bp,
                    seats,
                    price_per_seat,
                    policy,
                    slot_starts_at,
                    slot_ends_at,
                    now,
                    hold_ttl,
                },
            ) => {
                if now >= slot_starts_at {
                    return Err(BookingError::SlotStarted);
                }
                if *hold_ttl <= TimeDelta::zero() {
                    return Err(BookingError::InvalidHoldTtl);
                }
                // The hold never outlives the start of the slot.
                let hold_expires_at = (*now + *hold_ttl).min(*slot_starts_at);
                return Ok(vec![BookingEvent::BookingPlaced {
                    booking_id: *id,
                    customer_id: *customer_id,
                    listing_id: *listing_id,
                    slot_id: *slot_id,
                    provider_id: Some(*provider_id),
                    commission_bp: *commission_bp,
                    tax_rate_bp: *tax_rate_bp,
                    seats: seats.get(),
                    total: price_per_seat.times(seats.get())?,
                    policy: policy.clone(),
                    slot_starts_at: *slot_starts_at,
                    slot_ends_at: *slot_ends_at,
                    hold_expires_at,
                }]);
            }
            (BookingState::Placed(_), BookingCommand::Place { .. }) => {
                return Err(BookingError::AlreadyPlaced);
            }
            (BookingState::New, _) => return Err(BookingError::NotPlaced),
            (BookingState::Placed(b), _) => b,
        };
        let booking_id = b.id;
        let event = match command {
            BookingCommand::Place { .. } => return Err(BookingError::AlreadyPlaced),
            BookingCommand::StartPayment { payment_id, now } => {
                if b.status != S::Held {
                    return Err(invalid(b.status, "start a payment"));
                }
                if *now >= b.hold_expires_at {
                    return Err(BookingError::HoldExpired(b.hold_expires_at));
                }
                BookingEvent::BookingPaymentStarted {
                    booking_id,
                    payment_id: *payment_id,
                }
            }
            BookingCommand::FailPayment { payment_id } => {
                if b.status != S::PaymentPending {
                    return Err(invalid(b.status, "fail a payment"));
                }
                if b.payment_id != Some(*payment_id) {
                    return Err(BookingError::WrongPayment { got: *payment_id });
                }
                BookingEvent::BookingPaymentFailed {
                    booking_id,
                    payment_id: *payment_id,
                }
            }
            BookingCommand::ConfirmPayment { payment_id, amount } => {
                if b.status != S::PaymentPending {
                    return Err(invalid(b.status, "confirm a payment"));
                }
                if b.payment_id != Some(*payment_id) {
                    return Err(BookingError::WrongPayment { got: *payment_id });
                }
                if *amount != b.total {
                    return Err(BookingError::AmountMismatch {
                        expected: b.total,
                        got: *amount,
                    });
                }
                BookingEvent::BookingConfirmed {
                    booking_id,
                    payment_id: *payment_id,
                    amount_paid: *amount,
                }
            }
            BookingCommand::Expire { now } => {
                if !matches!(b.status, S::Held | S::PaymentPending) {
                    return Err(invalid(b.status, "expire"));
                }
                if *now < b.hold_expires_at {
                    return Err(BookingError::HoldNotExpired(b.hold_expires_at));
                }
                BookingEvent::BookingExpired { booking_id }
            }
            BookingCommand::Cancel {
                by,
                now,
                reason,
                waive_fee,
            } => {
                let refund_due = b.cancellation_quote(*by, *now, *waive_fee)?;
                BookingEvent::BookingCancelled {
                    booking_id,
                    by: *by,
                    reason: reason.clone(),
                    hours_before_start: b.hours_before_start(*now),
                    refund_due,
                }
            }
            BookingCommand::Complete { now } => {
                if b.status != S::Confirmed {
                    return Err(invalid(b.status, "complete"));
                }
                if *now < b.slot_ends_at {
                    return Err(BookingError::SlotNotEnded(b.slot_ends_at));
                }
                BookingEvent::BookingCompleted { booking_id }
            }
            BookingCommand::AcceptLatePayment { payment_id, amount } => {
                if b.status != S::Expired {
                    return Err(invalid(b.status, "accept a late payment"));
                }
                if b.payment_id != Some(*payment_id) {
                    return Err(BookingError::WrongPayment { got: *payment_id });
                }
                if *amount != b.total {
                    return Err(BookingError::AmountMismatch {
                        expected: b.total,
                        got: *amount,
                    });
                }
                BookingEvent::LatePaymentAccepted {
                    booking_id,
                    payment_id: *payment_id,
                    amount_paid: *amount,
                }
            }
            BookingCommand::RecordRefund { amount } => {
                if !matches!(
                    b.status,
                    S::Confirmed | S::Completed | S::NoShow | S::Cancelled | S::Refunded
                ) || b.paid.minor == 0
                {
                    return Err(invalid(b.status, "be refunded"));
                }
                if amount.minor == 0 {
                    return Err(BookingError::EmptyRefund);
                }
                let total_refunded = b.refunded.checked_add(*amount)?;
                if total_refunded.minor > b.paid.minor {
                    return Err(BookingError::RefundExceedsPaid {
                        paid: b.paid,
                        refunded: b.refunded,
                        requested: *amount,
                    });
                }
                BookingEvent::BookingRefunded {
                    booking_id,
                    amount: *amount,
                    total_refunded,
                }
            }
            BookingCommand::Reinstate {
                now,
                hold_ttl,
                allow_overbook,
            } => {
                if b.status != S::Expired {
                    return Err(invalid(b.status, "be reinstated"));
                }
                if *now >= b.slot_starts_at {
                    return Err(BookingError::SlotStarted);
                }
                if *hold_ttl <= TimeDelta::zero() {
                    return Err(BookingError::InvalidHoldTtl);
                }
                BookingEvent::BookingReinstated {
                    booking_id,
                    hold_expires_at: (*now + *hold_ttl).min(b.slot_starts_at),
                    allow_overbook: *allow_overbook,
                }
            }
            BookingCommand::CheckIn {
                seat,
                slot_id,
                by,
                now,
            } => {
                if *slot_id != b.slot_id {
                    return Err(BookingError::WrongSlot { ticket: b.slot_id });
                }
                if !(1..=b.seats).contains(seat) {
                    return Err(BookingError::NoSuchSeat(*seat));
                }
                if let Some(c) = b.checked_in.get(seat) {
                    return Err(BookingError::AlreadyCheckedIn {
                        seat: *seat,
                        at: c.at,
                        by: c.by,
                    });
                }
                if b.status != S::Confirmed {
                    return Err(invalid(b.status, "check in"));
                }
                if *now < b.slot_starts_at - CHECK_IN_OPENS_BEFORE {
                    return Err(BookingError::CheckInNotOpen(
                        b.slot_starts_at - CHECK_IN_OPENS_BEFORE,
                    ));
                }
                if *now >= b.slot_ends_at {
                    return Err(BookingError::SlotEnded(b.slot_ends_at));
                }
                BookingEvent::TicketCheckedIn {
                    booking_id,
                    seat: *seat,
                    by: *by,
                    at: *now,
                }
            }
            BookingCommand::MarkNoShow { now } => {
                if b.status != S::Confirmed {
                    return Err(invalid(b.status, "be a no-show"));
                }
                if *now < b.slot_ends_at {
                    return Err(BookingError::SlotNotEnded(b.slot_ends_at));
                }
                if !b.checked_in.is_empty() {
                    return Err(BookingError::Attended);
                }
                BookingEvent::BookingNoShow { booking_id }
            }
            BookingCommand::Reschedule {
                to_slot,
                to_listing,
                slot_starts_at,
                slot_ends_at,
                price_per_seat,
                now,
                top_up,
                move_ttl,
            } => {
                if b.status != S::Confirmed {
                    return Err(invalid(b.status, "be rescheduled"));
                }
                if let Some(m) = &b.pending_move {
                    return Err(BookingError::MovePending {
                        to_slot: m.to_slot,
                        expires_at: m.expires_at,
                    });
                }
                if *to_slot == b.slot_id {
                    return Err(BookingError::SameSlot);
                }
                if *to_listing != b.listing_id {
                    return Err(BookingError::OtherListing);
                }
                if *now >= b.slot_starts_at || *now >= *slot_starts_at {
                    return Err(BookingError::SlotStarted);
                }
                if !b.checked_in.is_empty() {
                    return Err(BookingError::Attended);
                }
                // Movable while a cancellation would still refund something.
                let notice = b
                    .policy
                    .last_refundable_notice()
                    .ok_or(BookingError::NotMovable)?;
                let closes_at = b.slot_starts_at - TimeDelta::hours(i64::from(notice));
                if *now >= closes_at {
                    return Err(BookingError::RescheduleClosed(closes_at));
                }
                let total = price_per_seat.times(b.seats)?;
                if total.currency != b.total.currency {
                    return Err(ValueError::CurrencyMismatch {
                        left: b.total.currency,
                        right: total.currency,
                    }
                    .into());
                }
                if total.minor > b.total.minor {
                    let charge = Money {
                        minor: total.minor - b.total.minor,
                        ..total
                    };
                    let Some(payment_id) = top_up else {
                        return Err(BookingError::RescheduleCostsMore { difference: charge });
                    };
                    if *move_ttl <= TimeDelta::zero() {
                        return Err(BookingError::InvalidHoldTtl);
                    }
                    // The move waits no longer than the booking could be moved.
                    let expires_at = (*now + *move_ttl).min(closes_at).min(*slot_starts_at);
                    return Ok(vec![BookingEvent::BookingMoveRequested {
                        booking_id,
                        payment_id: *payment_id,
                        from_slot: b.slot_id,
                        to_slot: *to_slot,
                        slot_starts_at: *slot_starts_at,
                        slot_ends_at: *slot_ends_at,
                        total,
                        charge,
                        expires_at,
                    }]);
                }
                BookingEvent::BookingRescheduled {
                    booking_id,
                    from_slot: b.slot_id,
                    to_slot: *to_slot,
                    slot_starts_at: *slot_starts_at,
                    slot_ends_at: *slot_ends_at,
                    total,
                    refund: Money {
                        minor: b.total.minor - total.minor,
                        ..total
                    },
                    hours_before_start: b.hours_before_start(*now),
                    top_up: None,
                }
            }
            BookingCommand::CompleteMove {
                payment_id,
                amount,
                now,
            } => {
                let m = match &b.pending_move {
                    Some(m) if m.payment_id == *payment_id => m,
                    _ => return Err(BookingError::NoPendingMove),
                };
                if b.status != S::Confirmed {
                    return Err(invalid(b.status, "be rescheduled"));
                }
                if *amount != m.charge {
                    return Err(BookingError::AmountMismatch {
                        expected: m.charge,
                        got: *amount,
                    });
                }
                if *now >= b.slot_starts_at || *now >= m.slot_starts_at {
                    return Err(BookingError::SlotStarted);
                }
                BookingEvent::BookingRescheduled {
                    booking_id,
                    from_slot: b.slot_id,
                    to_slot: m.to_slot,
                    slot_starts_at: m.slot_starts_at,
                    slot_ends_at: m.slot_ends_at,
                    total: m.total,
                    refund: Money::zero(m.total.currency),
                    hours_before_start: b.hours_before_start(*now),
                    top_up: Some(TopUp {
                        payment_id: *payment_id,
                        amount: *amount,
                    }),
                }
            }
            BookingCommand::AbandonMove {
                payment_id,
                why,
                now,
            } => {
                let m = match &b.pending_move {
                    Some(m) if m.payment_id == *payment_id => m,
                    _ => return Err(BookingError::NoPendingMove),
                };
                if *why == MoveAbandoned::Expired && *now < m.expires_at {
                    return Err(BookingError::MoveNotExpired(m.expires_at));
                }
                BookingEvent::BookingMoveAbandoned {
                    booking_id,
                    payment_id: *payment_id,
                    to_slot: m.to_slot,
                    why: *why,
                }
            }
        };
        Ok(vec![event])
    }

    fn evolve(state: BookingState, event: &BookingEvent) -> BookingState {
        use BookingStatus as S;
        match (state, event) {
            (
                BookingState::New,
                BookingEvent::BookingPlaced {
                    booking_id,
                    customer_id,
                    listing_id,
                    slot_id,
                    provider_id,
                    commission_bp,
                    tax_rate_bp,
                    seats,
                    total,
                    policy,
                    slot_starts_at,
                    slot_ends_at,
                    hold_expires_at,
                },
            ) => BookingState::Placed(Booking {
                id: *booking_id,
                customer_id: *customer_id,
                listing_id: *listing_id,
                slot_id: *slot_id,
                provider_id: *provider_id,
                commission_bp: *commission_bp,
                tax_rate_bp: *tax_rate_bp,
                seats: *seats,
                total: *total,
                policy: policy.clone(),
                slot_starts_at: *slot_starts_at,
                slot_ends_at: *slot_ends_at,
                hold_expires_at: *hold_expires_at,
                status: S::Held,
                payment_id: None,
                paid: Money::zero(total.currency),
                refund_due: Money::zero(total.currency),
                refunded: Money::zero(total.currency),
                checked_in: Default::default(),
                top_ups: Vec::new(),
                pending_move: None,
            }),
            (BookingState::Placed(mut b), e) => {
                match e {
                    BookingEvent::BookingPlaced { .. } => {}
                    BookingEvent::BookingPaymentStarted { payment_id, .. } => {
                        b.status = S::PaymentPending;
                        b.payment_id = Some(*payment_id);
                    }
                    BookingEvent::BookingPaymentFailed { .. } => b.status = S::Held,
                    BookingEvent::BookingConfirmed { amount_paid, .. } => {
                        b.status = S::Confirmed;
                        b.paid = *amount_paid;
                    }
                    BookingEvent::BookingExpired { .. } => b.status = S::Expired,
                    BookingEvent::BookingCancelled { refund_due, .. } => {
                        b.status = S::Cancelled;
                        b.refund_due.minor += refund_due.minor;
                        // The handler released the pending move's seats in the same append.
                        b.pending_move = None;
                    }
                    BookingEvent::BookingCompleted { .. } => b.status = S::Completed,
                    BookingEvent::LatePaymentAccepted { amount_paid, .. } => {
                        b.status = S::Confirmed;
                        b.paid = *amount_paid;
                    }
                    BookingEvent::BookingRefunded { total_refunded, .. } => {
                        b.refunded = *total_refunded;
                        match b.status {
                            S::Cancelled if b.refunded.minor >= b.refund_due.minor => {
                                b.status = S::Refunded;
                            }
                            S::Cancelled | S::Refunded => {}
                            // Before any cancellation, a refund beyond what moves owed is an
                            // admin's goodwill: owed back and paid back, so a later
                            // cancellation refunds from what is left.
                            _ => b.refund_due.minor = b.refund_due.minor.max(b.refunded.minor),
                        }
                    }
                    BookingEvent::BookingReinstated {
                        hold_expires_at, ..
                    } => {
                        b.status = S::Held;
                        b.hold_expires_at = *hold_expires_at;
                        b.payment_id = None;
                    }
                    BookingEvent::TicketCheckedIn { seat, by, at, .. } => {
                        b.checked_in.insert(*seat, CheckedIn { at: *at, by: *by });
                    }
                    BookingEvent::BookingNoShow { .. } => b.status = S::NoShow,
                    BookingEvent::BookingRescheduled {
                        to_slot,
                        slot_starts_at,
                        slot_ends_at,
                        total,
                        refund,
                        top_up,
                        ..
                    } => {
                        b.slot_id = *to_slot;
                        b.slot_starts_at = *slot_starts_at;
                        b.slot_ends_at = *slot_ends_at;
                        b.total = *total;
                        b.refund_due.minor += refund.minor;
                        if let Some(t) = top_up {
                            b.paid.minor += t.amount.minor;
                            b.top_ups.push(*t);
                        }
                        b.pending_move = None;
                    }
                    BookingEvent::BookingMoveRequested {
                        payment_id,
                        to_slot,
                        slot_starts_at,
                        slot_ends_at,
                        total,
                        charge,
                        expires_at,
                        ..
                    } => {
                        b.pending_move = Some(PendingMove {
                            payment_id: *payment_id,
                            to_slot: *to_slot,
                            slot_starts_at: *slot_starts_at,
                            slot_ends_at: *slot_ends_at,
                            total: *total,
                            charge: *charge,
                            expires_at: *expires_at,
                        });
                    }
                    BookingEvent::BookingMoveAbandoned { .. } => b.pending_move = None,
                }
                BookingState::Placed(b)
            }
            (state, _) => state,
        }
    }
}
