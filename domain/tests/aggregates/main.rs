//! Given/when/then tables and property tests for every aggregate.

mod booking;
mod fixtures;
mod properties;
mod slot;
