//! `tessera bench store`: the event store against raw PostgreSQL.
//!
//! Workloads (defaults from the foundation issue):
//! - W1: 8 concurrent writers, 1 event per append, 4,000 streams x 10 events, exact expected versions;
//! - W2: the same with 10 events per append;
//! - W3: read the whole global log in order and decode every event (payload parsed to JSON),
//!   through a subscription from the start (the projectors' catch-up path);
//! - W4: load 1,000 random streams.
//!
//! The baseline writes the same rows into a table with the same columns, constraints and indexes
//! (`LIKE events INCLUDING ALL`, positions from an identity column) with plain autocommit
//! INSERTs (one row per statement in W1, one 10-row statement in W2), and reads them back with
//! plain SELECTs. Each round truncates both tables and CHECKPOINTs before each side runs; the
//! median of the rounds is reported.

#![allow(clippy::print_stdout)] // Benchmarks print their results.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use rand::seq::SliceRandom;
use serde_json::json;
use sqlx::postgres::PgPool;
use sqlx::{Executor, QueryBuilder};
use tessera_log::store::{
    EventMetadata, EventStore, ExpectedVersion, NewEvent, PgEventStore, PgStoreOptions, Position,
    StreamId, StreamRead, StreamWrite,
};
use uuid::Uuid;

use crate::startup::db::{Database, DbConfig};

#[derive(Debug, Clone, clap::Args)]
pub struct StoreBenchArgs {
    /// Concurrent writers in W1 and W2.
    #[arg(long, default_value_t = 8)]
    pub writers: usize,
    /// Streams written in W1 and W2.
    #[arg(long, default_value_t = 4_000)]
    pub streams: usize,
    /// Events per stream.
    #[arg(long, default_value_t = 10)]
    pub events_per_stream: usize,
    /// Streams loaded in W4.
    #[arg(long, default_value_t = 1_000)]
    pub loads: usize,
    /// Passes over the log in W3.
    #[arg(long, default_value_t = 5)]
    pub read_passes: usize,
    /// Rounds of every workload; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

/// One workload's result: rates of the store and of the baseline (per second).
#[derive(Debug, Clone)]
struct Measured {
    name: &'static str,
    unit: &'static str,
    store: f64,
    baseline: f64,
    target: f64,
}

pub async fn run(config: &DbConfig, args: &StoreBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.writers > 0 && args.streams >= args.writers,
        "need at least one stream per writer"
    );
    anyhow::ensure!(
        args.events_per_stream > 0 && args.rounds > 0,
        "nothing to measure"
    );
    let mut config = config.clone();
    config.max_connections = (args.writers as u32 + 4).max(12);
    let db = Database::open(&config).await?;
    let result = run_rounds(&db.pool, args).await;
    db.close().await?;
    let results = result?;

    println!(
        "\nEvent store benchmark: {} writers, {} streams x {} events, {} loads, {} read passes, median of {} rounds",
        args.writers,
        args.streams,
        args.events_per_stream,
        args.loads,
        args.read_passes,
        args.rounds
    );
    println!(
        "{:<44} {:>14} {:>14} {:>7} {:>7}  verdict",
        "workload", "tessera", "baseline", "ratio", "target"
    );
    for m in &results {
        let ratio = m.store / m.baseline;
        println!(
            "{:<44} {:>10.0} {:<3} {:>10.0} {:<3} {:>6.2}x {:>6.2}x  {}",
            m.name,
            m.store,
            m.unit,
            m.baseline,
            m.unit,
            ratio,
            m.target,
            if ratio >= m.target { "met" } else { "MISSED" }
        );
    }
    Ok(())
}

