//! The `tessera` command line.

#![allow(clippy::print_stdout)] // A command line prints its answers.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::db::{Database, DbConfig};

#[derive(Debug, Parser)]
#[command(
    name = "tessera",
    version,
    about = "Tessera: an event-sourced booking platform"
)]
pub struct Cli {
    /// PostgreSQL to use. Without it, an embedded cluster is started in --data-dir.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
    /// Data folder of the embedded PostgreSQL cluster.
    #[arg(
        long,
        env = "TESSERA_DATA_DIR",
        default_value = ".tessera",
        global = true
    )]
    pub data_dir: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the platform: embedded PostgreSQL (unless DATABASE_URL is set) and migrations;
    /// runs until Ctrl-C or SIGTERM.
    Up,
    /// Apply database migrations and exit.
    Migrate,
    /// Event store commands.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Run projector processes (read models and search index) until Ctrl-C or SIGTERM. Any number
    /// may run; each projection is applied by exactly one of them at a time.
    Project(crate::ops::ProjectArgs),
    /// Projection status and zero-downtime rebuilds (analysts).
    Projections {
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
    /// Deterministic demo and benchmark data, generated through the command handlers.
    Fixtures {
        #[command(subcommand)]
        command: FixturesCommand,
    },
    /// Benchmarks (they print what they measured beside a baseline measured in the same run).
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Size of the log: events, streams, head position, per category and per type.
    Stats,
}

#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Each projection's state, generation, position, lag and owner.
    Status,
    /// Rebuild into new generations while the live ones keep serving, then swap.
    Rebuild(crate::ops::RebuildArgs),
}

#[derive(Debug, Subcommand)]
pub enum FixturesCommand {
    /// Generate history into an empty log (same seed and day, same log).
    Load(crate::ops::FixturesArgs),
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Event store workloads W1–W4 against a raw-INSERT/SELECT baseline.
    Store(crate::bench::store::StoreBenchArgs),
    /// Full rebuild of every projection over generated history against a raw COPY baseline.
    Rebuild(crate::bench::rebuild::RebuildBenchArgs),
}

impl Cli {
    fn db_config(&self, database: &str) -> DbConfig {
        DbConfig {
            database_url: self.database_url.clone(),
            data_dir: self.data_dir.clone(),
            database: database.to_owned(),
            max_connections: 20,
        }
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Up => up(&cli).await,
        Command::Migrate => {
            let db = Database::open(&cli.db_config("tessera")).await?;
            println!("migrations applied");
            db.close().await
        }
        Command::Store {
            command: StoreCommand::Stats,
        } => {
            let db = Database::open(&cli.db_config("tessera")).await?;
            let result = store_stats(&db).await;
            db.close().await?;
            result
        }
        Command::Project(args) => {
            let db = Database::open(&cli.db_config("tessera")).await?;
            let result = crate::ops::project(&db, &cli.data_dir, args).await;
            db.close().await?;
            result
        }
        Command::Projections { command } => {
            let db = Database::open(&cli.db_config("tessera")).await?;
            let result = match command {
                ProjectionsCommand::Status => crate::ops::status(&db).await,
                ProjectionsCommand::Rebuild(args) => {
                    crate::ops::rebuild(&db, &cli.data_dir, args).await
                }
            };
            db.close().await?;
            result
        }
        Command::Fixtures {
            command: FixturesCommand::Load(args),
        } => {
            let db = Database::open(&cli.db_config("tessera")).await?;
            let result = crate::ops::load_fixtures(&db, args, false)
                .await
                .map(|_| ());
            db.close().await?;
            result
        }
        Command::Bench {
            command: BenchCommand::Store(args),
        } => crate::bench::store::run(&cli.db_config("tessera_bench"), args).await,
        Command::Bench {
            command: BenchCommand::Rebuild(args),
        } => {
            crate::bench::rebuild::run(&cli.db_config("tessera_bench_rebuild"), &cli.data_dir, args)
                .await
        }
    }
}

async fn up(cli: &Cli) -> anyhow::Result<()> {
    // Installed before anything else: a signal that arrives while starting (or right after the
    // "up" line) is then handled by stopping cleanly, never by the default kill.
    let mut shutdown = Shutdown::install()?;
    let db = Database::open(&cli.db_config("tessera")).await?;
    let where_ = match db.embedded_port() {
        Some(port) => format!(
            "embedded PostgreSQL on 127.0.0.1:{port} (data in {})",
            cli.data_dir.display()
        ),
        None => "PostgreSQL from DATABASE_URL".to_owned(),
    };
    // Projectors run in this process (separate `tessera project` processes may join: each
    // projection is applied by whichever holds its lease).
    let projector = tessera_projections::Projector::new(
        db.pool.clone(),
        crate::ops::store(&db),
        tessera_projections::all(&crate::ops::index_root(&cli.data_dir)),
        tessera_projections::ProjectorOptions::default(),
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let projecting = tokio::spawn(projector.run(stopped));
    println!("Tessera is up: {where_}, migrations applied, projectors running.");
    println!("Press Ctrl-C to stop.");
    shutdown.wait().await;
    println!("Stopping…");
    let _ = stop.send(true);
    match projecting.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "projector stopped with an error"),
        Err(e) => tracing::error!(error = %e, "projector task failed"),
    }
    db.close().await
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

async fn store_stats(db: &Database) -> anyhow::Result<()> {
    let (events, streams, head): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM events),
                (SELECT count(DISTINCT stream_id) FROM events),
                (SELECT position FROM log_head WHERE id = 1)",
    )
    .fetch_one(&db.pool)
    .await
    .context("cannot read the log")?;
    let size: String =
        sqlx::query_scalar("SELECT pg_size_pretty(pg_total_relation_size('events'))")
            .fetch_one(&db.pool)
            .await?;
    println!("events        {events}");
    println!("streams       {streams}");
    println!("head position {head}");
    println!("size on disk  {size}");
    let categories: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT split_part(stream_id, '-', 1) AS category, count(DISTINCT stream_id), count(*)
           FROM events GROUP BY 1 ORDER BY 3 DESC, 1 LIMIT 20",
    )
    .fetch_all(&db.pool)
    .await?;
    if !categories.is_empty() {
        println!("\n{:<24} {:>10} {:>12}", "category", "streams", "events");
        for (category, streams, events) in categories {
            println!("{category:<24} {streams:>10} {events:>12}");
        }
    }
    let types: Vec<(String, i64)> = sqlx::query_as(
        "SELECT event_type, count(*) FROM events GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 30",
    )
    .fetch_all(&db.pool)
    .await?;
    if !types.is_empty() {
        println!("\n{:<36} {:>12}", "event type", "events");
        for (t, n) in types {
            println!("{t:<36} {n:>12}");
        }
    }
    Ok(())
}
