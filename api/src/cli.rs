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
    /// Connections in this process's PostgreSQL pool.
    #[arg(
        long,
        env = "TESSERA_MAX_CONNECTIONS",
        default_value_t = 20,
        global = true
    )]
    pub max_connections: u32,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the whole platform: embedded PostgreSQL (unless DATABASE_URL is set), migrations,
    /// demo fixtures when the log is empty, API + projectors + reactors; runs until Ctrl-C or
    /// SIGTERM.
    Up(UpArgs),
    /// Run the HTTP API alone (projectors and reactors run as their own processes).
    Serve(ServeArgs),
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
    /// Admins: compensating commands and GDPR erasure (each with a reason, the admin recorded).
    Admin {
        #[command(subcommand)]
        command: crate::admin_cli::AdminCommand,
    },
    /// Auditors: seals and verification of the log, booking histories, time travel, log
    /// browsing and verifiable exports (read straight from the log).
    Audit {
        #[command(subcommand)]
        command: crate::audit::AuditCommand,
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

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0: any free port).
    #[arg(long, env = "TESSERA_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: std::net::SocketAddr,
    /// HS256 secret for access tokens (at least 32 bytes); default: one generated per database.
    #[arg(long, env = "TESSERA_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Ed25519 seed (64 hex characters) that signs the log's seals; default: one generated per
    /// database. Keep it outside the database for real tamper evidence.
    #[arg(long, env = "TESSERA_SEAL_KEY", hide_env_values = true)]
    pub seal_key: Option<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Fixture scale loaded into an empty log (tiny, small, medium, large); `none` to skip.
    #[arg(long, default_value = "small")]
    pub fixtures: String,
    /// Niceness (0..=19) of the read side's threads (projectors, reactors): above 0, requests
    /// win the CPU from them, and under load projections lag instead of commands waiting.
    #[arg(long, env = "TESSERA_READ_SIDE_NICE", default_value_t = crate::platform::READ_SIDE_NICE,
          value_parser = clap::value_parser!(u8).range(0..=19))]
    pub read_side_nice: u8,
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
    /// The API over HTTP on the rebuild bench's data: search and holds against plain SQL.
    Http(crate::bench::http::HttpBenchArgs),
    /// One hold decision on a cached slot holding 10 to 9,000 bookings (no database).
    Slot(crate::bench::slot::SlotBenchArgs),
}

impl Cli {
    fn db_config(&self, database: &str) -> DbConfig {
        DbConfig {
            database_url: self.database_url.clone(),
            data_dir: self.data_dir.clone(),
            database: database.to_owned(),
            max_connections: self.max_connections,
        }
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Up(args) => up(&cli, args).await,
        Command::Serve(args) => serve(&cli, args).await,
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
        Command::Admin { command } => {
            let db = Database::open(&cli.db_config("tessera")).await?;
            let result = crate::admin_cli::run(&db, command).await;
            db.close().await?;
            result
        }
        Command::Audit { command } => {
            let db = Database::open(&cli.db_config("tessera")).await?;
            let result = crate::audit::run(&db, command).await;
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
            command: BenchCommand::Http(args),
        } => {
            crate::bench::http::run(&cli.db_config("tessera_bench_rebuild"), &cli.data_dir, args)
                .await
        }
        Command::Bench {
            command: BenchCommand::Slot(args),
        } => crate::bench::slot::run(args),
        Command::Bench {
            command: BenchCommand::Rebuild(args),
        } => {
            crate::bench::rebuild::run(&cli.db_config("tessera_bench_rebuild"), &cli.data_dir, args)
                .await
        }
    }
}

async fn up(cli: &Cli, args: &UpArgs) -> anyhow::Result<()> {
    // Installed before anything else: a signal that arrives while starting (or right after the
    // "up" line) is then handled by stopping cleanly, never by the default kill.
    let mut shutdown = Shutdown::install()?;
    // The address first: a taken port fails here, with one line, before any other work.
    let listener = listen(args.serve.addr).await?;
    let db = Database::open(&cli.db_config("tessera")).await?;
    let where_ = match db.embedded_port() {
        Some(port) => format!(
            "embedded PostgreSQL on 127.0.0.1:{port} (data in {})",
            cli.data_dir.display()
        ),
        None => "PostgreSQL from DATABASE_URL".to_owned(),
    };
    let head: i64 = sqlx::query_scalar("SELECT position FROM log_head WHERE id = 1")
        .fetch_one(&db.pool)
        .await?;
    let mut loaded = false;
    if head == 0 && args.fixtures != "none" {
        println!(
            "The log is empty: loading the {} demo fixtures…",
            args.fixtures
        );
        crate::ops::load_fixtures(
            &db,
            &crate::ops::FixturesArgs {
                scale: args.fixtures.clone(),
                seed: 42,
                until: None,
                direct: false,
            },
            false,
        )
        .await?;
        loaded = true;
    }
    let slot = demo_slot(&db).await;
    let result = run_platform(
        cli,
        &db,
        listener,
        &args.serve,
        Some(args.read_side_nice),
        &mut shutdown,
        |url| {
            println!(
                "Tessera is up: {where_}, migrations applied, projectors and reactors running."
            );
            println!(
                "API: {url}/api/v1 (OpenAPI: {url}/api/v1/openapi.json, metrics: {url}/metrics)"
            );
            if loaded || head > 0 {
                print_demo(url, slot);
            }
            println!("Press Ctrl-C to stop.");
        },
    )
    .await;
    println!("Stopping…");
    db.close().await?;
    result
}

