//! Write side of Tessera: the event store port with its adapters (PostgreSQL, in-memory,
//! KurrentDB), the embedded PostgreSQL cluster, the event codec and the command handlers.
//!
//! Architecture invariant: this crate depends on `tessera-domain` and never on the read side
//! (`tessera-projections`) or the HTTP layer (`tessera-api`).

pub mod admin;
pub mod audit;
pub mod booking;
pub mod catalog;
pub mod clock;
pub mod codec;
pub mod error;
pub mod gateway;
pub mod handler;
pub mod idempotency;
pub mod payment;
pub mod pg;
pub mod pii;
pub mod reactor;
pub mod store;
pub mod users;

#[cfg(any(test, feature = "testkit"))]
pub mod fake_stripe;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