async fn run_rounds(pool: &PgPool, args: &StoreBenchArgs) -> anyhow::Result<Vec<Measured>> {
    pool.execute(
        "CREATE TABLE IF NOT EXISTS bench_baseline (LIKE events INCLUDING ALL);
         DO $$ BEGIN
           IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                           WHERE table_name = 'bench_baseline' AND column_name = 'position'
                             AND is_identity = 'YES') THEN
             ALTER TABLE bench_baseline ALTER COLUMN position ADD GENERATED ALWAYS AS IDENTITY;
           END IF;
         END $$;",
    )
    .await
    .context("cannot create the baseline table")?;

    let mut rounds: Vec<Vec<Measured>> = Vec::new();
    for round in 1..=args.rounds {
        eprintln!("round {round}/{}", args.rounds);
        let mut measured = Vec::new();
        for per_append in [1, args.events_per_stream] {
            let plan = WritePlan::new(args, per_append);
            reset(pool).await?;
            let baseline = time(|| baseline_write(pool, &plan)).await?;
            pool.execute("CHECKPOINT").await?;
            let store = PgEventStore::new(pool.clone(), PgStoreOptions::default());
            let ours = time(|| store_write(&store, &plan)).await?;
            let events = plan.total_events() as f64;
            measured.push(Measured {
                name: if per_append == 1 {
                    "W1 append, 8 writers, 1 event/append"
                } else {
                    "W2 append, 8 writers, 10 events/append"
                },
                unit: "ev/s",
                store: events / ours.as_secs_f64(),
                baseline: events / baseline.as_secs_f64(),
                target: if per_append == 1 { 2.0 } else { 0.9 },
            });
        }
        // W3 and W4 read what W2 left in both tables (the same rows).
        let store = PgEventStore::new(pool.clone(), PgStoreOptions::default());
        let total = (args.streams * args.events_per_stream * args.read_passes) as f64;
        let baseline = time(|| baseline_read_all(pool, args.read_passes)).await?;
        let ours = time(|| {
            store_read_all(
                &store,
                args.read_passes,
                args.streams * args.events_per_stream,
            )
        })
        .await?;
        measured.push(Measured {
            name: "W3 read global log + decode",
            unit: "ev/s",
            store: total / ours.as_secs_f64(),
            baseline: total / baseline.as_secs_f64(),
            target: 0.9,
        });
        let mut picks: Vec<usize> = (0..args.streams).collect();
        picks.shuffle(&mut rand::rng());
        picks.truncate(args.loads);
        let names = stream_names(args.streams);
        let baseline = time(|| baseline_load(pool, &names, &picks)).await?;
        let ours = time(|| store_load(&store, &names, &picks)).await?;
        measured.push(Measured {
            name: "W4 load random streams",
            unit: "/s",
            store: picks.len() as f64 / ours.as_secs_f64(),
            baseline: picks.len() as f64 / baseline.as_secs_f64(),
            target: 0.95,
        });
        for m in &measured {
            eprintln!(
                "  {:<44} tessera {:>10.0} {}  baseline {:>10.0} {}  ratio {:.2}",
                m.name,
                m.store,
                m.unit,
                m.baseline,
                m.unit,
                m.store / m.baseline
            );
        }
        rounds.push(measured);
    }
    // Median per workload, of each side separately.
    let mut out = rounds[0].clone();
    for (i, m) in out.iter_mut().enumerate() {
        m.store = median(rounds.iter().map(|r| r[i].store).collect());
        m.baseline = median(rounds.iter().map(|r| r[i].baseline).collect());
    }
    Ok(out)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn time<F, Fut>(f: F) -> anyhow::Result<Duration>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let start = Instant::now();
    f().await?;
    Ok(start.elapsed())
}

async fn reset(pool: &PgPool) -> anyhow::Result<()> {
    pool.execute(
        "TRUNCATE events, bench_baseline RESTART IDENTITY;
         UPDATE log_head SET position = 0, write_token = gen_random_uuid() WHERE id = 1;
         CHECKPOINT;",
    )
    .await
    .context("cannot reset the benchmark tables")?;
    Ok(())
}

fn stream_names(streams: usize) -> Vec<StreamId> {
    (0..streams)
        .map(|k| StreamId::new(format!("bench-{k:06}")).expect("valid id"))
        .collect()
}

/// The appends of W1/W2, split by writer, in the order each writer sends them.
struct WritePlan {
    /// writer -> appends (stream index, first version, events)
    writers: Vec<Vec<(usize, u64, Vec<NewEvent>)>>,
    names: Vec<StreamId>,
}

impl WritePlan {
    fn new(args: &StoreBenchArgs, per_append: usize) -> Self {
        let names = stream_names(args.streams);
        let effective_at: DateTime<Utc> = Utc::now();
        let mut writers = vec![Vec::new(); args.writers];
        // Writer w owns streams w, w + writers, …; it walks them round-robin so consecutive
        // appends hit different streams (as concurrent customers do).
        for (w, appends) in writers.iter_mut().enumerate() {
            let own: Vec<usize> = (w..args.streams).step_by(args.writers).collect();
            let mut version = 0;
            while version < args.events_per_stream {
                let n = per_append.min(args.events_per_stream - version);
                for &k in &own {
                    let events = (0..n)
                        .map(|j| bench_event(k, (version + j + 1) as u64, effective_at))
                        .collect();
                    appends.push((k, version as u64 + 1, events));
                }
                version += n;
            }
        }
        Self { writers, names }
    }

    fn total_events(&self) -> usize {
        self.writers.iter().flatten().map(|(_, _, e)| e.len()).sum()
    }
}

fn bench_event(stream: usize, version: u64, effective_at: DateTime<Utc>) -> NewEvent {
    let booking = Uuid::new_v4();
    NewEvent::new(
        Uuid::new_v4(),
        "BookingHeld",
        1,
        &json!({
            "booking_id": booking,
            "slot_id": Uuid::new_v4(),
            "customer_id": Uuid::new_v4(),
            "seats": 2,
            "price": { "minor": 12_900, "currency": "EUR" },
            "hold_expires_at": "2026-11-22T10:15:00Z",
            "policy": [{ "min_hours": 168, "refund_pct": 100 }, { "min_hours": 48, "refund_pct": 50 }],
            "stream": stream,
            "version": version
        }),
        EventMetadata::new(booking, "user:bench").caused_by(Uuid::new_v4()),
        effective_at,
    )
    .expect("valid event")
}

