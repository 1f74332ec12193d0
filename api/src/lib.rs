//! Composition root of Tessera: the one typed configuration (`settings`), the startup module
//! that builds the platform from it (`startup`), the `tessera` command line (`cli`), the HTTP
//! API (`http`) and, with the cargo feature `bench`, the benchmarks (`bench`).
//!
//! Architecture invariant: this is the only crate that wires adapters together, and
//! `settings.rs` is the only file that reads configuration from the environment. Inside the
//! crate, arrows point one way: `cli` → `bench` → `startup` → `http` (tidy tests).

#[cfg(feature = "bench")]
pub mod bench;
pub mod cli;
pub mod http;
pub mod settings;
pub mod startup;
pub mod telemetry;
