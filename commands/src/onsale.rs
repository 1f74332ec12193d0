//! On-sale: holds on a hot slot are **queued, not raced** (ADR 0014).
//!
//! Racing optimistic writers on one stream wastes work with the square of the crowd: every
//! loser re-reads, re-decides and appends again. Here, in each process, holds on a slot wait in
//! that slot's bounded queue; one task per slot takes everything waiting (up to a batch), takes
//! the slot's turn ([`AggregateCache::turn`], shared with releases and payments on the slot),
//! decides the requests **in arrival order** on the slot as this process last wrote it (caught
//! up with the log first whenever a request is refused or another process wrote) and
//! writes every placement (each booking's first event and the slot's events) in **one atomic
//! append**, guarded by the slot's and the listing's versions. Each request still gets its own
//! booking, its own answer and its own events (ids and causation derived from its command), so
//! a retried request is recognised exactly as before.
//!
//! Across processes the expected version still decides: a batch that loses catches up and is
//! decided again (bounded, with jittered backoff). A request that cannot join a batch (a retry
//! whose booking already exists, two requests for one booking) is decided on its own, in the
//! slot's turn, by the ordinary handler. A full queue refuses at once ([`CommandError::Busy`])
//! rather than growing memory.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tessera_domain::Aggregate;
use tessera_domain::booking::BookingAggregate;
use tessera_domain::listing::{ListingAggregate, ListingError, ListingState};
use tessera_domain::slot::{SlotAggregate, SlotError, SlotEvent, SlotState};
use tessera_domain::values::SlotId;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::booking::{BookingConfig, PlaceBooking, Placed, decide_hold, place_booking_cached};
use crate::error::CommandError;
use crate::handler::{
    AggregateCache, CommandContext, Executed, Loaded, load_caught_up, load_via, stream_of,
    write_for,
};
use tessera_log::store::{EventStore, StoreError, StreamId, StreamWrite};

/// How many times a batch is decided again after another process wrote to the slot first.
pub const MAX_BATCH_ATTEMPTS: u32 = 64;

/// A worker with nothing to do for this long ends (a new request starts another).
const IDLE: Duration = Duration::from_secs(60);

/// Bounds of the per-slot queues.
#[derive(Debug, Clone, Copy)]
pub struct QueueConfig {
    /// Requests that may wait on one slot; one more is refused with [`CommandError::Busy`].
    pub depth: usize,
    /// Most requests decided and appended together.
    pub max_batch: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            depth: 4096,
            max_batch: 256,
        }
    }
}

