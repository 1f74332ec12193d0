//! End-to-end tests of the `tessera` binary: real processes, real PostgreSQL.

mod http;
mod projectors;
mod up;
