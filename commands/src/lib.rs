//! Write side of Tessera: the command handlers, which decide against the log of
//! `tessera-log` (aggregates loaded, decisions appended with optimistic concurrency), the
//! reactors that turn events into further commands, idempotency keys, user accounts and the
//! Stripe payment gateway.
//!
//! Architecture invariant: this crate depends on `tessera-domain` and `tessera-log` and never on
//! the read side (`tessera-projections`) or the HTTP layer (`tessera-api`).

pub mod admin;
pub mod booking;
pub mod catalog;
pub mod error;
pub mod gateway;
pub mod handler;
pub mod idempotency;
pub mod ledger;
pub mod money;
pub mod onsale;
pub mod payment;
pub mod reactor;
pub mod receipts;
pub mod schedules;
pub mod tickets;
pub mod users;

#[cfg(any(test, feature = "testkit"))]
pub mod fake_stripe;