async fn store_write(store: &PgEventStore, plan: &WritePlan) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    for appends in &plan.writers {
        let store = store.clone();
        let appends: Vec<_> = appends
            .iter()
            .map(|(k, first, events)| (plan.names[*k].clone(), *first, events.clone()))
            .collect();
        tasks.push(tokio::spawn(async move {
            for (stream, first, events) in appends {
                let expected = match first {
                    1 => ExpectedVersion::NoStream,
                    v => ExpectedVersion::Exact(v - 1),
                };
                store
                    .append(vec![StreamWrite::new(stream, expected, events)])
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

async fn baseline_write(pool: &PgPool, plan: &WritePlan) -> anyhow::Result<()> {
    let zero_hash = vec![0u8; 32];
    let recorded_at = Utc::now();
    let mut tasks = Vec::new();
    for appends in &plan.writers {
        let pool = pool.clone();
        let hash = zero_hash.clone();
        let appends: Vec<_> = appends
            .iter()
            .map(|(k, first, events)| (plan.names[*k].clone(), *first, events.clone()))
            .collect();
        tasks.push(tokio::spawn(async move {
            for (stream, first, events) in appends {
                let mut q = QueryBuilder::new(
                    "INSERT INTO bench_baseline (event_id, stream_id, stream_version, event_type, \
                     schema_version, data, correlation_id, causation_id, actor, reason, \
                     recorded_at, effective_at, hash) ",
                );
                q.push_values(events.iter().enumerate(), |mut b, (j, e)| {
                    b.push_bind(e.event_id)
                        .push_bind(stream.as_str().to_owned())
                        .push_bind((first + j as u64) as i64)
                        .push_bind(e.event_type.clone())
                        .push_bind(e.schema_version as i32)
                        .push_bind(e.data().to_owned())
                        .push_unseparated("::json")
                        .push_bind(e.metadata.correlation_id)
                        .push_bind(e.metadata.causation_id)
                        .push_bind(e.metadata.actor.clone())
                        .push_bind(e.metadata.reason.clone())
                        .push_bind(recorded_at)
                        .push_bind(e.effective_at)
                        .push_bind(hash.clone());
                });
                q.build().execute(&pool).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

async fn store_read_all(store: &PgEventStore, passes: usize, events: usize) -> anyhow::Result<()> {
    // The catch-up path every projector uses: a subscription from the start of the log.
    for _ in 0..passes {
        let mut subscription = store.subscribe_all(Position::START).take(events);
        let mut decoded = 0usize;
        while let Some(e) = subscription.next().await {
            let v: serde_json::Value = e?.decode()?;
            decoded += usize::from(v.is_object());
        }
        anyhow::ensure!(decoded == events, "read {decoded} of {events} events");
    }
    Ok(())
}

/// The same decoded shape as [`tessera_log::store::RecordedEvent`], read with one plain query.
#[derive(sqlx::FromRow)]
#[allow(dead_code)] // Fields are decoded to do the same work as the store; not all are read.
struct BaselineRow {
    position: i64,
    event_id: Uuid,
    stream_id: String,
    stream_version: i64,
    event_type: String,
    schema_version: i32,
    data: String,
    correlation_id: Uuid,
    causation_id: Option<Uuid>,
    actor: String,
    reason: Option<String>,
    recorded_at: DateTime<Utc>,
    effective_at: DateTime<Utc>,
    hash: Vec<u8>,
}

const BASELINE_COLUMNS: &str = "position, event_id, stream_id, stream_version, event_type, \
    schema_version, data::text AS data, correlation_id, causation_id, actor, reason, recorded_at, \
    effective_at, hash";

async fn baseline_read_all(pool: &PgPool, passes: usize) -> anyhow::Result<()> {
    let mut decoded = 0usize;
    for _ in 0..passes {
        let mut rows = sqlx::query_as::<_, BaselineRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {BASELINE_COLUMNS} FROM bench_baseline ORDER BY position"
        )))
        .fetch(pool);
        while let Some(row) = rows.try_next().await? {
            let v: serde_json::Value = serde_json::from_str(&row.data)?;
            decoded += usize::from(v.is_object());
        }
    }
    anyhow::ensure!(decoded > 0, "the baseline table was empty");
    Ok(())
}

async fn store_load(
    store: &PgEventStore,
    names: &[StreamId],
    picks: &[usize],
) -> anyhow::Result<()> {
    let store: Arc<dyn EventStore> = Arc::new(store.clone());
    for &k in picks {
        let events = store
            .read_stream(&names[k], StreamRead::Forward { from: 1 }, 1_000)
            .await?;
        anyhow::ensure!(!events.is_empty(), "stream {} is empty", names[k]);
    }
    Ok(())
}

async fn baseline_load(pool: &PgPool, names: &[StreamId], picks: &[usize]) -> anyhow::Result<()> {
    let sql = format!(
        "SELECT {BASELINE_COLUMNS} FROM bench_baseline WHERE stream_id = $1 ORDER BY stream_version LIMIT 1000"
    );
    for &k in picks {
        let rows: Vec<BaselineRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .bind(names[k].as_str())
            .fetch_all(pool)
            .await?;
        anyhow::ensure!(!rows.is_empty(), "stream {} is empty", names[k]);
    }
    Ok(())
}
