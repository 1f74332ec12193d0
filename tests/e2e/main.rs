//! End-to-end tests of the `tessera` binary: real processes, real PostgreSQL.

mod audit;
mod http;
mod onsale;
mod projectors;
mod up;