/// This process's per-slot queues of holds.
#[derive(Clone)]
pub struct SlotQueues {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SlotQueues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotQueues")
            .field("config", &self.inner.config)
            .field("waiting", &self.inner.waiting.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

struct Inner {
    store: Arc<dyn EventStore>,
    cache: AggregateCache,
    booking: BookingConfig,
    config: QueueConfig,
    /// The queue of each slot that has a worker. Requests are sent under this lock, and a
    /// worker leaves only under it with its queue empty, so no request is ever stranded.
    lanes: Mutex<HashMap<SlotId, mpsc::Sender<Job>>>,
    /// Requests waiting in all queues.
    waiting: AtomicI64,
}

/// One waiting request and where its answer goes.
struct Job {
    request: PlaceBooking,
    ctx: CommandContext,
    reply: oneshot::Sender<Result<Placed, CommandError>>,
}

impl Job {
    fn answer(self, outcome: Result<Placed, CommandError>) {
        // The caller may have gone (a dropped connection): its hold stands, as an
        // acknowledged-but-unread answer would, and a retry with its key replays it.
        let _ = self.reply.send(outcome);
    }
}

impl SlotQueues {
    /// Queues over `store`, sharing `cache` (states and turns) with the rest of the process.
    pub fn new(
        store: Arc<dyn EventStore>,
        cache: AggregateCache,
        booking: BookingConfig,
        config: QueueConfig,
    ) -> Self {
        let config = QueueConfig {
            depth: config.depth.max(1),
            max_batch: config.max_batch.max(1),
        };
        Self {
            inner: Arc::new(Inner {
                store,
                cache,
                booking,
                config,
                lanes: Mutex::new(HashMap::new()),
                waiting: AtomicI64::new(0),
            }),
        }
    }

    /// Places a booking and holds its seats, as [`place_booking_cached`] does, through the
    /// slot's queue. Refuses with [`CommandError::Busy`] at once when the queue is full.
    pub async fn place(
        &self,
        request: PlaceBooking,
        ctx: CommandContext,
    ) -> Result<Placed, CommandError> {
        let (reply, answer) = oneshot::channel();
        self.enqueue(Job {
            request,
            ctx,
            reply,
        })?;
        answer.await.map_err(|_| {
            CommandError::Busy("the slot's queue stopped before deciding (safe to retry)".into())
        })?
    }

    /// [`Self::place`] as a `'static` future (for spawning).
    pub async fn place_owned(
        self,
        request: PlaceBooking,
        ctx: CommandContext,
    ) -> Result<Placed, CommandError> {
        self.place(request, ctx).await
    }

    fn enqueue(&self, mut job: Job) -> Result<(), CommandError> {
        let slot = job.request.slot_id;
        let inner = &self.inner;
        let mut lanes = inner.lanes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(lane) = lanes.get(&slot) {
            match lane.try_send(job) {
                Ok(()) => {
                    inner.waiting(1);
                    return Ok(());
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    metrics::counter!("tessera_slot_queue_refused_total").increment(1);
                    return Err(CommandError::Busy(format!(
                        "{} requests are already waiting for this slot",
                        inner.config.depth
                    )));
                }
                // Its worker is gone (it cannot be, short of a panic): start another.
                Err(mpsc::error::TrySendError::Closed(j)) => job = j,
            }
        }
        let (lane, queue) = mpsc::channel(inner.config.depth);
        if lane.try_send(job).is_err() {
            return Err(CommandError::Busy(
                "the slot's queue could not start".into(),
            ));
        }
        inner.waiting(1);
        lanes.insert(slot, lane);
        tokio::spawn(work(Arc::clone(inner), slot, queue));
        Ok(())
    }
}

impl Inner {
    fn waiting(&self, delta: i64) {
        let now = self.waiting.fetch_add(delta, Ordering::Relaxed) + delta;
        metrics::gauge!("tessera_slot_queue_waiting").set(now as f64);
    }
}

/// The one task deciding a slot's queued holds, batch after batch, until idle.
async fn work(inner: Arc<Inner>, slot: SlotId, mut queue: mpsc::Receiver<Job>) {
    let stream = stream_of::<SlotAggregate>(slot);
    let mut jobs = Vec::with_capacity(inner.config.max_batch);
    loop {
        let taken =
            match tokio::time::timeout(IDLE, queue.recv_many(&mut jobs, inner.config.max_batch))
                .await
            {
                Ok(0) => return,
                Ok(n) => n,
                Err(_) => {
                    let mut lanes = inner.lanes.lock().unwrap_or_else(PoisonError::into_inner);
                    if queue.is_empty() {
                        lanes.remove(&slot);
                        return;
                    }
                    continue;
                }
            };
        inner.waiting(-(taken as i64));
        metrics::histogram!("tessera_slot_batch_size").record(taken as f64);
        // Releases and payments on the slot take the same turn, first come first served.
        let turn = inner.cache.turn(&stream).await;
        settle(&inner, &stream, std::mem::take(&mut jobs)).await;
        drop(turn);
    }
}

/// Why a batch's append was refused.
enum Culprit {
    /// Another writer (another process) moved the slot: catch up and decide again.
    Slot,
    /// The listing changed: load it again and decide again.
    Listing(StreamId),
    /// This request cannot join a batch (its booking exists: a retry): decide it alone.
    Request(usize),
    /// Not attributable to one request: decide each alone.
    Unknown,
    /// Not a conflict: the store failed.
    Failed,
}

/// Decides `jobs` (in arrival order) and answers each.
async fn settle(inner: &Inner, slot: &StreamId, jobs: Vec<Job>) {
    let mut batch = Vec::with_capacity(jobs.len());
    let mut alone = Vec::new();
    let mut bookings = HashSet::with_capacity(jobs.len());
    for job in jobs {
        if bookings.insert(job.request.booking_id) {
            batch.push(job);
        } else {
            alone.push(job);
        }
    }
    let mut attempts = 0;
    let mut fresh = false;
    while !batch.is_empty() {
        attempts += 1;
        if attempts > MAX_BATCH_ATTEMPTS {
            for job in batch.drain(..) {
                job.answer(Err(CommandError::Contention {
                    attempts: MAX_BATCH_ATTEMPTS,
                }));
            }
            break;
        }
        let mut decided = match decide(inner, slot, &batch, fresh).await {
            Ok(decided) => decided,
            Err(e) => {
                answer_all(batch.drain(..), e);
                break;
            }
        };
        // A refusal is only ever decided on the slot as the log holds it, never on a copy.
        if !fresh && decided.outcomes.iter().any(Result::is_err) {
            fresh = true;
            continue;
        }
        // A booking the slot already holds seats for is a retried request (or a second one for
        // the same booking): the ordinary handler tells which, and answers it. Its refusal
        // changed nothing the requests after it were decided on.
        let mut i = 0;
        while i < batch.len() {
            if matches!(
                decided.outcomes[i],
                Err(CommandError::Slot(SlotError::AlreadyHolding(_)))
            ) {
                let _refused = decided.outcomes.remove(i);
                alone.push(batch.remove(i));
            } else {
                i += 1;
            }
        }
        let Some(append) = decided.append else {
            // Every request was refused: nothing to write.
            for (job, outcome) in batch.drain(..).zip(decided.outcomes) {
                job.answer(match outcome {
                    Err(e) => Err(e),
                    Ok(_) => Err(CommandError::Codec(
                        "a hold decided without an append".into(),
                    )),
                });
            }
            break;
        };
        match inner.store.append(append.writes).await {
            Ok(result) => {
                inner
                    .cache
                    .advance(&append.slot, &append.slot_events, &result);
                let executed = Executed {
                    position: result.last_position,
                    replayed: false,
                };
                for (job, outcome) in batch.drain(..).zip(decided.outcomes) {
                    job.answer(outcome.map(|hold_expires_at| Placed {
                        executed: executed.clone(),
                        hold_expires_at,
                    }));
                }
            }
            Err(e) => match culprit(&e, slot, &append.listing, &batch) {
                Culprit::Slot => {
                    metrics::counter!("tessera_slot_batch_conflicts_total").increment(1);
                    fresh = true;
                    backoff(attempts).await;
                }
                Culprit::Listing(listing) => inner.cache.forget(&listing),
                Culprit::Request(i) => alone.push(batch.remove(i)),
                Culprit::Unknown => alone.append(&mut batch),
                Culprit::Failed => answer_all(batch.drain(..), e.into()),
            },
        }
    }
    // Decided one by one with the ordinary handler, still in the slot's turn: a retry is
    // answered with what its first attempt wrote.
    for job in alone {
        let outcome = place_booking_cached(
            &*inner.store,
            Some(&inner.cache),
            &inner.booking,
            &job.request,
            &job.ctx,
        )
        .await;
        job.answer(outcome);
    }
}

fn answer_all(jobs: impl Iterator<Item = Job>, error: CommandError) {
    let message = error.to_string();
    let mut error = Some(error);
    for job in jobs {
        // The first gets the error itself; the others an equivalent one.
        let e = error
            .take()
            .unwrap_or_else(|| CommandError::Store(StoreError::Backend(message.clone())));
        job.answer(Err(e));
    }
}

/// Waits a little before deciding again after losing to another process: nothing on the
/// first loss (catching up is the remedy), then up to 1, 2, 4 … 50 ms, jittered so that two
/// processes do not keep colliding.
pub(crate) async fn backoff(attempt: u32) {
    if attempt <= 1 {
        return;
    }
    let ceiling = (1u64 << attempt.min(6)).min(50) * 1000;
    let jitter = Uuid::new_v4().as_u128() as u64 % ceiling.max(1);
    tokio::time::sleep(Duration::from_micros(jitter)).await;
}

fn culprit(e: &StoreError, slot: &StreamId, listing: &StreamId, batch: &[Job]) -> Culprit {
    match e {
        StoreError::WrongExpectedVersion { stream, .. } if stream == slot => Culprit::Slot,
        StoreError::WrongExpectedVersion { stream, .. } if stream == listing => {
            Culprit::Listing(stream.clone())
        }
        StoreError::WrongExpectedVersion { stream, .. } => batch
            .iter()
            .position(|j| stream_of::<BookingAggregate>(j.request.booking_id) == *stream)
            .map_or(Culprit::Unknown, Culprit::Request),
        StoreError::EventIdConflict { event_id } => batch
            .iter()
            .position(|j| {
                let booking = stream_of::<BookingAggregate>(j.request.booking_id);
                (0..4).any(|i| {
                    j.ctx.event_id(&booking, i) == *event_id || j.ctx.event_id(slot, i) == *event_id
                })
            })
            .map_or(Culprit::Unknown, Culprit::Request),
        _ => Culprit::Failed,
    }
}

/// What deciding a batch came to.
struct Decided {
    /// Per request, in order: the hold's expiry, or the refusal.
    outcomes: Vec<Result<DateTime<Utc>, CommandError>>,
    /// What to append, unless every request was refused.
    append: Option<BatchAppend>,
}

struct BatchAppend {
    writes: Vec<StreamWrite>,
    slot: Loaded<SlotAggregate>,
    slot_events: Vec<SlotEvent>,
    listing: StreamId,
}

/// Decides every request of `batch` in order on the slot's current state.
async fn decide(
    inner: &Inner,
    stream: &StreamId,
    batch: &[Job],
    fresh: bool,
) -> Result<Decided, CommandError> {
    let store = &*inner.store;
    let cache = Some(&inner.cache);
    // First on the slot as this process last decided it (no read: while this process is the
    // slot's only writer, that is the slot as it is, and the append's guard says so); `fresh`,
    // caught up with the log, reading only what others wrote since.
    let slot = if fresh {
        load_caught_up::<SlotAggregate>(store, cache, stream.clone(), Uuid::nil()).await?
    } else {
        load_via::<SlotAggregate>(store, cache, true, stream.clone(), Uuid::nil()).await?
    };
    let refuse_all = |e: &dyn Fn() -> CommandError| Decided {
        outcomes: batch.iter().map(|_| Err(e())).collect(),
        append: None,
    };
    let SlotState::Scheduled(s) = &slot.state else {
        let id = batch.first().map(|j| j.request.slot_id.to_string());
        return Ok(refuse_all(&|| CommandError::NotFound {
            what: "slot",
            id: id.clone().unwrap_or_default(),
        }));
    };
    let listing_stream = stream_of::<ListingAggregate>(s.listing_id);
    // The listing rarely changes: its cached state is guarded by its version in the append.
    let mut listing =
        load_via::<ListingAggregate>(store, cache, true, listing_stream.clone(), Uuid::nil())
            .await?;
    if !matches!(&listing.state, ListingState::Published(l) if !l.retired) {
        // A refusal is decided on the listing as it is.
        listing =
            load_caught_up::<ListingAggregate>(store, cache, listing_stream.clone(), Uuid::nil())
                .await?;
    }
    let l = match &listing.state {
        ListingState::Published(l) if !l.retired => l,
        ListingState::Published(_) => {
            return Ok(refuse_all(&|| ListingError::Retired.into()));
        }
        _ => {
            let id = s.listing_id.to_string();
            return Ok(refuse_all(&|| CommandError::NotFound {
                what: "listing",
                id: id.clone(),
            }));
        }
    };
    let commission_bp = crate::booking::provider_commission(store, cache, s.provider_id).await?;
    let mut state = slot.state.clone();
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut writes = Vec::with_capacity(batch.len() + 2);
    let mut slot_events = Vec::with_capacity(batch.len());
    let mut slot_new = Vec::with_capacity(batch.len());
    for job in batch {
        match decide_hold(
            &Default::default(),
            &state,
            s,
            l,
            commission_bp,
            &job.request,
            job.ctx.now,
            inner.booking.hold_ttl,
        ) {
            Ok((booking_events, held)) => {
                let booking = Loaded::<BookingAggregate>::new_stream(
                    stream_of::<BookingAggregate>(job.request.booking_id),
                );
                let expiry = crate::booking::placed_expiry(&booking_events)?;
                writes.push(write_for(&booking, &booking_events, &job.ctx)?);
                // Each request's slot events carry ids derived from its own command.
                slot_new.extend(write_for(&slot, &held, &job.ctx)?.events);
                state = held.iter().fold(state, SlotAggregate::evolve);
                slot_events.extend(held);
                outcomes.push(Ok(expiry));
            }
            Err(e) => outcomes.push(Err(e)),
        }
    }
    if writes.is_empty() {
        return Ok(Decided {
            outcomes,
            append: None,
        });
    }
    writes.push(StreamWrite::new(
        slot.stream.clone(),
        slot.expected(),
        slot_new,
    ));
    // The listing decided too (published, not retired, its policy).
    writes.push(listing.guard());
    Ok(Decided {
        outcomes,
        append: Some(BatchAppend {
            writes,
            slot,
            slot_events,
            listing: listing_stream,
        }),
    })
}
