//! `tessera store …`: the size and make-up of the log.

#![allow(clippy::print_stdout)] // A command line prints its answers.

use anyhow::Context;

use crate::startup::db::Database;

#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Size of the log: events, streams, head position, per category and per type.
    Stats,
}

/// `tessera store …`.
pub async fn run(db: &Database, command: &StoreCommand) -> anyhow::Result<()> {
    match command {
        StoreCommand::Stats => store_stats(db).await,
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
