//! The composition root's one entrance: everything a `tessera` command starts is built here
//! from [`Settings`](crate::settings::Settings): the database ([`db`]: an external PostgreSQL or
//! the embedded cluster), the log as the platform sees it ([`store`]: PostgreSQL under the
//! personal-data layer), the platform's moving parts in one process ([`Platform`]), fixture
//! loading, and the signal handling every long-running command stops by ([`Shutdown`]).
//!
//! Modules above it (`cli`, `bench`) call into it; it calls into `http` for the API's state,
//! and never back up.

pub mod db;
mod fixtures;
mod platform;

use std::sync::Arc;

use anyhow::Context;
use sqlx::PgPool;
use tessera_log::pii::{PiiStore, Vault};
use tessera_log::store::{EventStore, PgEventStore, PgStoreOptions};

pub use fixtures::{FixtureLoad, load_fixtures};
pub use platform::{NotificationOptions, Platform, PlatformOptions, StripeConfig, prometheus};

use db::Database;

/// The log in `pool`, without the personal-data layer (the platform adds it, see [`store`]).
pub fn log_over(pool: PgPool) -> Arc<dyn EventStore> {
    Arc::new(PgEventStore::new(pool, PgStoreOptions::default()))
}

/// The log of `db`, without the personal-data layer.
pub fn log(db: &Database) -> Arc<dyn EventStore> {
    log_over(db.pool.clone())
}

/// The personal-data vault of `db`, opened with the configured master key.
pub async fn vault(db: &Database) -> anyhow::Result<Arc<Vault>> {
    Vault::load(db.pool.clone(), db.master_key())
        .await
        .context("cannot open the personal-data vault")
}

/// The log as everything above the store sees it: personal data encrypted on the way in and
/// decrypted (or shown as erased) on the way out.
pub async fn store(db: &Database) -> anyhow::Result<Arc<dyn EventStore>> {
    Ok(Arc::new(PiiStore::new(log(db), vault(db).await?)))
}

/// SIGINT (Ctrl-C) and SIGTERM handlers, registered when this value is created.
#[derive(Debug)]
pub struct Shutdown {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Shutdown {
    pub fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
        })
    }

    /// Resolves on the first SIGINT or SIGTERM (including one that arrived before the call).
    pub async fn wait(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// Binds the API's address, or fails with one line naming it and the setting that changes it.
pub async fn listen(addr: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {addr}: {e} (choose another address with --addr or TESSERA_ADDR)"
        )
    })
}
