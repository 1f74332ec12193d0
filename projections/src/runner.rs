//! The projector runtime: one task per projection, each with a lease so that exactly one
//! process applies a projection at a time, catching up then following the log live.
//!
//! Exactly-once effect: a batch's read-model changes and the generation's checkpoint commit in
//! one transaction, which first locks the projection's registry row and checks that this
//! instance still owns it (a fencing token: a process that lost its lease cannot commit) and
//! that the generation is still the active one (a rebuild may have swapped in a new one).
//! Events at or below the checkpoint read inside that transaction are skipped, so a replayed
//! subscription never applies an event twice.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use sqlx::{PgConnection, PgPool};
use tessera_log::store::{EventStore, Position};
use tokio::sync::{Mutex, watch};
use uuid::Uuid;

use crate::envelope::Envelope;
use crate::error::ProjectionError;
use crate::registry::{self, Generation, schema_name};
use crate::search::SearchWriter;
use crate::{Projection, SqlProjection};

#[derive(Debug, Clone)]
pub struct ProjectorOptions {
    /// Most events applied in one transaction.
    pub batch_size: usize,
    /// Least time between the starts of two live batches. An event that arrives after a quiet
    /// spell is applied at once; under load, the events that arrive meanwhile wait and go into
    /// one batch, so a projection commits (and notifies, and re-reads the log) at most this
    /// often instead of once per append. Zero applies every wake-up on its own.
    pub batch_interval: Duration,
    /// Least time between two live commits of a search index (at least `batch_interval`).
    /// A commit writes a segment and syncs it to disk, so an index follows a busy log in
    /// fewer, larger commits than the SQL read models; after a quiet spell it commits at once.
    pub index_interval: Duration,
    /// How often a standby instance tries to take a lease over.
    pub lease_poll: Duration,
    /// A human-readable name of this process (host and pid), shown in status.
    pub label: String,
}

impl Default for ProjectorOptions {
    fn default() -> Self {
        Self {
            batch_size: 2_000,
            batch_interval: Duration::from_millis(20),
            index_interval: Duration::from_millis(250),
            lease_poll: Duration::from_millis(500),
            label: format!("pid {}", std::process::id()),
        }
    }
}

/// Runs a set of projections in this process.
#[derive(Debug, Clone)]
pub struct Projector {
    pool: PgPool,
    store: Arc<dyn EventStore>,
    projections: Vec<Projection>,
    options: ProjectorOptions,
    instance: Uuid,
}

/// What a live batch found when it tried to commit.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Applied,
    /// Another instance owns the projection now.
    Fenced,
    /// A rebuild made another generation active.
    Switched,
}

/// Where a projection's events go: a PostgreSQL schema or a search index directory.
pub(crate) enum Sink {
    Sql(Arc<dyn SqlProjection>),
    /// Moved into a blocking task while it commits; `None` only during that time.
    Search(Option<Box<SearchWriter>>),
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sql(p) => write!(f, "Sink::Sql({})", p.name()),
            Self::Search(_) => f.write_str("Sink::Search"),
        }
    }
}

impl Sink {
    pub(crate) async fn open(p: &Projection, generation: i64) -> Result<Self, ProjectionError> {
        Ok(match p {
            Projection::Sql(s) => Self::Sql(s.clone()),
            Projection::Search(s) => {
                let s = s.clone();
                let w = tokio::task::spawn_blocking(move || s.open_writer(generation))
                    .await
                    .map_err(|e| ProjectionError::Index(e.to_string()))??;
                Self::Search(Some(Box::new(w)))
            }
        })
    }

