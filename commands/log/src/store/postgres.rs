//! The PostgreSQL event store: the production adapter.
//!
//! Global order (ADR 0001): every append transaction first locks the single row of `log_head`
//! and holds it until commit, and assigns positions `head + 1, head + 2, …` itself. Transactions
//! that write events therefore commit strictly in position order, so a reader that has seen
//! position `p` can never later see a position below `p` appear, and positions are dense (a gap is
//! evidence of deletion). The price, serialised writers, is paid back by **group commit**: all
//! appends that arrive while a transaction is in flight are planned and written together in the
//! next one, with a single commit (and a single WAL flush) for all of them.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::hash::Hash;
use super::plan::{Planned, Planner, StreamHead, validate};
use super::subscription::{Window, follow_tail};
use super::{
    AppendResult, Capabilities, EventMetadata, EventStore, EventSubscription, ExpectedVersion,
    Position, RecordedEvent, StoreError, StreamId, StreamRead, StreamWrite,
};
use crate::clock::{Clock, SystemClock};

/// The NOTIFY channel that wakes subscribers after a commit. It carries no data.
pub const NOTIFY_CHANNEL: &str = "tessera_events";

/// Tuning of the PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgStoreOptions {
    /// Most events written in one group-commit transaction.
    pub max_batch_events: usize,
    /// Appends that may wait for the writer before callers are held back (back-pressure).
    pub queue_capacity: usize,
    /// How often an idle subscription re-reads when no notification arrives.
    pub poll_interval: Duration,
    /// Events a subscription reads per page.
    pub page_size: usize,
    /// Most recent events kept in the tail window that live subscriptions share; one further
    /// behind reads the store until it is back within the window.
    pub tail_events: usize,
    /// Stamps `recorded_at` (the wall clock unless a test or the fixture generator says otherwise).
    pub clock: Arc<dyn Clock>,
}

impl Default for PgStoreOptions {
    fn default() -> Self {
        Self {
            max_batch_events: 4_000,
            queue_capacity: 4_096,
            poll_interval: Duration::from_millis(500),
            page_size: 5_000,
            tail_events: 16_384,
            clock: Arc::new(SystemClock),
        }
    }
}

/// The PostgreSQL event store. Cloning shares the pool and the writer.
#[derive(Clone)]
pub struct PgEventStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    options: PgStoreOptions,
    jobs: mpsc::Sender<Job>,
    wake: Arc<watch::Sender<()>>,
    listener: Mutex<Option<JoinHandle<()>>>,
    /// The tail reader, once a subscription started it, and its window.
    tail: Mutex<Option<TailReader>>,
}

type TailReader = (JoinHandle<()>, watch::Receiver<Arc<Window>>);

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self
            .listener
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
        if let Some((task, _)) = self
            .tail
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

impl fmt::Debug for PgEventStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgEventStore")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

struct Job {
    writes: Vec<StreamWrite>,
    reply: oneshot::Sender<Result<AppendResult, StoreError>>,
}

impl Job {
    fn event_count(&self) -> usize {
        self.writes.iter().map(|w| w.events.len()).sum()
    }
}

