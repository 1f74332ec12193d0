//! Operator commands: projector processes, projection status and rebuilds, fixture loading.

#![allow(clippy::print_stdout)] // A command line prints its answers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use tessera_log::pii::{PiiStore, Vault};
use tessera_log::store::{EventStore, PgEventStore, PgStoreOptions};
use tessera_projections::{Projector, ProjectorOptions};
use tokio::sync::watch;

use crate::cli::Shutdown;
use crate::db::Database;

#[derive(Debug, Clone, clap::Args)]
pub struct ProjectArgs {
    /// Run only these projections (all when omitted).
    #[arg(long = "only", value_name = "NAME")]
    pub only: Vec<String>,
    /// Most events applied per transaction.
    #[arg(long, default_value_t = 2_000)]
    pub batch_size: usize,
    /// Least milliseconds between two live batches of a projection: under load, the events
    /// that arrive meanwhile are applied together (0: every wake-up on its own).
    #[arg(long, default_value_t = 20)]
    pub batch_interval_ms: u64,
    /// Least milliseconds between two live commits of the search index (each writes and syncs
    /// a segment); after a quiet spell it commits at once.
    #[arg(long, default_value_t = 250)]
    pub index_interval_ms: u64,
    /// Serve Prometheus metrics (lag, positions, failures) on this address.
    #[arg(long)]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RebuildArgs {
    /// Projections to rebuild.
    pub names: Vec<String>,
    /// Rebuild every projection.
    #[arg(long, conflicts_with = "names")]
    pub all: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct FixturesArgs {
    /// tiny | small | medium | large
    #[arg(long, default_value = "small")]
    pub scale: String,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Last day of the history (slots run 90 days past it). Default: today.
    #[arg(long)]
    pub until: Option<NaiveDate>,
    /// Append every command straight to PostgreSQL instead of staging the log in memory and
    /// copying it in bulk (the same log, much slower: the baseline of the staged load).
    #[arg(long)]
    pub direct: bool,
}

/// Where search indexes live.
pub fn index_root(data_dir: &Path) -> PathBuf {
    data_dir.join("index")
}

/// The log, without the personal-data layer (the platform adds it, see [`store`]).
pub fn log(db: &Database) -> Arc<dyn EventStore> {
    Arc::new(PgEventStore::new(
        db.pool.clone(),
        PgStoreOptions::default(),
    ))
}

/// The master key that wraps personal-data keys (`TESSERA_MASTER_KEY`, 64 hex characters);
/// default: one generated for the database (demos only).
pub fn master_key() -> Option<String> {
    std::env::var("TESSERA_MASTER_KEY").ok()
}

/// The log as everything above the store sees it: personal data encrypted on the way in and
/// decrypted (or shown as erased) on the way out.
pub async fn store(db: &Database) -> anyhow::Result<Arc<dyn EventStore>> {
    let vault = Vault::load(db.pool.clone(), master_key().as_deref())
        .await
        .context("cannot open the personal-data vault")?;
    Ok(Arc::new(PiiStore::new(log(db), vault)))
}

/// `tessera project`: runs projections until SIGINT/SIGTERM.
pub async fn project(db: &Database, data_dir: &Path, args: &ProjectArgs) -> anyhow::Result<()> {
    let mut shutdown = Shutdown::install()?;
    if let Some(addr) = args.metrics_addr {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .context("cannot serve metrics")?;
    }
    let projections =
        tessera_projections::select(tessera_projections::all(&index_root(data_dir)), &args.only)?;
    let names: Vec<&str> = projections.iter().map(|p| p.name()).collect();
    let options = ProjectorOptions {
        batch_size: args.batch_size.max(1),
        batch_interval: Duration::from_millis(args.batch_interval_ms),
        index_interval: Duration::from_millis(args.index_interval_ms),
        label: format!("{} pid {}", hostname(), std::process::id()),
        ..ProjectorOptions::default()
    };
    let projector = Projector::new(
        db.pool.clone(),
        store(db).await?,
        projections.clone(),
        options,
    );
    println!(
        "projector {} running: {}",
        projector.instance(),
        names.join(", ")
    );
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(projector.run(stopped));
    shutdown.wait().await;
    println!("stopping projector…");
    let _ = stop.send(true);
    task.await.context("projector task")??;
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

pub async fn status(db: &Database) -> anyhow::Result<()> {
    let rows = tessera_projections::status(&db.pool).await?;
    if rows.is_empty() {
        println!("no projection has run yet (start `tessera project` or `tessera up`)");
        return Ok(());
    }
    println!(
        "{:<10} {:<11} {:>4} {:>10} {:>10} {:>10} {:>9}  owner / error",
        "projection", "state", "gen", "position", "head", "lag", "lag (s)"
    );
    for s in rows {
        let detail = match (&s.error, &s.owner) {
            (Some(e), _) => e.clone(),
            (None, Some(o)) => o.clone(),
            _ => String::new(),
        };
        let rebuilding = s
            .rebuilding
            .map(|(g, p)| format!(" (rebuilding g{g} at {p})"))
            .unwrap_or_default();
        println!(
            "{:<10} {:<11} {:>4} {:>10} {:>10} {:>10} {:>9.1}  {detail}{rebuilding}",
            s.name,
            s.state,
            s.generation.map(|g| g.to_string()).unwrap_or_default(),
            s.position,
            s.head,
            s.lag_events,
            s.lag_seconds,
        );
    }
    Ok(())
}

pub async fn rebuild(db: &Database, data_dir: &Path, args: &RebuildArgs) -> anyhow::Result<()> {
    if !args.all && args.names.is_empty() {
        anyhow::bail!("name the projections to rebuild, or pass --all");
    }
    let all = tessera_projections::all(&index_root(data_dir));
    let projections = tessera_projections::select(all, if args.all { &[] } else { &args.names })?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} events, {per_sec}, ETA {eta}")
            .context("progress template")?
            .progress_chars("=> "),
    );
    bar.set_message(format!(
        "rebuilding {}",
        projections
            .iter()
            .map(|p| p.name())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let report = tessera_projections::rebuild(&db.pool, store(db).await?, &projections, &|p| {
        bar.set_length(p.total);
        bar.set_position(p.done);
    })
    .await?;
    bar.finish_and_clear();
    println!(
        "rebuilt {} from {} events in {:.1} s ({:.0} events/s); the new generations are live",
        report.projections.join(", "),
        report.events,
        report.seconds,
        report.events_per_second
    );
    Ok(())
}

/// `tessera fixtures load`: generates history through the command handlers into an empty log.
pub async fn load_fixtures(
    db: &Database,
    args: &FixturesArgs,
    quiet: bool,
) -> anyhow::Result<tessera_fixtures::Summary> {
    let scale = tessera_fixtures::Scale::named(&args.scale).with_context(|| {
        format!(
            "unknown scale {:?} (tiny, small, medium, large)",
            args.scale
        )
    })?;
    let head: i64 = sqlx::query_scalar("SELECT position FROM log_head WHERE id = 1")
        .fetch_one(&db.pool)
        .await?;
    if head > 0 {
        anyhow::bail!("the log already holds {head} events; fixtures load only into an empty log");
    }
    let until = args.until.unwrap_or_else(|| Utc::now().date_naive());
    let end: DateTime<Utc> = until
        .and_hms_opt(12, 0, 0)
        .context("noon exists")?
        .and_utc();
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "loading {msg} fixtures [{bar:40}] {pos}/{len} actions, ETA {eta}",
        )
        .context("progress template")?
        .progress_chars("=> "),
    );
    bar.set_message(args.scale.clone());
    bar.enable_steady_tick(Duration::from_millis(200));
    let started = std::time::Instant::now();
    // The generator runs one command at a time (that is what makes it deterministic) on a
    // single-threaded runtime of its own: on the multi-threaded one every await hops between
    // threads, and those wake-ups cost more than its remaining queries (deadlines, data keys).
    // It commits asynchronously (no wait for the WAL flush per statement): a crash can lose the
    // last few commits, which leaves a partial history like any crash mid-load (reload into an
    // empty database); order and hash chains stay intact. Everything else keeps synchronous
    // commits.
    let options = db.options.clone().options([("synchronous_commit", "off")]);
    let (seed, progress) = (args.seed, bar.clone());
    let staging = if args.direct {
        tessera_fixtures::Staging::Direct
    } else {
        tessera_fixtures::Staging::Bulk
    };
    let (events, summary) = tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let loading = tessera_log::pg::connect(options, 4)
                .await
                .context("cannot connect for loading")?;
            let master_key = master_key();
            let loaded = tessera_fixtures::load_with(
                loading.clone(),
                scale,
                seed,
                end,
                &|done, total| {
                    progress.set_length(total as u64);
                    progress.set_position(done as u64);
                },
                master_key.as_deref(),
                staging,
            )
            .await;
            let result = match loaded {
                Ok((store, summary)) => Ok((store.head().await?.0, summary)),
                Err(e) => Err(anyhow::Error::from(e)),
            };
            loading.close().await;
            result
        })
    })
    .await
    .context("the loader thread failed")??;
    bar.finish_and_clear();
    if !quiet {
        println!(
            "loaded {} fixtures (seed {}, until {until}): {events} events, {} listings, {} slots, {} bookings in {:.1} s",
            args.scale,
            args.seed,
            summary.listings,
            summary.slots,
            summary.bookings_placed,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(summary)
}
