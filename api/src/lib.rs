//! Composition root of Tessera: configuration, database provisioning, the `tessera` command line
//! and the HTTP API.
//!
//! Architecture invariant: this is the only crate that wires adapters together and the only one
//! that reads configuration from the environment.

pub mod admin_cli;
pub mod audit;
pub mod bench;
pub mod cli;
pub mod db;
pub mod http;
pub mod ops;
pub mod platform;
pub mod telemetry;
