//! The event log of Tessera, the source of truth that both sides of the platform share: the
//! [`store::EventStore`] port with its adapters (PostgreSQL, in-memory, KurrentDB), the append
//! planner and per-stream hash chain, subscriptions, the event [`codec`], the [`clock`], the
//! personal-data decorator [`pii::PiiStore`], the [`audit`] tooling that proves the log unaltered
//! and replays it, and the PostgreSQL plumbing ([`pg`]: migrations, pools, the embedded cluster).
//!
//! Architecture invariant: this crate depends on `tessera-domain` only; the write side
//! (`tessera-commands`) and the read side (`tessera-projections`) both depend on it, never the
//! other way round (ADR 0013).

pub mod audit;
pub mod clock;
pub mod codec;
pub mod pg;
pub mod pii;
pub mod store;

#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