    /// Applies `batch` to the generation inside `tx` (the SQL changes join the transaction;
    /// the search index commits its own checkpoint before the caller commits `tx`). Events at
    /// or below the generation's checkpoint are skipped.
    pub(crate) async fn apply(
        &mut self,
        tx: &mut PgConnection,
        name: &str,
        generation: i64,
        batch: &[Envelope],
    ) -> Result<(), ProjectionError> {
        match self {
            Self::Sql(p) => {
                // The checkpoint, locked, and the generation's schema first on the search path
                // (for this transaction), in one round trip.
                let (at, _): (i64, String) = sqlx::query_as(
                    "SELECT position, set_config('search_path', $3, true) \
                     FROM public.projection_generations \
                     WHERE name = $1 AND generation = $2 FOR UPDATE",
                )
                .bind(name)
                .bind(generation)
                .bind(format!("{}, public", schema_name(name, generation)))
                .fetch_one(&mut *tx)
                .await?;
                // Batches are in log order: the fresh events are a suffix (no copies).
                let fresh = &batch[batch.partition_point(|e| e.pos() <= at)..];
                let Some(last) = fresh.last().map(Envelope::pos) else {
                    sqlx::query("SELECT set_config('search_path', 'public', true)")
                        .execute(&mut *tx)
                        .await?;
                    return Ok(());
                };
                p.apply(tx, fresh).await?;
                // The search path back before the checkpoint's statement: PostgreSQL plans a
                // prepared statement again whenever the search path differs from the last time,
                // and a connection serves every projection in turn.
                sqlx::query("SELECT set_config('search_path', 'public', true)")
                    .execute(&mut *tx)
                    .await?;
                set_position(tx, name, generation, last).await?;
            }
            Self::Search(slot) => {
                let mut w = slot.take().ok_or_else(|| {
                    ProjectionError::Index("search writer lost after a failed commit".into())
                })?;
                let fresh: Vec<Envelope> = batch
                    .iter()
                    .filter(|e| e.position > w.position())
                    .cloned()
                    .collect();
                let Some(last) = fresh.last().map(Envelope::pos) else {
                    *slot = Some(w);
                    return Ok(());
                };
                // The index commit carries its checkpoint; the registry row mirrors it for status.
                let (w, applied) = tokio::task::spawn_blocking(move || {
                    let r = w.apply(&fresh);
                    (w, r)
                })
                .await
                .map_err(|e| ProjectionError::Index(e.to_string()))?;
                *slot = Some(w);
                applied?;
                set_position(tx, name, generation, last).await?;
            }
        }
        Ok(())
    }

    /// The generation's checkpoint as this sink sees it.
    pub(crate) async fn position(
        &self,
        pool: &PgPool,
        name: &str,
        generation: i64,
    ) -> Result<Position, ProjectionError> {
        match self {
            Self::Sql(_) => {
                let mut conn = pool.acquire().await?;
                let g = registry::generation(&mut conn, name, generation).await?;
                Ok(Position(g.map_or(0, |g| g.position) as u64))
            }
            Self::Search(w) => Ok(w.as_ref().map_or(Position(0), |w| w.position())),
        }
    }
}

