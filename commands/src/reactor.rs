//! Reactors (process managers): checkpointed followers of the log that turn events into
//! commands. Each command a reactor issues has an id derived from the event it reacts to, so a
//! redelivered event (after a crash before the checkpoint moved) re-issues the same command,
//! which the handlers recognise as a replay: restart-safe, nothing doubled.
//!
//! A business refusal (say, expiring a booking that was confirmed meanwhile) is a final answer,
//! logged and passed; an infrastructure failure is retried, and the reactor never moves its
//! checkpoint past an event it has not handled.
//!
//! Time comes from a [`Clock`]: deadlines (a hold lapsing, a slot ending) are rows in
//! `deadlines`, fired by [`fire_due_deadlines`] when the clock passes them, never by sleeping.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tessera_domain::booking::{BookingAggregate, BookingEvent, Canceller};
use tessera_domain::loyalty::{LoyaltyAggregate, LoyaltyCommand};
use tessera_domain::payment::PaymentEvent;
use tessera_domain::provider::ProviderEvent;
use tessera_domain::review::ReviewEvent;
use tessera_domain::slot::{SlotAggregate, SlotEvent, SlotState};
use tessera_domain::user::UserEvent;
use tessera_domain::values::{BookingId, UserId, derived_id};
use uuid::Uuid;

use crate::error::CommandError;
use crate::gateway::{GatewayEvent, PaymentGateway};
use crate::handler::{AggregateCache, CommandContext, execute, load, load_caught_up, stream_of};
pub use tessera_log::clock::{Clock, ManualClock, SystemClock};
use tessera_log::codec::{self, AnyEvent};
use tessera_log::store::{EventStore, Position, RecordedEvent, StoreError};

/// One process manager.
#[async_trait]
pub trait Reactor: Send + Sync + fmt::Debug {
    /// Unique and stable: it names the checkpoint and the actor (`system:<name>`).
    fn name(&self) -> &'static str;
    async fn react(
        &self,
        event: &RecordedEvent,
        decoded: &AnyEvent,
        now: DateTime<Utc>,
    ) -> Result<(), CommandError>;

    /// Writes what [`Reactor::react`] left for the end of its chunk (a reactor whose effects are
    /// rows collects a chunk's worth and writes them in a few statements). The runner calls it
    /// after each chunk, before the checkpoint passes the chunk's events; on failure the events
    /// are delivered again, so what is written must be idempotent.
    async fn flush(&self) -> Result<(), CommandError> {
        Ok(())
    }
}

/// Runs reactors against the store, keeping their checkpoints in PostgreSQL.
#[derive(Debug, Clone)]
pub struct ReactorRunner {
    pub store: Arc<dyn EventStore>,
    pub pool: PgPool,
    pub clock: Arc<dyn Clock>,
}

const SAVE_CHECKPOINT: &str = "INSERT INTO reactor_checkpoints (name, position) VALUES ($1, $2)
     ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, updated_at = now()";

/// The live loop's checkpoint commits without waiting for its own WAL flush. Losing it in a crash
/// only means redelivering events the reactor already handled, which re-issues the same
/// commands (replays, see the module doc); and the log is flushed in order, so a checkpoint that
/// survives implies that the effects of the events before it survived too.
const SAVE_CHECKPOINT_ASYNC: &str = concat!(
    "INSERT INTO reactor_checkpoints (name, position)
     SELECT $1, $2 FROM ",
    tessera_log::pg::async_commit!(),
    "
     ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, updated_at = now()"
);

/// Most events the live loop handles between two checkpoints (it takes what is ready, up to
/// this many, and saves once after them).
const LIVE_CHUNK: usize = 256;

/// How often an infrastructure failure is retried before a batch gives up (the live loop then
/// restarts from the checkpoint after a pause).
const ATTEMPTS: u32 = 5;

