//! The `tessera` command line: one file per command group, each a thin layer over the
//! composition root (`startup`), which builds what the command needs from [`Settings`].

#![allow(clippy::print_stdout)] // A command line prints its answers.

pub mod admin;
pub mod audit;
#[cfg(feature = "bench")]
pub mod bench;
pub mod fixtures;
pub mod ledger;
pub mod mail;
pub mod projections;
pub mod serve;
pub mod store;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::settings::Settings;
use crate::startup::db::Database;

#[derive(Debug, Parser)]
#[command(
    name = "tessera",
    version,
    about = "Tessera: an event-sourced booking platform"
)]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the command line and the environment (exiting with clap's message on a mistake),
    /// then completes the settings from the settings file, if one is named.
    pub fn load() -> anyhow::Result<Self> {
        let matches = Self::command().get_matches();
        let mut cli = Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        cli.settings = cli.settings.with_file(&matches)?;
        Ok(cli)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the whole platform: embedded PostgreSQL (unless DATABASE_URL is set), migrations,
    /// demo fixtures when the log is empty, API + projectors + reactors; runs until Ctrl-C or
    /// SIGTERM.
    Up(serve::UpArgs),
    /// Run the HTTP API alone (projectors and reactors run as their own processes).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Event store commands.
    Store {
        #[command(subcommand)]
        command: store::StoreCommand,
    },
    /// Run projector processes (read models and search index) until Ctrl-C or SIGTERM. Any number
    /// may run; each projection is applied by exactly one of them at a time.
    Project(projections::ProjectArgs),
    /// Projection status and zero-downtime rebuilds (analysts).
    Projections {
        #[command(subcommand)]
        command: projections::ProjectionsCommand,
    },
    /// Admins: compensating commands and GDPR erasure (each with a reason, the admin recorded).
    Admin {
        #[command(subcommand)]
        command: admin::AdminCommand,
    },
    /// Auditors: seals and verification of the log, booking histories, time travel, log
    /// browsing and verifiable exports (read straight from the log).
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Money: `ledger check` recomputes the double-entry ledger from the log and reconciles it
    /// with the payment gateway's records (exits non-zero on any difference).
    Ledger {
        #[command(subcommand)]
        command: ledger::LedgerCommand,
    },
    /// Messages: what each person was told (`list`, `stats`), and dead letters retried or
    /// discarded by an admin.
    Outbox {
        #[command(subcommand)]
        command: mail::OutboxCommand,
    },
    /// The messages written to the data folder's `mail/` (`tail` follows them).
    Mail {
        #[command(subcommand)]
        command: mail::MailCommand,
    },
    /// Deterministic demo and benchmark data, generated through the command handlers.
    Fixtures {
        #[command(subcommand)]
        command: fixtures::FixturesCommand,
    },
    /// Benchmarks (they print what they measured beside a baseline measured in the same run).
    #[cfg(feature = "bench")]
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
}

/// Runs `command` with the database of `settings` open, and closes it whatever the outcome.
async fn with_database<T>(
    settings: &Settings,
    command: impl AsyncFnOnce(&Database) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let db = Database::open(&settings.db_config("tessera")).await?;
    let result = command(&db).await;
    db.close().await?;
    result
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = &cli.settings;
    match &cli.command {
        Command::Up(args) => serve::up(settings, args).await,
        Command::Serve => serve::serve(settings).await,
        Command::Migrate => {
            with_database(settings, async |_| {
                println!("migrations applied");
                Ok(())
            })
            .await
        }
        Command::Store { command } => {
            with_database(settings, async |db| store::run(db, command).await).await
        }
        Command::Project(args) => {
            let index_root = settings.index_root();
            with_database(settings, async |db| {
                projections::project(db, &index_root, args).await
            })
            .await
        }
        Command::Projections { command } => {
            let index_root = settings.index_root();
            with_database(settings, async |db| {
                projections::run(db, &index_root, command).await
            })
            .await
        }
        Command::Admin { command } => {
            with_database(settings, async |db| admin::run(db, settings, command).await).await
        }
        Command::Audit { command } => {
            with_database(settings, async |db| audit::run(db, settings, command).await).await
        }
        Command::Ledger { command } => {
            with_database(settings, async |db| {
                ledger::run(db, settings, command).await
            })
            .await
        }
        Command::Outbox { command } => {
            with_database(settings, async |db| mail::run_outbox(db, command).await).await
        }
        Command::Mail { command } => mail::run_mail(settings, command).await,
        Command::Fixtures { command } => {
            with_database(settings, async |db| fixtures::run(db, command).await).await
        }
        #[cfg(feature = "bench")]
        Command::Bench { command } => bench::run(settings, command).await,
    }
}
