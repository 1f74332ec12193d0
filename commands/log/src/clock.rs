//! The clock port: where "now" comes from. Reactors fire deadlines by it and the event store
//! stamps `recorded_at` with it (which the hash chain covers), so a test or a fixture generator
//! with a [`ManualClock`] produces the same log byte for byte, every run. Fresh command ids are
//! minted here too ([`new_command_id`]): they carry the time they were minted.

use std::fmt;
use std::sync::Mutex;

use chrono::{DateTime, TimeDelta, Utc};

/// A new id for a command (or anything else minted now): time-ordered (UUIDv7), so that the
/// ids derived from it with `tessera_domain::values::derived_id` are time-ordered too. The
/// domain mints nothing: ids and times arrive on its commands.
pub fn new_command_id() -> uuid::Uuid {
    uuid::Uuid::now_v7()
}

/// Where "now" comes from.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to (tests, simulations).
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> Self {
        Self(Mutex::new(at))
    }

    pub fn advance(&self, by: TimeDelta) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) += by;
    }

    pub fn set(&self, at: DateTime<Utc>) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = at;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
