//! Given/when/then tables and property tests for every aggregate, and the ledger.

mod booking;
mod fixtures;
mod ledger;
mod others;
mod properties;
mod schedule;
mod slot;
