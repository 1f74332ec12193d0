//! `tessera bench rebuild`: a full rebuild of every read model and the search index over generated
//! history, against a raw `COPY` of the same number of log rows into a table like `events`
//! (measured in the same run, on the same database). Target: at least 0.5x the COPY rate.

#![allow(clippy::print_stdout)] // Benchmarks print their results.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use futures::TryStreamExt;

use crate::startup::db::{Database, DbConfig};

#[derive(Debug, Clone, clap::Args)]
pub struct RebuildBenchArgs {
    /// Fixture scale generated into the bench database when it is empty.
    #[arg(long, default_value = "medium")]
    pub scale: String,
    /// The history must hold at least this many events.
    #[arg(long, default_value_t = 200_000)]
    pub min_events: u64,
    /// Rounds of each side; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Rebuild only these projections (all when omitted), to see where the time goes.
    #[arg(long = "only", value_name = "NAME")]
    pub only: Vec<String>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub async fn run(
    config: &DbConfig,
    data_dir: &Path,
    args: &RebuildBenchArgs,
) -> anyhow::Result<()> {
    let db = Database::open(config).await?;
    let result = bench(&db, data_dir, args).await;
    db.close().await?;
    result
}

async fn bench(db: &Database, data_dir: &Path, args: &RebuildBenchArgs) -> anyhow::Result<()> {
    let mut head: i64 = sqlx::query_scalar("SELECT position FROM log_head WHERE id = 1")
        .fetch_one(&db.pool)
        .await?;
    if head == 0 {
        let started = Instant::now();
        let fixtures = crate::startup::FixtureLoad {
            scale: args.scale.clone(),
            seed: 42,
            until: None,
            direct: false,
            quiet: false,
        };
        crate::startup::load_fixtures(db, &fixtures).await?;
        head = sqlx::query_scalar("SELECT position FROM log_head WHERE id = 1")
            .fetch_one(&db.pool)
            .await?;
        let s = started.elapsed().as_secs_f64();
        println!(
            "generated {head} events through the command handlers in {s:.1} s ({:.0} events/s)",
            head as f64 / s
        );
    }
    let events = u64::try_from(head).unwrap_or(0);
    if events < args.min_events {
        anyhow::bail!(
            "the bench database holds {events} events, fewer than {}: drop database {} or pass a larger --scale on an empty one",
            args.min_events,
            config_name(db)
        );
    }
    let index_root = data_dir.join("bench-index");
    let projections =
        tessera_projections::select(tessera_projections::all(&index_root), &args.only)?;
    let store = crate::startup::store(db).await?;

    // The baseline's input, read once before any timing.
    let mut conn = db.pool.acquire().await?;
    let chunks: Vec<_> = conn
        .copy_out_raw("COPY (SELECT * FROM events ORDER BY position) TO STDOUT")
        .await?
        .try_collect()
        .await?;
    drop(conn);
    sqlx::raw_sql(
        "DROP TABLE IF EXISTS bench_copy; CREATE TABLE bench_copy (LIKE events INCLUDING ALL)",
    )
    .execute(&db.pool)
    .await?;

    let (mut rebuild_rates, mut copy_rates) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds.max(1) {
        sqlx::query("CHECKPOINT").execute(&db.pool).await?;
        let report = tessera_projections::rebuild(&db.pool, store.clone(), &projections, &|_| {})
            .await
            .context("rebuild")?;
        rebuild_rates.push(report.events_per_second);

        sqlx::raw_sql("TRUNCATE bench_copy; CHECKPOINT")
            .execute(&db.pool)
            .await?;
        let mut conn = db.pool.acquire().await?;
        let started = Instant::now();
        let mut copy = conn.copy_in_raw("COPY bench_copy FROM STDIN").await?;
        for chunk in &chunks {
            copy.send(chunk.as_ref()).await?;
        }
        let rows = copy.finish().await?;
        let s = started.elapsed().as_secs_f64();
        copy_rates.push(rows as f64 / s);
        println!(
            "round {round}: rebuild {:.0} events/s ({:.1} s), COPY {:.0} rows/s ({s:.2} s)",
            report.events_per_second,
            report.seconds,
            rows as f64 / s
        );
    }
    let (rebuild, copy) = (median(rebuild_rates), median(copy_rates));
    let ratio = rebuild / copy;
    println!();
    println!(
        "| history | rebuild (all read models + search) | raw COPY baseline | ratio | target | result |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| {events} events | {rebuild:.0} events/s | {copy:.0} rows/s | {ratio:.2}x | 0.5x | {} |",
        if ratio >= 0.5 { "met" } else { "missed" }
    );
    Ok(())
}

fn config_name(db: &Database) -> String {
    db.options
        .get_database()
        .unwrap_or("tessera_bench_rebuild")
        .to_owned()
}
