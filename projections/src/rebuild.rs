//! Zero-downtime rebuilds: a new generation of each projection is built from position zero
//! beside the active one (which keeps serving and, in a running projector, keeps following the
//! log), then swapped in by one transaction that holds the projection's registry row lock,
//! applies the last events, and re-points the `read` views. Readers see the old model or the
//! new one, never a half-built one.
//!
//! Several projections rebuilt together share one read of the log, decoded once, and each
//! batch is applied to every projection concurrently (one connection each).

use std::sync::Arc;
use std::time::Instant;

use sqlx::{PgConnection, PgPool};
use tessera_log::store::{EventStore, Position};
use tokio::sync::mpsc;

use crate::Projection;
use crate::envelope::Envelope;
use crate::error::ProjectionError;
use crate::registry::{self, Generation};
use crate::runner::{Sink, name_event};

/// Events decoded and handed to the projections at a time.
const CHUNK: usize = 40_000;

/// How far a rebuild is.
#[derive(Debug, Clone, Copy)]
pub struct RebuildProgress {
    pub done: u64,
    pub total: u64,
}

/// What one rebuild did.
#[derive(Debug, Clone)]
pub struct RebuildReport {
    pub projections: Vec<String>,
    pub events: u64,
    pub seconds: f64,
    pub events_per_second: f64,
}

struct Target {
    projection: Projection,
    generation: Generation,
    /// Secondary indexes, created once the bulk of the log is applied.
    indexes: Vec<String>,
    sink: Sink,
    /// Keeps the rebuild lock for as long as the rebuild runs.
    _lock: PgConnection,
}

/// Rebuilds `projections` into new generations and swaps them in.
pub async fn rebuild(
    pool: &PgPool,
    store: Arc<dyn EventStore>,
    projections: &[Projection],
    progress: &(dyn Fn(RebuildProgress) + Sync),
) -> Result<RebuildReport, ProjectionError> {
    let started = Instant::now();
    let mut targets = Vec::new();
    for p in projections {
        registry::ensure_registered(pool, p.name()).await?;
        let mut lock = pool.acquire().await?.detach();
        let got: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext('tessera.rebuild.' || $1))")
                .bind(p.name())
                .fetch_one(&mut lock)
                .await?;
        if !got {
            return Err(ProjectionError::Invalid(format!(
                "a rebuild of {} is already running",
                p.name()
            )));
        }
        // A rebuild that died half-way left a generation nobody will finish.
        registry::drop_unfinished(pool, &mut lock, p).await?;
        let (generation, indexes) = registry::create_generation_deferring(pool, p, true).await?;
        let sink = Sink::open(p, generation.generation).await?;
        targets.push(Target {
            projection: p.clone(),
            generation,
            indexes,
            sink,
            _lock: lock,
        });
    }

    // Reading and decoding run on their own task, ahead of the writes.
    let head = store.head().await?;
    let total = head.0;
    let label = projections
        .iter()
        .map(Projection::name)
        .collect::<Vec<_>>()
        .join(",");
    let (tx, mut rx) = mpsc::channel::<Result<Arc<Vec<Envelope>>, ProjectionError>>(2);
    let reader_store = store.clone();
    let reader = tokio::spawn(async move {
        let mut after = Position(0);
        while after < head {
            let page = match reader_store.read_all(after, CHUNK).await {
                Ok(page) => page,
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            };
            let Some(last) = page.last() else { return };
            after = last.position;
            let decoded: Result<Vec<Envelope>, _> = page
                .into_iter()
                .filter(|e| e.position <= head)
                .map(|e| Envelope::decode(e, &format!("rebuild of {label}")))
                .collect();
            if tx.send(decoded.map(Arc::new)).await.is_err() {
                return;
            }
        }
    });

    // One task per projection, so their CPU work (rows, JSON, tantivy) spreads over the cores;
    // each takes the same decoded chunks through its own bounded queue.
    let mut queues = Vec::new();
    let mut workers = Vec::new();
    for mut t in targets {
        let (queue, mut chunks) = mpsc::channel::<Arc<Vec<Envelope>>>(2);
        queues.push(queue);
        let pool = pool.clone();
        workers.push(tokio::spawn(async move {
            while let Some(chunk) = chunks.recv().await {
                shadow_batch(&pool, &mut t, chunk).await?;
            }
            Ok::<Target, ProjectionError>(t)
        }));
    }
    let mut done = 0u64;
    progress(RebuildProgress { done, total });
    let mut fed = Ok(());
    'feed: while let Some(chunk) = rx.recv().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                fed = Err(e);
                break;
            }
        };
        for queue in &queues {
            if queue.send(chunk.clone()).await.is_err() {
                // That projection's task stopped on an error; it is reported below.
                break 'feed;
            }
        }
        done = chunk.last().map_or(done, |e| e.position.0);
        progress(RebuildProgress { done, total });
    }
    drop(queues);
    drop(rx);
    let mut targets = Vec::new();
    for worker in workers {
        targets.push(
            worker
                .await
                .map_err(|e| ProjectionError::Task(e.to_string()))??,
        );
    }
    fed?;
    reader
        .await
        .map_err(|e| ProjectionError::Task(e.to_string()))?;
    // Secondary indexes in bulk, one projection per connection, before any swap.
    futures::future::try_join_all(targets.iter().map(|t| {
        registry::create_indexes(
            pool,
            t.projection.name(),
            t.generation.generation,
            &t.indexes,
        )
    }))
    .await?;

    for t in targets {
        swap(pool, store.as_ref(), t).await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(RebuildReport {
        projections: projections.iter().map(|p| p.name().to_owned()).collect(),
        events: total,
        seconds,
        events_per_second: total as f64 / seconds.max(1e-9),
    })
}

