//! Fixture loading: deterministic history generated through the command handlers into an
//! empty log (`tessera fixtures load`, the demo data of `tessera up`, the benchmarks' data).

#![allow(clippy::print_stdout)] // It reports what it loaded.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use indicatif::{ProgressBar, ProgressStyle};

use super::db::Database;

/// What to generate.
#[derive(Debug, Clone)]
pub struct FixtureLoad {
    /// tiny | small | medium | large
    pub scale: String,
    pub seed: u64,
    /// Last day of the history (slots run 90 days past it). Default: today.
    pub until: Option<NaiveDate>,
    /// Append every command straight to PostgreSQL instead of staging the log in memory.
    pub direct: bool,
    /// No progress bar and no summary line.
    pub quiet: bool,
}

/// Generates history through the command handlers into an empty log.
pub async fn load_fixtures(
    db: &Database,
    args: &FixtureLoad,
) -> anyhow::Result<tessera_fixtures::Summary> {
    let quiet = args.quiet;
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
    let master_key = db.master_key().map(str::to_owned);
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
