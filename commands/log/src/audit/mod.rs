//! What auditors work with: global seals over the log and their verification, the full history
//! of a booking across streams, time travel (state as of a position or a moment, replayed from
//! the pure domain), log browsing and streamed exports. Reads the PostgreSQL log directly: the
//! audit trail never depends on read models.

pub mod export;
pub mod history;
pub mod merkle;
pub mod seal;
pub mod verify;

pub use export::{ExportCheck, export_booking, export_range, verify_export};
pub use history::{
    AsOf, LogEntry, LogPage, LogQuery, StateAsOf, add_personal_views, booking_events,
    booking_history, browse, state_as_of,
};
pub use seal::{DEFAULT_SEAL_RANGE, Seal, SealKey, list_seals, run_sealer, seal_now};
pub use verify::{Problem, ProblemKind, VerifyOptions, VerifyReport, verify};

/// Why an audit operation could not be carried out (a failed verification is a report, not an
/// error).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("seal key: {0}")]
    Key(String),
    #[error("{what} {id} does not exist")]
    NotFound { what: &'static str, id: String },
    #[error("invalid audit request: {0}")]
    Invalid(String),
    #[error("audit database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The range to seal is not dense or not chained: nothing was sealed.
    #[error("the sealer refuses positions {from}..{to}: {problem}")]
    SealRefused { from: u64, to: u64, problem: String },
}
