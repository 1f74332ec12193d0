//! Benchmarks run through the `tessera bench` command. Each prints what it measured next to a
//! baseline measured in the same run on the same database, and the ratio.

pub mod http;
pub mod onsale;
pub mod rebuild;
pub mod slot;
pub mod store;