async fn serve(cli: &Cli, args: &ServeArgs) -> anyhow::Result<()> {
    let mut shutdown = Shutdown::install()?;
    let listener = listen(args.addr).await?;
    let db = Database::open(&cli.db_config("tessera")).await?;
    let result = run_platform(cli, &db, listener, args, None, &mut shutdown, |url| {
        println!("Tessera API listening on {url}/api/v1");
    })
    .await;
    db.close().await?;
    result
}

/// Binds the API's address, or fails with one line naming it and the flag that changes it.
async fn listen(addr: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {addr}: {e} (choose another address with --addr or TESSERA_ADDR)"
        )
    })
}

/// Starts the platform's parts (all of them, or the API's own), serves HTTP until a signal, then
/// drains in-flight requests and stops the parts.
async fn run_platform(
    cli: &Cli,
    db: &Database,
    listener: tokio::net::TcpListener,
    args: &ServeArgs,
    read_side_nice: Option<u8>,
    shutdown: &mut Shutdown,
    announce: impl FnOnce(&str),
) -> anyhow::Result<()> {
    // `up` runs the read side too (at the niceness given), `serve` only the API.
    let everything = read_side_nice.is_some();
    let platform = crate::platform::Platform::start(
        db.pool.clone(),
        crate::ops::log(db),
        crate::platform::PlatformOptions {
            projectors: everything,
            reactors: everything,
            stripe: crate::platform::StripeConfig::from_env(),
            jwt_secret: args.jwt_secret.clone(),
            config: crate::http::ApiConfig::default(),
            index_root: crate::ops::index_root(&cli.data_dir),
            projector_label: format!("tessera up pid {}", std::process::id()),
            seal_key: args.seal_key.clone(),
            seal_every: everything.then_some(std::time::Duration::from_secs(1)),
            read_side_nice: read_side_nice.unwrap_or(0),
        },
    )
    .await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::http::serve(
        listener,
        platform.state.clone(),
        async move {
            let _ = stop_rx.await;
        },
    ));
    announce(&url);
    shutdown.wait().await;
    // Drain: stop accepting, finish in-flight requests, then stop the background parts.
    let _ = stop_tx.send(());
    let served = server.await;
    platform.stop().await;
    served.context("server task")?.context("server")?;
    Ok(())
}

/// Demo accounts and three copy-paste `curl` commands (search, place a booking, read it back).
fn print_demo(url: &str, slot: Option<String>) {
    let pw = tessera_fixtures::DEMO_PASSWORD;
    println!();
    println!("Demo accounts (password {pw}):");
    for role in ["customer", "provider", "admin", "auditor", "analyst"] {
        println!("  {role:<9} {role}@tessera.test");
    }
    let slot = slot.unwrap_or_else(|| "<a slot_id from GET /api/v1/listings/ID/slots>".into());
    let text = r#"
Try it (search; log in and hold two seats; read the booking with its timeline):
  curl -s '{URL}/api/v1/listings?q=lisbon&limit=3'

  TOKEN=$(curl -s {URL}/api/v1/auth/login -H 'content-type: application/json' -d '{"email":"customer@tessera.test","password":"{PW}"}' | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
  BOOKING=$(curl -s {URL}/api/v1/bookings -H "authorization: Bearer $TOKEN" -H "idempotency-key: $(date +%s%N)" -H 'content-type: application/json' -d '{"slot_id":"{SLOT}","seats":2}' | sed -E 's/.*"booking_id":"([^"]+)".*/\1/')

  curl -s "{URL}/api/v1/bookings/$BOOKING" -H "authorization: Bearer $TOKEN" -H 'tessera-min-position: 0'
"#;
    println!(
        "{}",
        text.replace("{URL}", url)
            .replace("{PW}", pw)
            .replace("{SLOT}", &slot)
    );
}

/// The least-booked slot a few days ahead (read from the log: the read models may still be
/// catching up at start), for the demo commands.
async fn demo_slot(db: &Database) -> Option<String> {
    sqlx::query_scalar(
        "SELECT s.data->>'slot_id' FROM events s
          WHERE s.event_type = 'SlotScheduled'
            AND (s.data->>'starts_at')::timestamptz > now() + interval '3 days'
            AND NOT EXISTS (SELECT 1 FROM events c
                             WHERE c.stream_id = s.stream_id AND c.event_type = 'SlotCancelled')
          ORDER BY (SELECT count(*) FROM events h WHERE h.stream_id = s.stream_id), s.position
          LIMIT 1",
    )
    .fetch_optional(&db.pool)
    .await
    .ok()
    .flatten()
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