impl PgEventStore {
    /// Creates the store over a migrated database and starts its writer task.
    pub fn new(pool: PgPool, options: PgStoreOptions) -> Self {
        let (jobs, rx) = mpsc::channel(options.queue_capacity);
        let wake = Arc::new(watch::Sender::new(()));
        tokio::spawn(run_writer(
            pool.clone(),
            rx,
            Arc::clone(&wake),
            options.max_batch_events,
            Arc::clone(&options.clock),
        ));
        Self {
            inner: Arc::new(Inner {
                pool,
                options,
                jobs,
                wake,
                listener: Mutex::new(None),
                tail: Mutex::new(None),
            }),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// Copies events another store has already planned (same planner: versions, positions
    /// continuing this log's head, hash chain, `recorded_at`) into this log in one guarded
    /// statement: it writes only if the log is still exactly at the head it read, and the
    /// positions must continue that head without a gap. For a single writer that staged a whole
    /// history elsewhere (the fixture loader); returns the new head.
    pub async fn import(&self, events: Vec<RecordedEvent>) -> Result<Position, StoreError> {
        let Some(last) = events.last().map(|e| e.position) else {
            return self.head().await;
        };
        let (head, token): (i64, Uuid) =
            sqlx::query_as("SELECT position, write_token FROM log_head WHERE id = 1")
                .fetch_one(&self.inner.pool)
                .await?;
        let from = Position(head as u64);
        if let Some((i, e)) = events
            .iter()
            .enumerate()
            .find(|(i, e)| e.position.0 != from.0 + 1 + *i as u64)
        {
            return Err(StoreError::InvalidAppend {
                reason: format!(
                    "imported event {i} has position {}, but the log head is {from}",
                    e.position
                ),
            });
        }
        let mut rows = Columns::default();
        for e in events {
            rows.push(e);
        }
        let write = GroupWrite {
            rows,
            from: (from, token),
            to: (last, Uuid::new_v4()),
        };
        if !write.execute(&self.inner.pool).await? {
            return Err(StoreError::InvalidAppend {
                reason: format!("the log moved past {from} while importing"),
            });
        }
        Ok(last)
    }

    /// Starts (once) the tail reader; returns a receiver of its window.
    fn ensure_tail(&self) -> watch::Receiver<Arc<Window>> {
        let mut guard = self
            .inner
            .tail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (_, window) = guard.get_or_insert_with(|| {
            let (publish, window) = watch::channel(Arc::new(Window::default()));
            let task = tokio::spawn(read_tail(
                self.inner.pool.clone(),
                self.inner.wake.subscribe(),
                publish,
                self.inner.options.poll_interval,
                self.inner.options.page_size,
                self.inner.options.tail_events,
            ));
            (task, window)
        });
        window.clone()
    }

    /// Starts (once) the task that turns PostgreSQL notifications into wake-ups.
    fn ensure_listener(&self) {
        let mut guard = self
            .inner
            .listener
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if guard.is_none() {
            *guard = Some(tokio::spawn(listen(
                self.inner.pool.clone(),
                Arc::clone(&self.inner.wake),
            )));
        }
    }
}

#[async_trait]
impl EventStore for PgEventStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            atomic_multi_stream: true,
            dense_positions: true,
            log_wide_event_ids: true,
        }
    }

    async fn append(&self, writes: Vec<StreamWrite>) -> Result<AppendResult, StoreError> {
        validate(&writes)?;
        let (reply, answer) = oneshot::channel();
        self.inner
            .jobs
            .send(Job { writes, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        read: StreamRead,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<EventRow> = match read {
            StreamRead::Forward { from } => {
                sqlx::query_as(concat!(
                    "SELECT ",
                    event_columns!(),
                    " FROM events WHERE stream_id = $1 AND stream_version >= $2",
                    " ORDER BY stream_version LIMIT $3"
                ))
                .bind(stream.as_str())
                .bind(to_i64(from))
                .bind(limit)
                .fetch_all(&self.inner.pool)
                .await?
            }
            StreamRead::Backward { from } => {
                sqlx::query_as(concat!(
                    "SELECT ",
                    event_columns!(),
                    " FROM events WHERE stream_id = $1 AND stream_version <= $2",
                    " ORDER BY stream_version DESC LIMIT $3"
                ))
                .bind(stream.as_str())
                .bind(from.map_or(i64::MAX, to_i64))
                .bind(limit)
                .fetch_all(&self.inner.pool)
                .await?
            }
        };
        rows.into_iter().map(EventRow::into_event).collect()
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        read_after(&self.inner.pool, after, limit).await
    }

    fn stream_all(&self, after: Position, limit: usize) -> EventSubscription {
        // One query, one snapshot. That is safe to continue from: events commit in position
        // order, so anything committed after the snapshot has a higher position than all it saw.
        let pool = self.inner.pool.clone();
        Box::pin(async_stream::try_stream! {
            let mut rows = sqlx::query_as::<_, EventRow>(concat!(
                "SELECT ",
                event_columns!(),
                " FROM events WHERE position > $1 ORDER BY position LIMIT $2"
            ))
            .bind(to_i64(after.0))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch(&pool);
            while let Some(row) = futures::TryStreamExt::try_next(&mut rows).await? {
                yield row.into_event()?;
            }
        })
    }

    async fn head(&self) -> Result<Position, StoreError> {
        head(&self.inner.pool).await
    }

    fn subscribe_all(&self, after: Position) -> EventSubscription {
        self.ensure_listener();
        follow_tail(
            self.clone(),
            after,
            self.ensure_tail(),
            self.inner.options.poll_interval,
            self.inner.options.page_size,
        )
    }
}

/// Up to `limit` events of the log after `after`, in order.
async fn read_after(
    pool: &PgPool,
    after: Position,
    limit: usize,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let rows: Vec<EventRow> = sqlx::query_as(concat!(
        "SELECT ",
        event_columns!(),
        " FROM events WHERE position > $1 ORDER BY position LIMIT $2"
    ))
    .bind(to_i64(after.0))
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(EventRow::into_event).collect()
}

async fn head(pool: &PgPool) -> Result<Position, StoreError> {
    let head: i64 = sqlx::query_scalar("SELECT position FROM log_head WHERE id = 1")
        .fetch_one(pool)
        .await?;
    Ok(Position(head as u64))
}

/// The tail reader: one read of the log's new events per wake-up (a commit in this process, a
/// notification from another, or the poll interval), published as a window from which every
/// live subscription of this store takes its events. Without it each subscription ran that
/// same query itself: ten readers of every event on the read side (seven projectors, three
/// reactors). Ends when the store is dropped.
async fn read_tail(
    pool: PgPool,
    mut wake: watch::Receiver<()>,
    publish: watch::Sender<Arc<Window>>,
    poll_interval: Duration,
    page_size: usize,
    tail_events: usize,
) {
    let mut window: Option<Arc<Window>> = None;
    loop {
        wake.borrow_and_update();
        let read = match &window {
            None => head(&pool).await.map(|h| (Arc::new(Window::at(h)), false)),
            Some(w) => read_after(&pool, w.to(), page_size).await.map(|events| {
                let full = events.len() >= page_size;
                (Arc::new(w.extended(events, tail_events)), full)
            }),
        };
        match read {
            Ok((next, full)) => {
                if window.as_ref().is_none_or(|w| w.to() != next.to()) {
                    publish.send_replace(Arc::clone(&next));
                }
                window = Some(next);
                if full {
                    continue;
                }
            }
            Err(error) => tracing::warn!(%error, "reading the log's tail failed; retrying"),
        }
        tokio::select! {
            changed = wake.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(poll_interval) => {}
            () = publish.closed() => return,
        }
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The columns of `events` in the order [`EventRow`] decodes them.
macro_rules! event_columns {
    () => {
        "position, event_id, stream_id, stream_version, event_type, schema_version, \
         data::text AS data, correlation_id, causation_id, actor, reason, recorded_at, \
         effective_at, hash"
    };
}
pub(crate) use event_columns;

/// One row of `events`.
#[derive(sqlx::FromRow)]
pub(crate) struct EventRow {
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

impl EventRow {
    pub(crate) fn position(&self) -> i64 {
        self.position
    }

    pub(crate) fn into_event(self) -> Result<RecordedEvent, StoreError> {
        let position = Position(self.position as u64);
        let corrupt = |reason: String| StoreError::Corrupt { position, reason };
        let hash = Hash::from_slice(&self.hash)
            .ok_or_else(|| corrupt(format!("hash has {} bytes, not 32", self.hash.len())))?;
        let stream_id = StreamId::new(self.stream_id)
            .map_err(|e| corrupt(format!("stored stream id is invalid: {e}")))?;
        Ok(RecordedEvent {
            position,
            event_id: self.event_id,
            stream_id,
            stream_version: self.stream_version as u64,
            event_type: self.event_type,
            schema_version: self.schema_version as u32,
            data: self.data,
            metadata: EventMetadata {
                correlation_id: self.correlation_id,
                causation_id: self.causation_id,
                actor: self.actor,
                reason: self.reason,
            },
            recorded_at: self.recorded_at,
            effective_at: self.effective_at,
            hash,
        })
    }
}

/// The group-commit writer: takes every queued append as one group, writes it (one statement
/// on the fast path, the locked transaction otherwise) and answers each append. Ends when the
/// store is dropped.
async fn run_writer(
    pool: PgPool,
    mut jobs: mpsc::Receiver<Job>,
    wake: Arc<watch::Sender<()>>,
    max_batch_events: usize,
    clock: Arc<dyn Clock>,
) {
    let mut writer = Writer {
        pool,
        cache: HeadCache::default(),
        wake,
        clock,
    };
    let mut carried: Option<Job> = None;
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match jobs.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let mut events = first.event_count();
        let mut batch = vec![first];
        while events < max_batch_events {
            match jobs.try_recv() {
                Ok(job) if events + job.event_count() > max_batch_events => {
                    carried = Some(job);
                    break;
                }
                Ok(job) => {
                    events += job.event_count();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        writer.write_group(batch).await;
    }
}

/// `sqlx::Error` is not `Clone`; keep what a caller can act on.
fn clone_db_error(error: &sqlx::Error) -> sqlx::Error {
    sqlx::Error::Protocol(error.to_string())
}

/// A state of the log: its head position and the token of the write that produced it.
type LogState = (Position, Uuid);

/// Stream heads this process knows, all valid in log state `state`. Every write by anyone
/// changes the state's token, so "the log is still in `state`" proves every entry current.
#[derive(Debug, Default)]
struct HeadCache {
    state: Option<LogState>,
    streams: HashMap<StreamId, StreamHead>,
}

/// Bound on cached stream heads; past it the cache starts over (it is only an accelerator).
const MAX_CACHED_STREAMS: usize = 200_000;

impl HeadCache {
    /// Records heads valid in `state`, forgetting everything else if `state` is news to us.
    fn observe(
        &mut self,
        state: LogState,
        streams: impl IntoIterator<Item = (StreamId, StreamHead)>,
    ) {
        if self.state != Some(state) || self.streams.len() > MAX_CACHED_STREAMS {
            self.streams.clear();
        }
        self.state = Some(state);
        self.streams.extend(streams);
    }

    /// Our own write takes the log from the cached state to `state`.
    fn advance(
        &mut self,
        state: LogState,
        streams: impl IntoIterator<Item = (StreamId, StreamHead)>,
    ) {
        if self.streams.len() > MAX_CACHED_STREAMS {
            self.streams.clear();
        }
        self.state = Some(state);
        self.streams.extend(streams);
    }

    fn forget(&mut self) {
        self.state = None;
        self.streams.clear();
    }
}

/// What the fast path can do with a group.
enum FastPlan {
    /// Planned against the cache: send this statement. `None` marks an append the cache could
    /// not decide (a version conflict, a possible retry): it goes through the locked path once
    /// the others are written.
    Ready(Box<GroupWrite>, Vec<Option<AppendResult>>),
    /// Heads of these streams (or of the log) must be read first.
    NeedsHeads(Vec<String>),
    /// Only the locked transaction can decide (a conflict, a possible retry, …).
    Locked,
}

/// One group's rows and the log states it takes the log from and to (both paths write with it).
struct GroupWrite {
    rows: Columns,
    from: LogState,
    to: LogState,
}

struct Writer {
    pool: PgPool,
    cache: HeadCache,
    wake: Arc<watch::Sender<()>>,
    clock: Arc<dyn Clock>,
}

impl Writer {
    /// Writes one group and answers each of its appends.
    async fn write_group(&mut self, batch: Vec<Job>) {
        let plan = match self.plan_fast(&batch) {
            FastPlan::NeedsHeads(unknown) => match self.refresh(&unknown).await {
                Ok(()) => self.plan_fast(&batch),
                Err(error) => {
                    tracing::debug!(%error, "cannot read stream heads; using the locked path");
                    FastPlan::Locked
                }
            },
            plan => plan,
        };
        if let FastPlan::Ready(statement, outcomes) = plan {
            match statement.execute(&self.pool).await {
                Ok(true) => {
                    self.wake.send_replace(());
                    let mut undecided = Vec::new();
                    for (job, result) in batch.into_iter().zip(outcomes) {
                        match result {
                            Some(result) => {
                                let _ = job.reply.send(Ok(result));
                            }
                            None => undecided.push(job),
                        }
                    }
                    if !undecided.is_empty() {
                        self.write_locked_and_reply(undecided).await;
                    }
                    return;
                }
                // Another process wrote since our view of the log.
                Ok(false) => tracing::debug!("the log moved; re-planning under the lock"),
                // A unique violation (a re-appended event id, a stream that exists after all)
                // or anything else: the locked path decides, and reports real failures.
                Err(error) => {
                    tracing::debug!(%error, "fast append path declined; using the locked path")
                }
            }
        }
        self.write_locked_and_reply(batch).await;
    }

    /// Plans a group against the cached heads, without IO.
    fn plan_fast(&mut self, batch: &[Job]) -> FastPlan {
        // A stream expected not to exist is assumed not to: if it does, the unique
        // (stream_id, stream_version) index refuses the write and the locked path decides.
        // A guard writes no row that the index could refuse, so its head is always known.
        let unknown: Vec<String> = batch
            .iter()
            .flat_map(|j| &j.writes)
            .filter(|w| {
                (w.expected != ExpectedVersion::NoStream || w.is_guard())
                    && !self.cache.streams.contains_key(&w.stream)
            })
            .map(|w| w.stream.as_str().to_owned())
            .collect();
        let Some(from) = self.cache.state else {
            return FastPlan::NeedsHeads(unknown);
        };
        if !unknown.is_empty() {
            return FastPlan::NeedsHeads(unknown);
        }
        let heads = batch
            .iter()
            .flat_map(|j| &j.writes)
            .filter_map(|w| {
                self.cache
                    .streams
                    .get(&w.stream)
                    .map(|h| (w.stream.clone(), *h))
            })
            .collect();
        let mut planner = Planner::new(from.0, heads, HashMap::new(), self.clock.now());
        let mut rows = Columns::default();
        let mut outcomes = Vec::with_capacity(batch.len());
        for job in batch {
            match planner.plan(&job.writes) {
                Ok(Planned::Write { events, result }) => {
                    events.into_iter().for_each(|e| rows.push(e));
                    outcomes.push(Some(result));
                }
                // A conflict against the cache is a real conflict if the log is still in state
                // `from` when the group commits, but it may also be a retried append whose
                // events are stored: only the locked path (which reads the stored ids) may
                // decide that. It runs after the group (two concurrent appends have no order),
                // so one contended stream does not send the whole group down the locked path.
                // Planning failed, so the planner is unchanged: the rest is planned as if this
                // append had not been there.
                Ok(Planned::AlreadyStored(_)) | Err(_) => outcomes.push(None),
            }
        }
        if rows.position.is_empty() {
            return FastPlan::Locked;
        }
        let to = (planner.head(), Uuid::new_v4());
        self.cache.advance(to, touched_heads(&planner, &rows));
        FastPlan::Ready(Box::new(GroupWrite { rows, from, to }), outcomes)
    }

    /// Reads the log state and the heads of `streams`, in one snapshot, into the cache.
    async fn refresh(&mut self, streams: &[String]) -> Result<(), sqlx::Error> {
        let rows: Vec<HeadRow> = sqlx::query_as(
            "SELECT h.position, h.write_token, x.id, x.stream_version, x.hash
               FROM log_head h
               LEFT JOIN LATERAL (
                    SELECT s.id, e.stream_version, e.hash
                      FROM unnest($1::text[]) AS s(id)
                     CROSS JOIN LATERAL (SELECT stream_version, hash FROM events
                                          WHERE stream_id = s.id
                                          ORDER BY stream_version DESC LIMIT 1) e
               ) x ON true
              WHERE h.id = 1",
        )
        .bind(streams)
        .fetch_all(&self.pool)
        .await?;
        let Some(state) = rows.first().map(|r| (Position(r.0 as u64), r.1)) else {
            return Err(sqlx::Error::RowNotFound);
        };
        let mut known: HashMap<StreamId, StreamHead> = HashMap::new();
        for id in streams {
            if let Ok(stream) = StreamId::new(id.clone()) {
                known.insert(stream, StreamHead::default());
            }
        }
        for (_, _, id, version, hash) in rows {
            if let (Some(id), Some(version), Some(hash)) = (id, version, hash) {
                let stream = StreamId::new(id).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
                let hash = Hash::from_slice(&hash).ok_or_else(|| {
                    sqlx::Error::Protocol(format!("stream {stream} has a bad hash"))
                })?;
                known.insert(
                    stream,
                    StreamHead {
                        version: version as u64,
                        hash,
                    },
                );
            }
        }
        self.cache.observe(state, known);
        Ok(())
    }

    /// Writes a group through the locked path and answers each append. If the group fails as a
    /// whole, each append is retried alone, so one bad append cannot fail the others.
    async fn write_locked_and_reply(&mut self, batch: Vec<Job>) {
        match self.write_locked(&batch).await {
            Ok(outcomes) => {
                for (job, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = job.reply.send(outcome);
                }
            }
            Err(error) if batch.len() > 1 => {
                tracing::warn!(%error, appends = batch.len(), "group commit failed; retrying appends one by one");
                for job in batch {
                    let outcome = match self.write_locked(std::slice::from_ref(&job)).await {
                        Ok(mut outcomes) => outcomes.pop().unwrap_or(Err(StoreError::Closed)),
                        Err(e) => Err(StoreError::Database(e)),
                    };
                    let _ = job.reply.send(outcome);
                }
            }
            Err(error) => {
                for job in batch {
                    let _ = job
                        .reply
                        .send(Err(StoreError::Database(clone_db_error(&error))));
                }
            }
        }
    }

    /// The locked path: one transaction that takes the global lock first, reads the heads of the
    /// streams involved and any stored events with the same ids, plans, writes and commits.
    async fn write_locked(
        &mut self,
        batch: &[Job],
    ) -> Result<Vec<Result<AppendResult, StoreError>>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        // The global write lock, held until commit. It must be taken in a statement of its own:
        // every later statement then reads with a snapshot taken after the lock was granted.
        let (head, token): (i64, Uuid) =
            sqlx::query_as("SELECT position, write_token FROM log_head WHERE id = 1 FOR UPDATE")
                .fetch_one(&mut *tx)
                .await?;
        let state = (Position(head as u64), token);
        // The cached heads stay true only if nobody wrote since they were.
        if self.cache.state != Some(state) {
            self.cache.forget();
        }

        let mut stream_ids = HashSet::new();
        let mut event_ids = Vec::new();
        for job in batch {
            for w in &job.writes {
                stream_ids.insert(w.stream.as_str().to_owned());
                event_ids.extend(w.events.iter().map(|e| e.event_id));
            }
        }
        let stream_ids: Vec<String> = stream_ids.into_iter().collect();
        let heads: Vec<(String, i64, Vec<u8>)> = sqlx::query_as(
            "SELECT s.id, e.stream_version, e.hash
               FROM unnest($1::text[]) AS s(id)
              CROSS JOIN LATERAL (SELECT stream_version, hash FROM events
                                   WHERE stream_id = s.id
                                   ORDER BY stream_version DESC LIMIT 1) e",
        )
        .bind(&stream_ids)
        .fetch_all(&mut *tx)
        .await?;
        let existing: Vec<EventRow> = sqlx::query_as(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE event_id = ANY($1)"
        ))
        .bind(&event_ids)
        .fetch_all(&mut *tx)
        .await?;

        let mut stream_heads = HashMap::with_capacity(stream_ids.len());
        for id in stream_ids {
            let stream = StreamId::new(id).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
            stream_heads.insert(stream, StreamHead::default());
        }
        for (id, version, hash) in heads {
            let stream = StreamId::new(id).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
            let hash = Hash::from_slice(&hash)
                .ok_or_else(|| sqlx::Error::Protocol(format!("stream {stream} has a bad hash")))?;
            stream_heads.insert(
                stream,
                StreamHead {
                    version: version as u64,
                    hash,
                },
            );
        }
        let mut existing_events = HashMap::with_capacity(existing.len());
        for row in existing {
            let event = row
                .into_event()
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
            existing_events.insert(event.event_id, event);
        }

        let mut planner = Planner::new(state.0, stream_heads, existing_events, self.clock.now());
        let mut rows = Columns::default();
        let outcomes: Vec<Result<AppendResult, StoreError>> = batch
            .iter()
            .map(|job| match planner.plan(&job.writes)? {
                Planned::AlreadyStored(result) => Ok(result),
                Planned::Write { events, result } => {
                    events.into_iter().for_each(|e| rows.push(e));
                    Ok(result)
                }
            })
            .collect();

        if rows.position.is_empty() {
            tx.rollback().await?;
            // Nothing was planned to change: every head read under the lock is current.
            self.cache.advance(state, planner.stream_heads().clone());
            return Ok(outcomes);
        }
        let statement = GroupWrite {
            rows,
            from: state,
            to: (planner.head(), Uuid::new_v4()),
        };
        statement.write(&mut *tx).await?;
        tx.commit().await?;
        self.wake.send_replace(());
        // Every head the planner holds was read under the lock or written by us: all current;
        // the rest of the cache was true at `state` (or was forgotten), and only we wrote since.
        self.cache
            .advance(statement.to, planner.stream_heads().clone());
        Ok(outcomes)
    }
}

/// The log state joined with one (possibly missing) stream head.
type HeadRow = (i64, Uuid, Option<String>, Option<i64>, Option<Vec<u8>>);

/// Heads after the planned writes, of the streams that received events.
fn touched_heads(planner: &Planner, rows: &Columns) -> Vec<(StreamId, StreamHead)> {
    let touched: HashSet<&str> = rows.stream_id.iter().map(String::as_str).collect();
    planner
        .stream_heads()
        .iter()
        .filter(|(s, _)| touched.contains(s.as_str()))
        .map(|(s, h)| (s.clone(), *h))
        .collect()
}

impl GroupWrite {
    /// Runs on its own (autocommit): the statement takes the global lock itself and writes only
    /// if the log is still in state `from`. Returns whether it wrote.
    async fn execute(self, pool: &PgPool) -> Result<bool, sqlx::Error> {
        self.write_guarded(pool, true).await
    }

    /// Runs inside the locked transaction, which already holds the lock and knows the state.
    async fn write<'e, E>(&self, executor: E) -> Result<(), sqlx::Error>
    where
        E: sqlx::Executor<'e, Database = sqlx::Postgres>,
    {
        self.write_guarded(executor, false).await.map(|_| ())
    }

    /// Inserts the events, moves `log_head` to state `to` and notifies, in one statement. The
    /// `UPDATE` of `log_head` comes first: it takes (or re-takes) the global lock, re-checks the
    /// state under it, and everything else is written only if it matched.
    async fn write_guarded<'e, E>(&self, executor: E, guard: bool) -> Result<bool, sqlx::Error>
    where
        E: sqlx::Executor<'e, Database = sqlx::Postgres>,
    {
        let rows = &self.rows;
        let applied: Option<i32> = sqlx::query_scalar(
            "WITH log_state AS (
                -- The row always qualifies, so the statement waits for the lock and then judges
                -- the newest row version (under READ COMMITTED a condition in WHERE would first
                -- be judged on the snapshot taken before the wait).
                UPDATE log_head
                   SET position = CASE WHEN NOT $17 OR (position = $18 AND write_token = $19)
                                       THEN $15 ELSE position END,
                       write_token = CASE WHEN NOT $17 OR (position = $18 AND write_token = $19)
                                          THEN $16 ELSE write_token END
                 WHERE id = 1
                RETURNING write_token = $16 AS applied
             ), new_log_head AS (
                SELECT 1 FROM log_state WHERE applied
             ), new_events AS (
                INSERT INTO events (position, event_id, stream_id, stream_version, event_type,
                                    schema_version, data, correlation_id, causation_id, actor,
                                    reason, recorded_at, effective_at, hash)
                SELECT p, i, s, v, t, sv, d::json, c, ca, a, r, ra, ea, h
                  FROM UNNEST($1::bigint[], $2::uuid[], $3::text[], $4::bigint[], $5::text[],
                              $6::int4[], $7::text[], $8::uuid[], $9::uuid[], $10::text[],
                              $11::text[], $12::timestamptz[], $13::timestamptz[], $14::bytea[])
                       AS u(p, i, s, v, t, sv, d, c, ca, a, r, ra, ea, h)
                 WHERE EXISTS (SELECT 1 FROM new_log_head)
             )
             SELECT 1 FROM new_log_head, pg_notify('tessera_events', '')",
        )
        .bind(&rows.position)
        .bind(&rows.event_id)
        .bind(&rows.stream_id)
        .bind(&rows.stream_version)
        .bind(&rows.event_type)
        .bind(&rows.schema_version)
        .bind(&rows.data)
        .bind(&rows.correlation_id)
        .bind(&rows.causation_id)
        .bind(&rows.actor)
        .bind(&rows.reason)
        .bind(&rows.recorded_at)
        .bind(&rows.effective_at)
        .bind(&rows.hash)
        .bind(self.to.0.0 as i64)
        .bind(self.to.1)
        .bind(guard)
        .bind(self.from.0.0 as i64)
        .bind(self.from.1)
        .fetch_optional(executor)
        .await?;
        Ok(applied.is_some())
    }
}

/// Column-wise buffers for one `UNNEST` insert.
#[derive(Default)]
struct Columns {
    position: Vec<i64>,
    event_id: Vec<Uuid>,
    stream_id: Vec<String>,
    stream_version: Vec<i64>,
    event_type: Vec<String>,
    schema_version: Vec<i32>,
    data: Vec<String>,
    correlation_id: Vec<Uuid>,
    causation_id: Vec<Option<Uuid>>,
    actor: Vec<String>,
    reason: Vec<Option<String>>,
    recorded_at: Vec<DateTime<Utc>>,
    effective_at: Vec<DateTime<Utc>>,
    hash: Vec<Vec<u8>>,
}

impl Columns {
    fn push(&mut self, e: RecordedEvent) {
        self.position.push(e.position.0 as i64);
        self.event_id.push(e.event_id);
        self.stream_id.push(e.stream_id.into());
        self.stream_version.push(e.stream_version as i64);
        self.event_type.push(e.event_type);
        self.schema_version.push(e.schema_version as i32);
        self.data.push(e.data);
        self.correlation_id.push(e.metadata.correlation_id);
        self.causation_id.push(e.metadata.causation_id);
        self.actor.push(e.metadata.actor);
        self.reason.push(e.metadata.reason);
        self.recorded_at.push(e.recorded_at);
        self.effective_at.push(e.effective_at);
        self.hash.push(e.hash.0.to_vec());
    }
}

/// Turns PostgreSQL notifications on [`NOTIFY_CHANNEL`] into local wake-ups, reconnecting as
/// needed. A wake-up is also sent after every (re)connect, since notifications may have been
/// missed while disconnected.
async fn listen(pool: PgPool, wake: Arc<watch::Sender<()>>) {
    loop {
        match PgListener::connect_with(&pool).await {
            Ok(mut listener) => match listener.listen(NOTIFY_CHANNEL).await {
                Ok(()) => {
                    wake.send_replace(());
                    loop {
                        match listener.recv().await {
                            Ok(_) => {
                                wake.send_replace(());
                            }
                            Err(error) => {
                                tracing::warn!(%error, "event notification listener lost its connection");
                                break;
                            }
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot LISTEN for event notifications"),
            },
            Err(error) => tracing::warn!(%error, "cannot connect the event notification listener"),
        }
        // Subscriptions keep polling meanwhile; retry the listener after a pause.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
