//! Given/when/then tables and property tests for every aggregate.

mod booking;
mod fixtures;
mod others;
mod properties;
mod slot;
