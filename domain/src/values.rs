//! Value types: identifiers, money, seats, and small parsed strings ("parse, don't validate").

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The id `name` derived from `parent`: the same every time, so a retried command derives the
/// same booking, payment and event ids as its first attempt.
///
/// A time-ordered `parent` (UUIDv7) derives a time-ordered id: the parent's millisecond
/// timestamp, then 74 bits of the name-based (v5) hash. The rows a command creates then land
/// at the right edge of the B-tree indexes over those ids, next to each other, instead of on
/// random leaf pages: fewer pages dirtied per write, and fewer full-page images in the WAL
/// after each checkpoint. Any other parent derives the name-based (v5) id, as every id was
/// derived before command ids were time-ordered, so the ids of older commands do not change.
pub fn derived_id(parent: Uuid, name: &[u8]) -> Uuid {
    let hashed = Uuid::new_v5(&parent, name);
    if parent.get_version() != Some(uuid::Version::SortRand) {
        return hashed;
    }
    let mut bytes = *hashed.as_bytes();
    bytes[..6].copy_from_slice(&parent.as_bytes()[..6]);
    uuid::Builder::from_bytes(bytes)
        .with_version(uuid::Version::SortRand)
        .with_variant(uuid::Variant::RFC4122)
        .into_uuid()
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// A user (customer, provider, admin, auditor or analyst).
    UserId
);
id_type!(
    /// A travel package or local experience.
    ListingId
);
id_type!(
    /// A dated occurrence of a listing with its own capacity.
    SlotId
);
id_type!(
    /// A recurring schedule that generates a listing's slots.
    ScheduleId
);
id_type!(
    /// One booking of seats on a slot.
    BookingId
);
id_type!(
    /// One payment of a booking.
    PaymentId
);

/// Errors of the value constructors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("currency must be a three-letter ISO 4217 code in capitals, got {0:?}")]
    Currency(String),
    #[error("amounts in {left} and {right} cannot be combined")]
    CurrencyMismatch { left: Currency, right: Currency },
    #[error("amount overflows")]
    Overflow,
    #[error("amount must not be negative")]
    Negative,
    #[error("seats must be between 1 and {max}, got {got}")]
    Seats { got: u32, max: u32 },
    #[error("a price per seat is at most {max} minor units, got {got}")]
    PriceTooHigh { got: i64, max: i64 },
}

/// An ISO 4217 currency code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    pub const EUR: Currency = Currency(*b"EUR");

    pub fn new(code: &str) -> Result<Self, ValueError> {
        let bytes = code.as_bytes();
        match <[u8; 3]>::try_from(bytes) {
            Ok(c) if c.iter().all(u8::is_ascii_uppercase) => Ok(Currency(c)),
            _ => Err(ValueError::Currency(code.to_owned())),
        }
    }

    pub fn as_str(&self) -> &str {
        // Constructed from ASCII capitals only.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl TryFrom<String> for Currency {
    type Error = ValueError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(&value)
    }
}

impl From<Currency> for String {
    fn from(value: Currency) -> Self {
        value.as_str().to_owned()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Money in integer minor units (cents) of one currency. Never a float, never negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    pub minor: i64,
    pub currency: Currency,
}

impl Money {
    pub fn new(minor: i64, currency: Currency) -> Result<Self, ValueError> {
        if minor < 0 {
            return Err(ValueError::Negative);
        }
        Ok(Self { minor, currency })
    }

    /// The highest price per seat the platform accepts, in minor units (10,000,000.00 in a
    /// two-decimal currency). With at most [`Seats::MAX`] seats a booking's total stays far
    /// from `i64::MAX`, so totals, refunds and commissions never overflow.
    pub const MAX_PRICE_MINOR: i64 = 1_000_000_000;

    /// A price per seat: not negative and at most [`Money::MAX_PRICE_MINOR`].
    pub fn price(minor: i64, currency: Currency) -> Result<Self, ValueError> {
        if minor > Self::MAX_PRICE_MINOR {
            return Err(ValueError::PriceTooHigh {
                got: minor,
                max: Self::MAX_PRICE_MINOR,
            });
        }
        Self::new(minor, currency)
    }

    pub fn zero(currency: Currency) -> Self {
        Self { minor: 0, currency }
    }

