//! Database provisioning: connect to `DATABASE_URL`, or start the embedded cluster in the data
//! folder and create the application database in it; then migrate.

use std::path::PathBuf;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::{ConnectOptions, Connection, Executor};
use tessera_log::pg::embedded::{EmbeddedOptions, EmbeddedPostgres};

/// Where the data lives.
#[derive(Debug, Clone)]
pub struct DbConfig {
    /// An external PostgreSQL; when `None` the embedded cluster is used.
    pub database_url: Option<String>,
    /// Data folder of the embedded cluster.
    pub data_dir: PathBuf,
    /// Name of the database inside the embedded cluster.
    pub database: String,
    pub max_connections: u32,
    /// Where PostgreSQL's programs are, for the embedded cluster (else `search_path`).
    pub pg_bin: Option<PathBuf>,
    /// The directories to look for PostgreSQL's programs in (the process's `PATH`).
    pub search_path: Option<std::ffi::OsString>,
    /// Master key (hex) of the personal-data vault; default: the one generated for the database.
    pub master_key: Option<String>,
}

/// An open, migrated database and the embedded server behind it (if any).
#[derive(Debug)]
pub struct Database {
    pub pool: PgPool,
    pub options: PgConnectOptions,
    embedded: Option<EmbeddedPostgres>,
    master_key: Option<String>,
}

impl Database {
    /// Connects (starting the embedded cluster if needed), creates the database if missing and
    /// applies migrations.
    pub async fn open(config: &DbConfig) -> anyhow::Result<Self> {
        let (options, embedded) = match &config.database_url {
            Some(url) => (
                url.parse::<PgConnectOptions>()
                    .context("DATABASE_URL is not a valid PostgreSQL URL")?,
                None,
            ),
            None => {
                let mut embedded = EmbeddedOptions::new(&config.data_dir);
                embedded.pg_bin.clone_from(&config.pg_bin);
                embedded.search_path.clone_from(&config.search_path);
                let pg = EmbeddedPostgres::start(&embedded)
                    .await
                    .context("cannot start the embedded PostgreSQL")?;
                ensure_database(&pg.connect_options("postgres"), &config.database).await?;
                (pg.connect_options(&config.database), Some(pg))
            }
        };
        let pool = tessera_log::pg::connect(options.clone(), config.max_connections)
            .await
            .context("cannot connect to PostgreSQL")?;
        tessera_log::pg::migrate(&pool)
            .await
            .context("cannot apply migrations")?;
        Ok(Self {
            pool,
            options,
            embedded,
            master_key: config.master_key.clone(),
        })
    }

    /// The configured master key of the personal-data vault, if any.
    pub fn master_key(&self) -> Option<&str> {
        self.master_key.as_deref()
    }

    /// Whether this process started the embedded server.
    pub fn embedded_port(&self) -> Option<u16> {
        self.embedded.as_ref().map(EmbeddedPostgres::port)
    }

    /// Closes the pool and stops the embedded server if this process started it.
    pub async fn close(self) -> anyhow::Result<()> {
        self.pool.close().await;
        if let Some(pg) = self.embedded {
            pg.stop()
                .await
                .context("cannot stop the embedded PostgreSQL")?;
        }
        Ok(())
    }
}

/// Creates `name` on the server unless it exists.
pub async fn ensure_database(admin: &PgConnectOptions, name: &str) -> anyhow::Result<()> {
    let mut conn = admin
        .connect()
        .await
        .context("cannot connect to PostgreSQL")?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        conn.execute(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE \"{}\"",
            name.replace('"', "\"\"")
        )))
        .await
        .with_context(|| format!("cannot create database {name}"))?;
    }
    conn.close().await?;
    Ok(())
}
