//! Pure domain model of Tessera: aggregates (users, listings, slots, bookings, payments,
//! loyalty, reviews), their commands and events, and `decide`/`evolve` functions.
//!
//! Architecture invariant: no IO, no async, no clock and no randomness here; time and ids
//! arrive on the commands. (The aggregates land with the domain issue.)
