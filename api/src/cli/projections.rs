//! `tessera project`, `tessera projections status|rebuild`: projector processes, projection
//! status and zero-downtime rebuilds (analysts).

#![allow(clippy::print_stdout)] // A command line prints its answers.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use tessera_projections::{Projector, ProjectorOptions};
use tokio::sync::watch;

use crate::startup::db::Database;
use crate::startup::{Shutdown, store};

#[derive(Debug, clap::Subcommand)]
pub enum ProjectionsCommand {
    /// Each projection's state, generation, position, lag and owner.
    Status,
    /// Rebuild into new generations while the live ones keep serving, then swap.
    Rebuild(RebuildArgs),
}

/// `tessera projections …`.
pub async fn run(
    db: &Database,
    index_root: &Path,
    command: &ProjectionsCommand,
) -> anyhow::Result<()> {
    match command {
        ProjectionsCommand::Status => status(db).await,
        ProjectionsCommand::Rebuild(args) => rebuild(db, index_root, args).await,
    }
}

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

/// `tessera project`: runs projections until SIGINT/SIGTERM.
pub async fn project(db: &Database, index_root: &Path, args: &ProjectArgs) -> anyhow::Result<()> {
    let mut shutdown = Shutdown::install()?;
    if let Some(addr) = args.metrics_addr {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .context("cannot serve metrics")?;
    }
    let projections =
        tessera_projections::select(tessera_projections::all(index_root), &args.only)?;
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

pub async fn rebuild(db: &Database, index_root: &Path, args: &RebuildArgs) -> anyhow::Result<()> {
    if !args.all && args.names.is_empty() {
        anyhow::bail!("name the projections to rebuild, or pass --all");
    }
    let all = tessera_projections::all(index_root);
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
