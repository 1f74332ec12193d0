//! What can stop a projection. A failure always names the projection, and when an event caused
//! it, that event's position and type: a projection never skips an event silently.

use tessera_log::store::{Position, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The projection could not apply this event (it does not decode, or contradicts what the
    /// projection has seen so far). Retrying does not help; the projection stops.
    #[error("projection {projection} failed on event {position} ({event_type}): {reason}")]
    Event {
        projection: String,
        position: Position,
        event_type: String,
        reason: String,
    },
    #[error("read model storage: {0}")]
    Database(#[from] sqlx::Error),
    #[error("search index: {0}")]
    Index(String),
    #[error("event store: {0}")]
    Store(#[from] StoreError),
    #[error("unknown projection {0:?} (known: {1})")]
    Unknown(String, String),
    /// The request is not acceptable (a bad search parameter, a rebuild already running).
    #[error("{0}")]
    Invalid(String),
    /// What the request needs is not there yet (the search index before its first build);
    /// retrying later helps.
    #[error("{0}")]
    NotReady(String),
    /// A background task failed, or the runner found its registry in a state it cannot be in.
    #[error("{0}")]
    Task(String),
}

impl From<tantivy::TantivyError> for ProjectionError {
    fn from(e: tantivy::TantivyError) -> Self {
        Self::Index(e.to_string())
    }
}

pub type Result<T, E = ProjectionError> = std::result::Result<T, E>;