    fn same(self, other: Money) -> Result<(), ValueError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(ValueError::CurrencyMismatch {
                left: self.currency,
                right: other.currency,
            })
        }
    }

    pub fn checked_add(self, other: Money) -> Result<Money, ValueError> {
        self.same(other)?;
        let minor = self
            .minor
            .checked_add(other.minor)
            .ok_or(ValueError::Overflow)?;
        Ok(Money { minor, ..self })
    }

    pub fn checked_sub(self, other: Money) -> Result<Money, ValueError> {
        self.same(other)?;
        let minor = self
            .minor
            .checked_sub(other.minor)
            .ok_or(ValueError::Overflow)?;
        Money::new(minor, self.currency)
    }

    pub fn times(self, n: u32) -> Result<Money, ValueError> {
        let minor = self
            .minor
            .checked_mul(i64::from(n))
            .ok_or(ValueError::Overflow)?;
        Ok(Money { minor, ..self })
    }

    /// `percent` % of this amount, rounded down to the minor unit (refunds never round up).
    pub fn percent(self, percent: u8) -> Money {
        let minor = i128::from(self.minor) * i128::from(percent.min(100)) / 100;
        Money {
            minor: minor as i64,
            ..self
        }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:02} {}",
            self.minor / 100,
            self.minor % 100,
            self.currency
        )
    }
}

/// A number of seats in one booking: 1 to [`Seats::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Seats(u32);

impl Seats {
    pub const MAX: u32 = 50;

    pub fn new(n: u32) -> Result<Self, ValueError> {
        if (1..=Self::MAX).contains(&n) {
            Ok(Self(n))
        } else {
            Err(ValueError::Seats {
                got: n,
                max: Self::MAX,
            })
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Seats {
    type Error = ValueError;
    fn try_from(value: u32) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Seats> for u32 {
    fn from(value: Seats) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_keep_a_time_ordered_parents_order() {
        // Older (random) parents derive exactly the name-based id they always did.
        let v4 = Uuid::from_u128(0x0f2c_7a4e_91d3_4b6a_8c55_1e2f_3a4b_5c6d);
        assert_eq!(derived_id(v4, b"booking"), Uuid::new_v5(&v4, b"booking"));

        // A UUIDv7 as `tessera_log::clock::new_command_id` mints it (fixed time and bits here).
        let first =
            uuid::Builder::from_unix_timestamp_millis(1_764_000_000_000, &[7; 10]).into_uuid();
        let later = Uuid::from_u128(first.as_u128() + (1u128 << 80)); // one millisecond on
        assert_eq!(later.get_version(), Some(uuid::Version::SortRand));
        let a = derived_id(first, b"booking");
        // The same parent and name derive the same id, a v7 one with the parent's timestamp.
        assert_eq!(a, derived_id(first, b"booking"));
        assert_eq!(a.get_version(), Some(uuid::Version::SortRand));
        assert_eq!(a.get_variant(), uuid::Variant::RFC4122);
        assert_eq!(a.as_bytes()[..6], first.as_bytes()[..6]);
        // Other names differ; ids derived from a later parent sort after.
        assert_ne!(a, derived_id(first, b"payment"));
        for name in [&b"booking"[..], b"payment", b"booking-1/0", b"slot-2/1"] {
            assert!(derived_id(first, name) < derived_id(later, name));
            assert!(derived_id(first, name) < derived_id(later, b"booking"));
        }
    }

    #[test]
    fn money_refuses_mixed_currencies_and_negatives() {
        let eur = Money::new(1_000, Currency::EUR).expect("money");
        let usd = Money::new(1_000, Currency::new("USD").expect("usd")).expect("money");
        assert!(matches!(
            eur.checked_add(usd),
            Err(ValueError::CurrencyMismatch { .. })
        ));
        assert_eq!(
            eur.checked_sub(eur.times(2).expect("x2")),
            Err(ValueError::Negative)
        );
        assert_eq!(Money::new(-1, Currency::EUR), Err(ValueError::Negative));
        assert_eq!(eur.percent(50).minor, 500);
        assert_eq!(
            Money::new(999, Currency::EUR).expect("m").percent(50).minor,
            499,
            "rounds down"
        );
        assert_eq!(eur.to_string(), "10.00 EUR");
    }

    #[test]
    fn currency_and_seats_parse() {
        assert!(Currency::new("eur").is_err());
        assert!(Currency::new("EURO").is_err());
        assert_eq!(Seats::new(0), Err(ValueError::Seats { got: 0, max: 50 }));
        assert!(Seats::new(51).is_err());
        assert_eq!(Seats::new(3).map(Seats::get), Ok(3));
        let json =
            serde_json::to_string(&Money::new(12_900, Currency::EUR).expect("m")).expect("json");
        assert_eq!(json, r#"{"minor":12900,"currency":"EUR"}"#);
        assert!(serde_json::from_str::<Seats>("0").is_err());
    }
}
