//! Read side of Tessera: the projector runtime that follows the global log through the store's
//! commit-safe cursor, the PostgreSQL read models and the tantivy search index.
//!
//! Every projection is a pure function of the log. Its tables live in a schema of their own per
//! *generation*; the `read` schema has one view per table of the active generation. A rebuild
//! fills a new generation from position zero while the active one keeps serving, then swaps
//! the views in one transaction.
//!
//! Each read model has one home, in `models/`: its tables, the rows it writes and the typed
//! queries (with the views they answer) that the API reads it through.
//!
//! Architecture invariant: projections read the log only through the `EventStore` port of
//! `tessera-log` and never append to it; they depend on the log, never on the write side.

pub mod envelope;
pub mod error;
pub mod models;
pub mod rebuild;
pub mod registry;
pub mod replay;
pub mod rows;
pub mod runner;
pub mod search;

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::PgConnection;

pub use envelope::Envelope;
pub use error::ProjectionError;
pub use rebuild::{RebuildProgress, rebuild};
pub use registry::{ProjectionStatus, status};
pub use runner::{Projector, ProjectorOptions};

/// A read model kept in PostgreSQL.
#[async_trait]
pub trait SqlProjection: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &'static str;
    /// Bumped whenever the code changes what the tables hold; a running projector then rebuilds
    /// the projection into a new generation before serving the new version.
    fn version(&self) -> u32;
    /// Tables, indexes and views of one generation, run with `search_path` set to its schema.
    fn ddl(&self) -> String;
    /// Applies `batch` (in log order) inside the caller's transaction, with `search_path` set
    /// to the generation's schema. Must be deterministic in the events alone.
    async fn apply(
        &self,
        conn: &mut PgConnection,
        batch: &[Envelope],
    ) -> Result<(), ProjectionError>;
}

/// Every projection of the platform.
#[derive(Debug, Clone)]
pub enum Projection {
    Sql(Arc<dyn SqlProjection>),
    Search(Arc<search::SearchProjection>),
}

impl Projection {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Sql(p) => p.name(),
            Self::Search(p) => p.name(),
        }
    }

    pub fn version(&self) -> u32 {
        match self {
            Self::Sql(p) => p.version(),
            Self::Search(p) => p.version(),
        }
    }
}

/// The platform's projections; the search index is kept under `index_root`.
pub fn all(index_root: &std::path::Path) -> Vec<Projection> {
    vec![
        Projection::Sql(Arc::new(models::catalog::Catalog)),
        Projection::Sql(Arc::new(models::bookings::Bookings)),
        Projection::Sql(Arc::new(models::payments::Payments)),
        Projection::Sql(Arc::new(models::loyalty::Loyalty)),
        Projection::Sql(Arc::new(models::reviews::Reviews)),
        Projection::Sql(Arc::new(models::stats::Stats::default())),
        Projection::Sql(Arc::new(models::users::Users)),
        Projection::Search(Arc::new(search::SearchProjection::new(index_root))),
    ]
}

/// The projections named in `names` (all of them when empty).
pub fn select(all: Vec<Projection>, names: &[String]) -> Result<Vec<Projection>, ProjectionError> {
    if names.is_empty() {
        return Ok(all);
    }
    let known = all
        .iter()
        .map(Projection::name)
        .collect::<Vec<_>>()
        .join(", ");
    names
        .iter()
        .map(|n| {
            all.iter()
                .find(|p| p.name() == n)
                .cloned()
                .ok_or_else(|| ProjectionError::Unknown(n.clone(), known.clone()))
        })
        .collect()
}