async fn shadow_batch(
    pool: &PgPool,
    t: &mut Target,
    chunk: Arc<Vec<Envelope>>,
) -> Result<(), ProjectionError> {
    let name = t.projection.name();
    let mut tx = pool.begin().await?;
    // A shadow generation is not served until its swap (which commits synchronously); a crash
    // mid-build leaves a `building` generation that the next rebuild drops. So its batches need
    // not wait for the WAL flush.
    sqlx::query("SET LOCAL synchronous_commit = off")
        .execute(&mut *tx)
        .await?;
    match t
        .sink
        .apply(&mut tx, name, t.generation.generation, &chunk)
        .await
    {
        Ok(()) => {}
        Err(e) if chunk.len() > 1 => {
            drop(tx);
            // Name the event that fails, as the live runner does.
            for one in chunk.iter() {
                let mut tx = pool.begin().await?;
                t.sink
                    .apply(
                        &mut tx,
                        name,
                        t.generation.generation,
                        std::slice::from_ref(one),
                    )
                    .await
                    .map_err(|err| name_event(name, one, err))?;
                tx.commit().await?;
            }
            return Err(e);
        }
        Err(e) => return Err(name_event(name, &chunk[0], e)),
    }
    tx.commit().await?;
    Ok(())
}

/// Catches the new generation up under the registry row lock and makes it the active one.
async fn swap(pool: &PgPool, store: &dyn EventStore, mut t: Target) -> Result<(), ProjectionError> {
    let name = t.projection.name();
    let generation = t.generation.generation;
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT 1 FROM projections WHERE name = $1 FOR UPDATE")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    // Writers keep appending; the head read now bounds the catch-up under the lock, and the
    // live projector continues from the new generation's checkpoint after the swap.
    let head = store.head().await?;
    let mut after = t.sink.position(pool, name, generation).await?;
    while after < head {
        let page = store.read_all(after, CHUNK).await?;
        let Some(last) = page.last().map(|e| e.position) else {
            break;
        };
        let batch: Vec<Envelope> = page
            .into_iter()
            .filter(|e| e.position <= head)
            .map(|e| Envelope::decode(e, name))
            .collect::<Result<_, _>>()?;
        t.sink.apply(&mut tx, name, generation, &batch).await?;
        after = last;
    }
    let retired = registry::activate(&mut tx, &t.projection, generation).await?;
    // The search index writer must be released before the live projector opens it.
    drop(t.sink);
    tx.commit().await?;
    if let Some(old) = retired {
        registry::drop_generation(pool, &t.projection, old).await?;
    }
    tracing::info!(projection = name, generation, "rebuilt generation is live");
    Ok(())
}
