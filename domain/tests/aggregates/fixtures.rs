//! Shared values for the aggregate tests.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use tessera_domain::booking::{BookingCommand, BookingEvent};
use tessera_domain::policy::CancellationPolicy;
use tessera_domain::values::{
    BookingId, Currency, ListingId, Money, PaymentId, Seats, SlotId, UserId,
};
use uuid::Uuid;

pub fn t(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, day, hour, 0, 0)
        .single()
        .expect("valid time")
}

pub fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::EUR).expect("money")
}

pub const BOOKING: BookingId = BookingId(Uuid::from_u128(1));
pub const CUSTOMER: UserId = UserId(Uuid::from_u128(2));
pub const PROVIDER: UserId = UserId(Uuid::from_u128(3));
pub const ADMIN: UserId = UserId(Uuid::from_u128(4));
pub const LISTING: ListingId = ListingId(Uuid::from_u128(5));
pub const SLOT: SlotId = SlotId(Uuid::from_u128(6));
pub const PAYMENT: PaymentId = PaymentId(Uuid::from_u128(7));

/// Slot from 20 Dec 10:00 to 20 Dec 14:00; booking placed 1 Dec 09:00 with a 15-minute hold.
pub fn place() -> BookingCommand {
    BookingCommand::Place {
        id: BOOKING,
        customer_id: CUSTOMER,
        listing_id: LISTING,
        slot_id: SLOT,
        provider_id: PROVIDER,
        commission_bp: 1500,
        tax_rate_bp: 1000,
        seats: Seats::new(2).expect("seats"),
        price_per_seat: eur(5_000),
        policy: CancellationPolicy::standard(),
        slot_starts_at: t(20, 10),
        slot_ends_at: t(20, 14),
        now: t(1, 9),
        hold_ttl: TimeDelta::minutes(15),
    }
}

pub fn placed() -> BookingEvent {
    BookingEvent::BookingPlaced {
        booking_id: BOOKING,
        customer_id: CUSTOMER,
        listing_id: LISTING,
        slot_id: SLOT,
        provider_id: Some(PROVIDER),
        commission_bp: 1500,
        tax_rate_bp: 1000,
        seats: 2,
        total: eur(10_000),
        policy: CancellationPolicy::standard(),
        slot_starts_at: t(20, 10),
        slot_ends_at: t(20, 14),
        hold_expires_at: t(1, 9) + TimeDelta::minutes(15),
    }
}

pub fn payment_started() -> BookingEvent {
    BookingEvent::BookingPaymentStarted {
        booking_id: BOOKING,
        payment_id: PAYMENT,
    }
}

pub fn confirmed() -> BookingEvent {
    BookingEvent::BookingConfirmed {
        booking_id: BOOKING,
        payment_id: PAYMENT,
        amount_paid: eur(10_000),
    }
}
