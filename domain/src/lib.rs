//! Pure domain model of Tessera: aggregates, their commands and events, and `decide`/`evolve`.
//!
//! Architecture invariant: no IO, no async, no clock and no randomness here; time and ids
//! arrive on the commands, so replaying history is deterministic.

pub mod aggregate;
pub mod booking;
pub mod ledger;
pub mod listing;
pub mod loyalty;
pub mod payment;
pub mod policy;
pub mod provider;
pub mod receipt;
pub mod review;
pub mod schedule;
pub mod slot;
pub mod user;
pub mod values;

pub use aggregate::Aggregate;