async fn set_position(
    tx: &mut PgConnection,
    name: &str,
    generation: i64,
    position: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE projection_generations SET position = $3 WHERE name = $1 AND generation = $2",
    )
    .bind(name)
    .bind(generation)
    .bind(position)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Whether an error comes from the event being applied (the database refused what the
/// projection wrote) rather than from the infrastructure (a lost connection), which is retried.
fn caused_by_event(e: &ProjectionError) -> bool {
    matches!(
        e,
        ProjectionError::Event { .. }
            | ProjectionError::Index(_)
            | ProjectionError::Invalid(_)
            | ProjectionError::Database(
                sqlx::Error::Database(_) | sqlx::Error::Decode(_) | sqlx::Error::Encode(_)
            )
    )
}

impl Projector {
    pub fn new(
        pool: PgPool,
        store: Arc<dyn EventStore>,
        projections: Vec<Projection>,
        options: ProjectorOptions,
    ) -> Self {
        Self {
            pool,
            store,
            projections,
            options,
            instance: Uuid::new_v4(),
        }
    }

    pub fn instance(&self) -> Uuid {
        self.instance
    }

    /// Runs every projection until `shutdown` turns true.
    pub async fn run(self, shutdown: watch::Receiver<bool>) -> Result<(), ProjectionError> {
        let lease = Arc::new(Mutex::new(None::<PgConnection>));
        let mut tasks = tokio::task::JoinSet::new();
        for p in self.projections.clone() {
            registry::ensure_registered(&self.pool, p.name()).await?;
            let this = self.clone();
            let lease = lease.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move { this.run_one(p, lease, shutdown).await });
        }
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = done {
                tracing::error!(error = %e, "projection task panicked");
            }
        }
        // Closing the lease connection releases every advisory lock this process held.
        if let Some(conn) = lease.lock().await.take() {
            let _ = sqlx::Connection::close(conn).await;
        }
        Ok(())
    }

    async fn try_lease(
        &self,
        lease: &Mutex<Option<PgConnection>>,
        name: &str,
    ) -> Result<bool, ProjectionError> {
        let mut guard = lease.lock().await;
        if guard.is_none() {
            *guard = Some(self.pool.acquire().await?.detach());
        }
        let conn = guard.as_mut().expect("just set");
        let got = sqlx::query_scalar::<_, bool>(
            "SELECT pg_try_advisory_lock(hashtext('tessera.projection.' || $1))",
        )
        .bind(name)
        .fetch_one(&mut *conn)
        .await;
        match got {
            Ok(got) => Ok(got),
            Err(e) => {
                // A broken lease connection held nothing any more; start afresh next time.
                *guard = None;
                Err(e.into())
            }
        }
    }

    async fn run_one(
        &self,
        p: Projection,
        lease: Arc<Mutex<Option<PgConnection>>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let name = p.name();
        let failed = metrics::gauge!("tessera_projection_failed", "projection" => name);
        failed.set(0.0);
        loop {
            if *shutdown.borrow() {
                return;
            }
            match self.try_lease(&lease, name).await {
                Ok(true) => {
                    tracing::info!(projection = name, instance = %self.instance, "projection lease acquired; this instance applies it");
                    match self.run_active(&p, &mut shutdown).await {
                        Ok(()) => {}
                        Err(e) if caused_by_event(&e) => {
                            failed.set(1.0);
                            tracing::error!(projection = name, error = %e, "projection stopped");
                            if let Err(db) = registry::record_failure(&self.pool, name, &e).await {
                                tracing::error!(projection = name, error = %db, "could not record the failure");
                            }
                            // Stay stopped (and keep the lease, so no other process trips on the
                            // same event) until this process is restarted.
                            let _ = shutdown.wait_for(|s| *s).await;
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(projection = name, error = %e, "projection interrupted; retrying");
                        }
                    }
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(projection = name, error = %e, "lease check failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.options.lease_poll) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    /// Holds the lease: takes ownership, makes sure the active generation is current, then
    /// applies batches until shut down, fenced, or failed.
    async fn run_active(
        &self,
        p: &Projection,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), ProjectionError> {
        let name = p.name();
        sqlx::query(
            "UPDATE projections SET owner = $2, owner_label = $3, state = 'live', error = NULL,
                    error_position = NULL, error_event_type = NULL, updated_at = now()
             WHERE name = $1",
        )
        .bind(name)
        .bind(self.instance)
        .bind(&self.options.label)
        .execute(&self.pool)
        .await?;
        'generation: loop {
            let active = self.current_generation(p).await?;
            let mut sink = Sink::open(p, active.generation).await?;
            let start = sink.position(&self.pool, name, active.generation).await?;
            let mut events = self
                .store
                .subscribe_all(start)
                .ready_chunks(self.options.batch_size);
            let head_gauge = metrics::gauge!("tessera_projection_position", "projection" => name);
            // When the next batch may start: set after a batch that was not full (a full one
            // means the projection is behind, and catching up never waits).
            let mut next_batch: Option<tokio::time::Instant> = None;
            let interval = match p {
                Projection::Sql(_) => self.options.batch_interval,
                Projection::Search(_) => {
                    self.options.batch_interval.max(self.options.index_interval)
                }
            };
            loop {
                if let Some(at) = next_batch.take() {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        _ = shutdown.wait_for(|s| *s) => return Ok(()),
                    }
                }
                let chunk = tokio::select! {
                    c = events.next() => c,
                    _ = shutdown.wait_for(|s| *s) => return Ok(()),
                };
                let Some(chunk) = chunk else { return Ok(()) };
                let started = tokio::time::Instant::now();
                let full = chunk.len() >= self.options.batch_size;
                let mut batch = Vec::with_capacity(chunk.len());
                for e in chunk {
                    batch.push(Envelope::decode(e?, name)?);
                }
                match self
                    .live_batch(p, &mut sink, active.generation, &batch)
                    .await?
                {
                    Outcome::Applied => {}
                    Outcome::Fenced => {
                        tracing::warn!(
                            projection = name,
                            "another instance owns this projection now"
                        );
                        return Ok(());
                    }
                    Outcome::Switched => continue 'generation,
                }
                if let Some(last) = batch.last() {
                    head_gauge.set(last.position.0 as f64);
                    self.record_lag(name, last).await;
                }
                if !full {
                    next_batch = Some(started + interval);
                }
            }
        }
    }

    async fn record_lag(&self, name: &'static str, last: &Envelope) {
        if let Ok(head) = self.store.head().await {
            let behind = head.0.saturating_sub(last.position.0);
            metrics::gauge!("tessera_projection_lag_events", "projection" => name)
                .set(behind as f64);
            let seconds = if behind == 0 {
                0.0
            } else {
                (chrono::Utc::now() - last.recorded_at)
                    .num_milliseconds()
                    .max(0) as f64
                    / 1000.0
            };
            metrics::gauge!("tessera_projection_lag_seconds", "projection" => name).set(seconds);
        }
    }

    /// The active generation, created on first start, rebuilt in a new generation when the
    /// projection's code version changed (the old one keeps serving meanwhile).
    async fn current_generation(&self, p: &Projection) -> Result<Generation, ProjectionError> {
        let mut conn = self.pool.acquire().await?;
        match registry::active(&mut conn, p.name()).await? {
            Some(g) if g.code_version == i32::try_from(p.version()).unwrap_or(i32::MAX) => Ok(g),
            Some(g) => {
                tracing::info!(
                    projection = p.name(),
                    from = g.code_version,
                    to = p.version(),
                    "code version changed; rebuilding in a new generation"
                );
                drop(conn);
                crate::rebuild::rebuild(
                    &self.pool,
                    self.store.clone(),
                    std::slice::from_ref(p),
                    &|_| {},
                )
                .await?;
                let mut conn = self.pool.acquire().await?;
                registry::active(&mut conn, p.name()).await?.ok_or_else(|| {
                    ProjectionError::Task(format!(
                        "{} has no active generation after its rebuild",
                        p.name()
                    ))
                })
            }
            None => {
                // The first generation: nothing is served yet, so it becomes active at once and
                // catches up in place (queries wait on positions meanwhile).
                drop(conn);
                self.drop_abandoned_first_generation(p).await?;
                let g = registry::create_generation(&self.pool, p).await?;
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT 1 FROM projections WHERE name = $1 FOR UPDATE")
                    .bind(p.name())
                    .execute(&mut *tx)
                    .await?;
                let current = registry::active(&mut tx, p.name()).await?;
                if let Some(current) = current {
                    // Another instance got there first.
                    drop(tx);
                    registry::drop_generation(&self.pool, p, g.generation).await?;
                    return Ok(current);
                }
                registry::activate(&mut tx, p, g.generation).await?;
                tx.commit().await?;
                let mut conn = self.pool.acquire().await?;
                registry::active(&mut conn, p.name())
                    .await?
                    .ok_or_else(|| ProjectionError::Task("activation vanished".into()))
            }
        }
    }

    /// A first start killed between creating its generation and activating it left that
    /// generation `building`, and nobody will finish it: drops it, unless a rebuild (which
    /// holds the rebuild lease while it builds) is working on it.
    async fn drop_abandoned_first_generation(&self, p: &Projection) -> Result<(), ProjectionError> {
        // Its own connection, closed afterwards: a session lock must not go back to the pool.
        let mut lock = self.pool.acquire().await?.detach();
        let got: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext('tessera.rebuild.' || $1))")
                .bind(p.name())
                .fetch_one(&mut lock)
                .await?;
        if !got {
            return Ok(());
        }
        registry::drop_unfinished(&self.pool, &mut lock, p).await?;
        sqlx::Connection::close(lock).await?;
        Ok(())
    }

    /// One batch under the registry row lock, with fencing; a failing batch is retried event
    /// by event so that the failure names the event that caused it.
    async fn live_batch(
        &self,
        p: &Projection,
        sink: &mut Sink,
        generation: i64,
        batch: &[Envelope],
    ) -> Result<Outcome, ProjectionError> {
        match self.live_batch_once(p, sink, generation, batch).await {
            Err(ProjectionError::Event {
                projection,
                position,
                event_type,
                reason,
            }) if batch.len() > 1 => {
                // Everything before the failing event is applied; the projection stops on it.
                let before: Vec<Envelope> = batch
                    .iter()
                    .filter(|e| e.position < position)
                    .cloned()
                    .collect();
                if !before.is_empty() {
                    match self.live_batch_once(p, sink, generation, &before).await? {
                        Outcome::Applied => {}
                        other => return Ok(other),
                    }
                }
                Err(ProjectionError::Event {
                    projection,
                    position,
                    event_type,
                    reason,
                })
            }
            Err(e) if caused_by_event(&e) && batch.len() > 1 => {
                for one in batch {
                    match self
                        .live_batch_once(p, sink, generation, std::slice::from_ref(one))
                        .await
                    {
                        Ok(Outcome::Applied) => {}
                        Ok(other) => return Ok(other),
                        Err(e) => return Err(name_event(p.name(), one, e)),
                    }
                }
                Ok(Outcome::Applied)
            }
            Err(e) if batch.len() == 1 => Err(name_event(p.name(), &batch[0], e)),
            other => other,
        }
    }

    async fn live_batch_once(
        &self,
        p: &Projection,
        sink: &mut Sink,
        generation: i64,
        batch: &[Envelope],
    ) -> Result<Outcome, ProjectionError> {
        let mut tx = self.pool.begin().await?;
        // The batch commits without waiting for its WAL flush (`synchronous_commit = off`, for
        // this transaction only): the read model and its checkpoint commit together, so a crash
        // that loses the commit loses both, and the projector applies the batch again from the
        // log, which is flushed before any command is acknowledged. The API's commits then stop
        // queueing behind the read side's flushes.
        let (owner, active, _): (Option<Uuid>, Option<i64>, String) = sqlx::query_as(
            "SELECT owner, active_generation, set_config('synchronous_commit', 'off', true) \
             FROM projections WHERE name = $1 FOR UPDATE",
        )
        .bind(p.name())
        .fetch_one(&mut *tx)
        .await?;
        if owner != Some(self.instance) {
            return Ok(Outcome::Fenced);
        }
        if active != Some(generation) {
            return Ok(Outcome::Switched);
        }
        sink.apply(&mut tx, p.name(), generation, batch).await?;
        // Wakes API processes waiting for this projection to pass a position (read-your-writes),
        // telling them the position, so that they need not read it.
        if let Some(last) = batch.last() {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(crate::registry::PROGRESS_CHANNEL)
                .bind(crate::registry::progress_payload(
                    p.name(),
                    Some(last.position),
                ))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Outcome::Applied)
    }
}

/// Turns an event-caused storage error into one that names the event.
pub(crate) fn name_event(projection: &str, e: &Envelope, err: ProjectionError) -> ProjectionError {
    match err {
        ProjectionError::Event { .. } => err,
        other if caused_by_event(&other) => ProjectionError::Event {
            projection: projection.to_owned(),
            position: e.position,
            event_type: e.event_type.clone(),
            reason: other.to_string(),
        },
        other => other,
    }
}