impl ReactorRunner {
    pub async fn checkpoint(&self, reactor: &str) -> Result<Position, CommandError> {
        let position: Option<i64> =
            sqlx::query_scalar("SELECT position FROM reactor_checkpoints WHERE name = $1")
                .bind(reactor)
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::from)?;
        Ok(Position(position.unwrap_or(0) as u64))
    }

    /// Stores `reactor`'s checkpoint (for callers that keep it themselves meanwhile, see
    /// [`Self::catch_up`]).
    pub async fn save(&self, reactor: &str, position: Position) -> Result<(), CommandError> {
        self.store_checkpoint(SAVE_CHECKPOINT, reactor, position)
            .await
    }

    async fn store_checkpoint(
        &self,
        statement: &'static str,
        reactor: &str,
        position: Position,
    ) -> Result<(), CommandError> {
        sqlx::query(statement)
            .bind(reactor)
            .bind(position.0 as i64)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from)?;
        Ok(())
    }

    /// Handles one event, retrying infrastructure failures; refusals are final answers.
    async fn handle(
        &self,
        reactor: &dyn Reactor,
        event: &RecordedEvent,
    ) -> Result<(), CommandError> {
        let decoded = codec::decode_any(&event.event_type, event.schema_version, &event.data)
            .map_err(|e| CommandError::Codec(format!("position {}: {e}", event.position)))?;
        let mut attempt = 0;
        loop {
            match reactor.react(event, &decoded, self.clock.now()).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_refusal() => {
                    // Often expected (a slot's cancellation reaching a booking already
                    // cancelled), but a refused money movement is worth a look: counted for
                    // every reactor, and logged as a warning for the payments reactor.
                    metrics::counter!(
                        "tessera_reaction_refusals_total",
                        "reactor" => reactor.name(),
                        "event_type" => event.event_type.clone(),
                    )
                    .increment(1);
                    if reactor.name() == "payments" {
                        tracing::warn!(reactor = reactor.name(), position = %event.position, event_type = %event.event_type, refusal = %e, "a money movement was refused by the domain; moving on");
                    } else {
                        tracing::debug!(reactor = reactor.name(), position = %event.position, event_type = %event.event_type, refusal = %e, "reaction refused by the domain; moving on");
                    }
                    return Ok(());
                }
                Err(e) if attempt + 1 < ATTEMPTS => {
                    attempt += 1;
                    tracing::warn!(reactor = reactor.name(), position = %event.position, error = %e, attempt, "reaction failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50 * 2u64.pow(attempt))).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Handles every event up to the current head and returns how many it handled.
    pub async fn run_until_idle(&self, reactor: &dyn Reactor) -> Result<u64, CommandError> {
        let from = self.checkpoint(reactor.name()).await?;
        let (_, handled) = self.run_pages(reactor, from, true).await?;
        Ok(handled)
    }

    /// Handles every event after `from` up to the current head without reading or storing the
    /// checkpoint; returns the position reached and how many events it handled. For a single
    /// driver that keeps the position itself and stores it with [`Self::save`] (the fixture
    /// loader, which settles the reactors after every command).
    pub async fn catch_up(
        &self,
        reactor: &dyn Reactor,
        from: Position,
    ) -> Result<(Position, u64), CommandError> {
        self.run_pages(reactor, from, false).await
    }

    async fn run_pages(
        &self,
        reactor: &dyn Reactor,
        mut position: Position,
        save: bool,
    ) -> Result<(Position, u64), CommandError> {
        let mut handled = 0;
        loop {
            let page = self.store.read_all(position, 500).await?;
            if page.is_empty() {
                return Ok((position, handled));
            }
            for event in &page {
                self.handle(reactor, event).await.map_err(|e| {
                    tracing::error!(reactor = reactor.name(), position = %event.position, event_type = %event.event_type, error = %e, "reactor stopped");
                    e
                })?;
                position = event.position;
                handled += 1;
            }
            reactor.flush().await?;
            if save {
                self.save(reactor.name(), position).await?;
            }
        }
    }

    /// Follows the log live until `shutdown` turns true or its sender is dropped; restarts from
    /// its checkpoint after a failure.
    pub async fn run(
        &self,
        reactor: Arc<dyn Reactor>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        use futures::StreamExt;
        while !*shutdown.borrow() {
            let position = match self.checkpoint(reactor.name()).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(reactor = reactor.name(), error = %e, "cannot read checkpoint");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let mut events = self.store.subscribe_all(position).ready_chunks(LIVE_CHUNK);
            loop {
                let next = tokio::select! {
                    changed = shutdown.changed() => {
                        // A dropped sender stops the reactor too: nobody is left to say stop,
                        // and restarting from the checkpoint would only spin.
                        if changed.is_err() {
                            return;
                        }
                        break;
                    }
                    next = events.next() => next,
                };
                let Some(chunk) = next else { break };
                // Handle what is ready in order; the checkpoint moves once, to the last event
                // handled, even when a later one failed.
                let mut handled = None;
                let mut failed = None;
                for item in chunk {
                    let handling = match item {
                        Ok(event) => self
                            .handle(&*reactor, &event)
                            .await
                            .map(|()| event.position),
                        Err(e) => Err(e.into()),
                    };
                    match handling {
                        Ok(position) => handled = Some(position),
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                let saved = match handled {
                    Some(position) => match reactor.flush().await {
                        Ok(()) => {
                            self.store_checkpoint(SAVE_CHECKPOINT_ASYNC, reactor.name(), position)
                                .await
                        }
                        Err(e) => Err(e),
                    },
                    None => Ok(()),
                };
                if let Err(e) = failed.map_or(saved, Err) {
                    tracing::error!(reactor = reactor.name(), error = %e, "reactor failed; restarting from its checkpoint");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            }
        }
    }
}

/// Every reactor of the platform, the deadline reactor first. `cache` keeps the slots whose
/// bookings they release (see [`load_caught_up`]).
pub fn all(
    store: &Arc<dyn EventStore>,
    pool: &PgPool,
    gateway: Arc<dyn PaymentGateway>,
    cache: Option<AggregateCache>,
) -> Vec<Arc<dyn Reactor>> {
    all_with(store, pool, gateway, cache, DEFAULT_DISPUTE_WINDOW)
}

/// How long after a slot ends the provider's share stays held, by default: 48 hours.
pub const DEFAULT_DISPUTE_WINDOW: chrono::TimeDelta = chrono::TimeDelta::hours(48);

/// [`all`], holding providers' shares for `dispute_window` after their slots end.
pub fn all_with(
    store: &Arc<dyn EventStore>,
    pool: &PgPool,
    gateway: Arc<dyn PaymentGateway>,
    cache: Option<AggregateCache>,
    dispute_window: chrono::TimeDelta,
) -> Vec<Arc<dyn Reactor>> {
    vec![
        Arc::new(
            DeadlineReactor::new(store.clone(), pool.clone()).with_dispute_window(dispute_window),
        ),
        Arc::new(PaymentsReactor {
            store: store.clone(),
            gateway,
            cache,
        }),
        Arc::new(LoyaltyReactor {
            store: store.clone(),
        }),
        Arc::new(crate::receipts::DocumentsReactor::new(store.clone())),
    ]
}

/// Keeps the `deadlines` table: a hold lapses at `hold_expires_at`, a confirmed booking
/// completes when its slot ends, and its provider's share is released a dispute window later
/// (also for a cancelled booking that kept a fee).
///
/// It collects a chunk's changes and writes them at [`Reactor::flush`] in at most three
/// statements (bookings whose deadlines all end, single deadlines that end, deadlines set),
/// instead of one statement per event (ADR 0009). Its writes commit without waiting for their
/// own WAL flush: they precede the checkpoint past their events in the log, which is flushed in
/// order, so a crash that loses one also loses that checkpoint, and the events are redelivered
/// and the rows written again.
#[derive(Debug)]
pub struct DeadlineReactor {
    pub store: Arc<dyn EventStore>,
    pub pool: PgPool,
    pending: Mutex<PendingDeadlines>,
    dispute_window: chrono::TimeDelta,
}

/// A chunk's deadline changes, collapsed per booking in event order: what the rows must end as.
/// (Ordered maps: the same events write the same rows in the same order.)
#[derive(Debug, Default)]
struct PendingDeadlines {
    bookings: BTreeMap<Uuid, BookingDeadlines>,
}

#[derive(Debug, Default)]
struct BookingDeadlines {
    /// Every deadline of the booking ended (before the `kinds` below were set or ended).
    all_done: bool,
    /// Per kind, since then: `Some(due)` set, `None` ended.
    kinds: BTreeMap<&'static str, Option<DateTime<Utc>>>,
}

impl PendingDeadlines {
    fn set(&mut self, kind: &'static str, booking_id: BookingId, due_at: DateTime<Utc>) {
        let booking = self.bookings.entry(booking_id.0).or_default();
        booking.kinds.insert(kind, Some(due_at));
    }

    fn clear(&mut self, kind: Option<&'static str>, booking_id: BookingId) {
        let booking = self.bookings.entry(booking_id.0).or_default();
        match kind {
            Some(kind) => {
                booking.kinds.insert(kind, None);
            }
            None => {
                booking.all_done = true;
                booking.kinds.clear();
            }
        }
    }
}

impl DeadlineReactor {
    pub fn new(store: Arc<dyn EventStore>, pool: PgPool) -> Self {
        Self {
            store,
            pool,
            pending: Mutex::new(PendingDeadlines::default()),
            dispute_window: DEFAULT_DISPUTE_WINDOW,
        }
    }

    pub fn with_dispute_window(mut self, window: chrono::TimeDelta) -> Self {
        self.dispute_window = window;
        self
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, PendingDeadlines> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes the collected changes; they are taken first, so a failed write leaves nothing
    /// behind (the runner then redelivers the events).
    async fn write(&self, pending: PendingDeadlines) -> Result<(), StoreError> {
        let mut all_done = Vec::new();
        let (mut ended_bookings, mut ended_kinds) = (Vec::new(), Vec::new());
        let (mut set_kinds, mut set_bookings, mut set_due) = (Vec::new(), Vec::new(), Vec::new());
        for (booking, changes) in pending.bookings {
            if changes.all_done {
                all_done.push(booking);
            }
            for (kind, due) in changes.kinds {
                match due {
                    Some(due) => {
                        set_kinds.push(kind);
                        set_bookings.push(booking);
                        set_due.push(due);
                    }
                    None => {
                        ended_bookings.push(booking);
                        ended_kinds.push(kind);
                    }
                }
            }
        }
        if !all_done.is_empty() {
            sqlx::query(concat!(
                "UPDATE deadlines SET done_at = now()
                   FROM ",
                tessera_log::pg::async_commit!(),
                "
                  WHERE booking_id = ANY($1) AND done_at IS NULL"
            ))
            .bind(&all_done)
            .execute(&self.pool)
            .await?;
        }
        if !ended_bookings.is_empty() {
            sqlx::query(concat!(
                "UPDATE deadlines d SET done_at = now()
                   FROM unnest($1::uuid[], $2::text[]) AS e(booking_id, kind),
                        ",
                tessera_log::pg::async_commit!(),
                "
                  WHERE d.booking_id = e.booking_id AND d.kind = e.kind AND d.done_at IS NULL"
            ))
            .bind(&ended_bookings)
            .bind(&ended_kinds)
            .execute(&self.pool)
            .await?;
        }
        if !set_kinds.is_empty() {
            sqlx::query(concat!(
                "INSERT INTO deadlines (kind, booking_id, due_at)
                 SELECT s.kind, s.booking_id, s.due_at
                   FROM unnest($1::text[], $2::uuid[], $3::timestamptz[]) AS s(kind, booking_id, due_at),
                        ",
                tessera_log::pg::async_commit!(),
                "
                 ON CONFLICT (kind, booking_id) DO UPDATE SET due_at = EXCLUDED.due_at, done_at = NULL"
            ))
            .bind(&set_kinds)
            .bind(&set_bookings)
            .bind(&set_due)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Reactor for DeadlineReactor {
    fn name(&self) -> &'static str {
        "deadlines"
    }

    async fn react(
        &self,
        _: &RecordedEvent,
        decoded: &AnyEvent,
        _: DateTime<Utc>,
    ) -> Result<(), CommandError> {
        let AnyEvent::Booking(e) = decoded else {
            return Ok(());
        };
        match e {
            BookingEvent::BookingPlaced {
                booking_id,
                hold_expires_at,
                ..
            }
            | BookingEvent::BookingReinstated {
                booking_id,
                hold_expires_at,
                ..
            } => {
                self.pending()
                    .set("expire-hold", *booking_id, *hold_expires_at);
                Ok(())
            }
            BookingEvent::BookingConfirmed { booking_id, .. }
            | BookingEvent::LatePaymentAccepted { booking_id, .. } => {
                self.pending().clear(Some("expire-hold"), *booking_id);
                let booking = load::<BookingAggregate>(
                    &*self.store,
                    stream_of::<BookingAggregate>(*booking_id),
                    Uuid::nil(),
                )
                .await?;
                if let Some(b) = booking.state.booking() {
                    let mut pending = self.pending();
                    pending.set("complete", *booking_id, b.slot_ends_at);
                    pending.set(
                        "release-funds",
                        *booking_id,
                        b.slot_ends_at + self.dispute_window,
                    );
                }
                Ok(())
            }
            BookingEvent::BookingCancelled { booking_id, .. } => {
                let booking = load::<BookingAggregate>(
                    &*self.store,
                    stream_of::<BookingAggregate>(*booking_id),
                    Uuid::nil(),
                )
                .await?;
                let mut pending = self.pending();
                pending.clear(None, *booking_id);
                // A fee the customer paid is the provider's (less commission) as if delivered.
                // (`refund_due` is all that is owed back, a move's differences included.)
                if let Some(b) = booking.state.booking()
                    && b.paid.minor > b.refund_due.minor
                {
                    pending.set(
                        "release-funds",
                        *booking_id,
                        b.slot_ends_at + self.dispute_window,
                    );
                }
                Ok(())
            }
            BookingEvent::BookingExpired { booking_id } => {
                self.pending().clear(None, *booking_id);
                Ok(())
            }
            BookingEvent::BookingMoveRequested {
                booking_id,
                expires_at,
                ..
            } => {
                self.pending().set("expire-move", *booking_id, *expires_at);
                Ok(())
            }
            BookingEvent::BookingMoveAbandoned { booking_id, .. } => {
                self.pending().clear(Some("expire-move"), *booking_id);
                Ok(())
            }
            BookingEvent::BookingRescheduled {
                booking_id,
                slot_ends_at,
                ..
            } => {
                // The booking's deadlines move with it (a later move or the state decides
                // again when they fire).
                let mut pending = self.pending();
                pending.clear(Some("expire-move"), *booking_id);
                pending.set("complete", *booking_id, *slot_ends_at);
                pending.set(
                    "release-funds",
                    *booking_id,
                    *slot_ends_at + self.dispute_window,
                );
                Ok(())
            }
            BookingEvent::BookingCompleted { booking_id }
            | BookingEvent::BookingNoShow { booking_id } => {
                let mut pending = self.pending();
                pending.clear(Some("expire-hold"), *booking_id);
                pending.clear(Some("complete"), *booking_id);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    async fn flush(&self) -> Result<(), CommandError> {
        let pending = std::mem::take(&mut *self.pending());
        if pending.bookings.is_empty() {
            return Ok(());
        }
        Ok(self.write(pending).await?)
    }
}

/// Fires every deadline the clock has passed; returns how many it fired. Each fires the same
/// command id every time (derived from the deadline), so firing twice is a replay. Deadlines
/// due at the same instant fire in (booking, kind) order, whatever order their rows were
/// written in, so a replayed history fires them in the same order.
pub async fn fire_due_deadlines(
    store: &dyn EventStore,
    pool: &PgPool,
    cache: Option<&AggregateCache>,
    now: DateTime<Utc>,
) -> Result<usize, CommandError> {
    let due: Vec<(String, Uuid, DateTime<Utc>)> = sqlx::query_as(
        "SELECT kind, booking_id, due_at FROM deadlines WHERE done_at IS NULL AND due_at <= $1 ORDER BY due_at, booking_id, kind LIMIT 1000",
    )
    .bind(now)
    .fetch_all(pool)
    .await
    .map_err(StoreError::from)?;
    for (kind, booking, due_at) in &due {
        let booking_id = BookingId(*booking);
        let command_id = derived_id(
            *booking,
            format!("{kind}@{}", due_at.timestamp_micros()).as_bytes(),
        );
        let ctx = CommandContext::new(command_id, format!("system:{kind}"), now);
        let outcome = match kind.as_str() {
            "expire-hold" => {
                crate::booking::expire_booking_cached(store, cache, booking_id, &ctx).await
            }
            "release-funds" => crate::money::release_funds(store, booking_id, &ctx).await,
            "expire-move" => {
                crate::booking::abandon_move(
                    store,
                    booking_id,
                    None,
                    tessera_domain::booking::MoveAbandoned::Expired,
                    &ctx,
                )
                .await
            }
            _ => crate::booking::complete_booking(store, booking_id, &ctx).await,
        };
        match outcome {
            Ok(_) => {}
            Err(e) if e.is_refusal() => {
                tracing::debug!(%kind, %booking_id, refusal = %e, "deadline no longer applies")
            }
            Err(e) => return Err(e),
        }
        sqlx::query(
            "UPDATE deadlines SET done_at = $3 WHERE kind = $1 AND booking_id = $2 AND due_at = $4",
        )
        .bind(kind)
        .bind(booking)
        .bind(now)
        .bind(due_at)
        .execute(pool)
        .await
        .map_err(StoreError::from)?;
    }
    Ok(due.len())
}

/// Money movements that follow from events: refunds for paid cancellations, refunds sent to the
/// gateway (after taking back from the provider what the refund removes from its share), a
/// provider's slot cancellation cancelling (and fully refunding) its bookings, transfers of
/// released shares, and the transfers that waited for a provider's account once it is active.
#[derive(Debug)]
pub struct PaymentsReactor {
    pub store: Arc<dyn EventStore>,
    pub gateway: Arc<dyn PaymentGateway>,
    /// The slots whose bookings a slot cancellation releases, kept between releases.
    pub cache: Option<AggregateCache>,
}

#[async_trait]
impl Reactor for PaymentsReactor {
    fn name(&self) -> &'static str {
        "payments"
    }

    async fn react(
        &self,
        event: &RecordedEvent,
        decoded: &AnyEvent,
        now: DateTime<Utc>,
    ) -> Result<(), CommandError> {
        let ctx = |what: &str| CommandContext::reacting_to(self.name(), what, event, now);
        match decoded {
            AnyEvent::Booking(BookingEvent::BookingCancelled {
                booking_id,
                refund_due,
                ..
            }) if refund_due.minor > 0 => {
                crate::payment::request_owed_refund(
                    &*self.store,
                    *booking_id,
                    *refund_due,
                    &ctx("refund"),
                )
                .await?;
            }
            AnyEvent::Booking(BookingEvent::BookingRescheduled {
                booking_id, refund, ..
            }) if refund.minor > 0 => {
                // A move to a cheaper slot: the difference goes back.
                crate::payment::request_owed_refund(
                    &*self.store,
                    *booking_id,
                    *refund,
                    &ctx("refund"),
                )
                .await?;
            }
            AnyEvent::Booking(BookingEvent::BookingMoveAbandoned {
                payment_id, why, ..
            }) if *why != tessera_domain::booking::MoveAbandoned::PaymentFailed => {
                // Nobody should pay a move that ended.
                crate::payment::cancel_top_up(
                    &*self.store,
                    &*self.gateway,
                    *payment_id,
                    &ctx("cancel"),
                )
                .await?;
            }
            AnyEvent::Payment(PaymentEvent::RefundRequested {
                payment_id,
                refund_id,
                ..
            }) => {
                // The provider gives back its part first: its payable never goes negative.
                crate::money::settle(&*self.store, &*self.gateway, *payment_id, &ctx("settle"))
                    .await?;
                crate::payment::send_refund(
                    &*self.store,
                    &*self.gateway,
                    *payment_id,
                    *refund_id,
                    &ctx("send"),
                )
                .await?;
            }
            AnyEvent::Payment(PaymentEvent::FundsReleased { payment_id, .. }) => {
                crate::money::settle(&*self.store, &*self.gateway, *payment_id, &ctx("settle"))
                    .await?;
            }
            AnyEvent::Provider(ProviderEvent::PayoutAccountActivated { provider_id, .. }) => {
                crate::money::settle_awaiting(
                    &*self.store,
                    &*self.gateway,
                    *provider_id,
                    &ctx("settle-awaiting"),
                )
                .await?;
            }
            AnyEvent::Slot(SlotEvent::SlotCancelled {
                slot_id,
                affected_bookings,
                ..
            }) => {
                // The provider who owns the slot cancels its bookings.
                let slot = load_caught_up::<SlotAggregate>(
                    &*self.store,
                    self.cache.as_ref(),
                    stream_of::<SlotAggregate>(*slot_id),
                    Uuid::nil(),
                )
                .await?;
                let provider = match &slot.state {
                    SlotState::Scheduled(s) => s.provider_id,
                    SlotState::New => {
                        return Err(CommandError::NotFound {
                            what: "slot",
                            id: slot_id.to_string(),
                        });
                    }
                };
                for booking_id in affected_bookings {
                    let c = ctx(&format!("cancel/{booking_id}"));
                    // A booking that only held seats here for a move it waits to pay keeps
                    // its own slot: the move ends instead.
                    let (_, b) =
                        crate::booking::load_booking(&*self.store, *booking_id, Uuid::nil())
                            .await?;
                    let outcome = if b.slot_id != *slot_id {
                        crate::booking::abandon_move(
                            &*self.store,
                            *booking_id,
                            None,
                            tessera_domain::booking::MoveAbandoned::SlotCancelled,
                            &c,
                        )
                        .await
                    } else {
                        crate::booking::cancel_booking_cached(
                            &*self.store,
                            self.cache.as_ref(),
                            *booking_id,
                            Canceller::Provider(provider),
                            true,
                            &c,
                        )
                        .await
                    };
                    match outcome {
                        Ok(_) => {}
                        Err(e) if e.is_refusal() => {
                            tracing::info!(%booking_id, refusal = %e, "booking of a cancelled slot needs no cancellation")
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Points and badges that follow from bookings and reviews.
#[derive(Debug)]
pub struct LoyaltyReactor {
    pub store: Arc<dyn EventStore>,
}

impl LoyaltyReactor {
    async fn customer(&self, booking_id: BookingId) -> Result<UserId, CommandError> {
        let booking = load::<BookingAggregate>(
            &*self.store,
            stream_of::<BookingAggregate>(booking_id),
            Uuid::nil(),
        )
        .await?;
        booking
            .state
            .booking()
            .map(|b| b.customer_id)
            .ok_or_else(|| CommandError::NotFound {
                what: "booking",
                id: booking_id.to_string(),
            })
    }
}

#[async_trait]
impl Reactor for LoyaltyReactor {
    fn name(&self) -> &'static str {
        "loyalty"
    }

    async fn react(
        &self,
        event: &RecordedEvent,
        decoded: &AnyEvent,
        now: DateTime<Utc>,
    ) -> Result<(), CommandError> {
        let (user, command) = match decoded {
            AnyEvent::Booking(
                BookingEvent::BookingConfirmed { booking_id, .. }
                | BookingEvent::LatePaymentAccepted { booking_id, .. },
            ) => (
                self.customer(*booking_id).await?,
                LoyaltyCommand::RecordBookingConfirmed {
                    booking_id: *booking_id,
                },
            ),
            AnyEvent::Booking(BookingEvent::BookingCompleted { booking_id }) => (
                self.customer(*booking_id).await?,
                LoyaltyCommand::RecordBookingCompleted {
                    booking_id: *booking_id,
                },
            ),
            AnyEvent::Booking(BookingEvent::BookingRefunded { booking_id, .. }) => {
                // Points go back only when the booking ends refunded (a paid cancellation),
                // not for an admin's partial goodwill refund.
                let booking = load::<BookingAggregate>(
                    &*self.store,
                    stream_of::<BookingAggregate>(*booking_id),
                    Uuid::nil(),
                )
                .await?;
                match booking.state.booking() {
                    Some(b) if b.status == tessera_domain::booking::BookingStatus::Refunded => (
                        b.customer_id,
                        LoyaltyCommand::ReverseForBooking {
                            booking_id: *booking_id,
                        },
                    ),
                    _ => return Ok(()),
                }
            }
            AnyEvent::Review(ReviewEvent::ReviewWritten {
                booking_id,
                author_id,
                ..
            }) => (
                *author_id,
                LoyaltyCommand::RecordReviewWritten {
                    booking_id: *booking_id,
                },
            ),
            AnyEvent::User(UserEvent::UserRegistered {
                user_id,
                referred_by: Some(referrer),
                ..
            }) => (
                *referrer,
                LoyaltyCommand::RecordReferral { referred: *user_id },
            ),
            _ => return Ok(()),
        };
        let ctx = CommandContext::reacting_to(self.name(), "points", event, now);
        execute::<LoyaltyAggregate>(
            &*self.store,
            stream_of::<LoyaltyAggregate>(user),
            &command,
            &ctx,
        )
        .await?;
        Ok(())
    }
}

/// Records what the payment provider reported (a verified webhook, a simulated outcome). The
/// command id derives from the provider's event id: a redelivery is a replay.
pub async fn handle_gateway_event(
    store: &dyn EventStore,
    event: &GatewayEvent,
    now: DateTime<Utc>,
) -> Result<(), CommandError> {
    handle_gateway_event_cached(store, None, event, now).await
}

/// [`handle_gateway_event`], confirming in the slot's turn with its state from `cache`.
pub async fn handle_gateway_event_cached(
    store: &dyn EventStore,
    cache: Option<&AggregateCache>,
    event: &GatewayEvent,
    now: DateTime<Utc>,
) -> Result<(), CommandError> {
    let ctx = |event_id: &str| {
        CommandContext::new(
            Uuid::new_v5(&Uuid::NAMESPACE_URL, event_id.as_bytes()),
            "system:payments",
            now,
        )
    };
    match event {
        GatewayEvent::PaymentSucceeded {
            event_id,
            payment_id: Some(payment_id),
            ..
        } => {
            crate::payment::record_payment_succeeded_cached(
                store,
                cache,
                *payment_id,
                &ctx(event_id),
            )
            .await?;
        }
        GatewayEvent::PaymentFailed {
            event_id,
            payment_id: Some(payment_id),
            reason,
            ..
        } => {
            match crate::payment::record_payment_failed(store, *payment_id, reason, &ctx(event_id))
                .await
            {
                Ok(_) => {}
                // Already decided (a top-up we canceled ourselves, then Stripe's
                // `payment_intent.canceled`): the report changes nothing, and is acknowledged.
                Err(CommandError::Payment(tessera_domain::payment::PaymentError::NotPending(
                    status,
                ))) => {
                    tracing::debug!(%payment_id, ?status, "failure reported for a decided payment");
                }
                Err(e) => return Err(e),
            }
        }
        GatewayEvent::PaymentSucceeded { provider_ref, .. }
        | GatewayEvent::PaymentFailed { provider_ref, .. } => {
            tracing::warn!(%provider_ref, "payment event without a Tessera payment id; ignored");
        }
        GatewayEvent::AccountUpdated {
            event_id,
            provider_id: Some(provider_id),
            account_ref,
            active,
            reason,
        } => {
            crate::money::account_updated(
                store,
                *provider_id,
                account_ref,
                *active,
                reason.clone(),
                &ctx(event_id),
            )
            .await?;
        }
        GatewayEvent::AccountUpdated { account_ref, .. } => {
            tracing::warn!(%account_ref, "account event without a Tessera provider id; ignored");
        }
        GatewayEvent::PayoutUpdated {
            event_id,
            provider_id: Some(provider_id),
            account_ref,
            payout_ref,
            amount,
            failure,
        } => {
            crate::money::record_payout(
                store,
                *provider_id,
                account_ref,
                payout_ref,
                *amount,
                failure.clone(),
                &ctx(event_id),
            )
            .await?;
        }
        GatewayEvent::PayoutUpdated { account_ref, .. } => {
            tracing::warn!(%account_ref, "payout of an account no provider owns; ignored");
        }
        GatewayEvent::Ignored { .. } => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use tessera_domain::values::BookingId;
    use uuid::Uuid;

    use super::PendingDeadlines;

    #[test]
    fn a_chunk_s_deadline_changes_collapse_to_what_the_rows_must_end_as() {
        let at = |h| {
            Utc.with_ymd_and_hms(2026, 12, 1, h, 0, 0)
                .single()
                .expect("time")
        };
        let (a, b, c) = (
            BookingId(Uuid::from_u128(1)),
            BookingId(Uuid::from_u128(2)),
            BookingId(Uuid::from_u128(3)),
        );
        let mut p = PendingDeadlines::default();
        // a: placed, confirmed (hold ends, completion set), completion moved.
        p.set("expire-hold", a, at(1));
        p.clear(Some("expire-hold"), a);
        p.set("complete", a, at(5));
        p.set("complete", a, at(6));
        // b: placed, then cancelled: everything ends, nothing set after.
        p.set("expire-hold", b, at(2));
        p.clear(None, b);
        // c: cancelled, then reinstated with a new hold.
        p.clear(None, c);
        p.set("expire-hold", c, at(3));

        let a = &p.bookings[&a.0];
        assert!(!a.all_done);
        assert_eq!(a.kinds["expire-hold"], None);
        assert_eq!(a.kinds["complete"], Some(at(6)));
        let b = &p.bookings[&b.0];
        assert!(b.all_done && b.kinds.is_empty());
        let c = &p.bookings[&c.0];
        assert!(c.all_done);
        assert_eq!(c.kinds["expire-hold"], Some(at(3)));
    }
}
