//! PostgreSQL plumbing shared by the whole platform: migrations, connection pools and the
//! embedded cluster that the binary and the test harness start when no database URL is given.

pub mod coalesce;
pub mod embedded;

use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

/// A `FROM` item that lets the statement's transaction commit without waiting for its own WAL
/// flush (`synchronous_commit = off`, local to that transaction), for `concat!` into a statement.
/// Only for writes whose loss in a crash is harmless because something flushed later in the
/// log (which is flushed in order) re-creates or supersedes them; each use says why.
#[macro_export]
macro_rules! async_commit {
    () => {
        "(SELECT set_config('synchronous_commit', 'off', true)) AS async_commit"
    };
}
pub use crate::async_commit;

/// The plain-SQL migrations of `migrations/`, embedded at compile time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// Opens a pool with the session settings the platform relies on.
pub async fn connect(
    options: PgConnectOptions,
    max_connections: u32,
) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options.options([
            // A transaction left open would hold the global write lock; never let it hang.
            ("idle_in_transaction_session_timeout", "60s"),
            ("application_name", "tessera"),
        ]))
        .await
}

/// Applies every pending migration.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}
