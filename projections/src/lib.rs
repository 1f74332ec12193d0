//! Read side of Tessera: the projector runtime that follows the global log through the store's
//! commit-safe cursor, the PostgreSQL read models and the tantivy search index.
//!
//! Architecture invariant: projections read the log only through the `EventStore` port of
//! `tessera-commands` and never append to it. (The runtime lands with the projections issue.)
