//! The in-memory event store: the same semantics as the PostgreSQL store (it shares the append
//! planner), and passes the same conformance suite. The fixtures' bulk loader stages appends here
//! before copying them into PostgreSQL; it is also the store for tests that need no database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use async_trait::async_trait;
use tokio::sync::watch;

use super::plan::{Planned, Planner, StreamHead, validate};
use super::subscription::follow;
use super::{
    AppendResult, Capabilities, EventStore, EventSubscription, Position, RecordedEvent, StoreError,
    StreamId, StreamRead, StreamWrite,
};

/// An event store held in memory. Cloning shares the same log.
#[derive(Debug, Clone)]
pub struct InMemoryEventStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    wake: watch::Sender<()>,
    clock: Arc<dyn Clock>,
}

#[derive(Debug, Default)]
struct State {
    /// The log; the event at index `i` has position `i + 1`.
    events: Vec<RecordedEvent>,
    /// Per stream: its head and the log indexes of its events in version order.
    streams: HashMap<StreamId, (StreamHead, Vec<usize>)>,
    by_id: HashMap<uuid::Uuid, usize>,
}

impl Default for InMemoryEventStore {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryEventStore {
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// A store whose `recorded_at` comes from `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                wake: watch::Sender::new(()),
                clock,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the log half-written (appends mutate only
        // after planning succeeded), so a poisoned lock is still consistent.
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl EventStore for InMemoryEventStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            atomic_multi_stream: true,
            dense_positions: true,
            log_wide_event_ids: true,
        }
    }

    async fn append(&self, writes: Vec<StreamWrite>) -> Result<AppendResult, StoreError> {
        validate(&writes)?;
        let outcome = {
            let mut state = self.state();
            let heads = writes
                .iter()
                .filter_map(|w| {
                    state
                        .streams
                        .get(&w.stream)
                        .map(|(h, _)| (w.stream.clone(), *h))
                })
                .collect();
            let existing = writes
                .iter()
                .flat_map(|w| &w.events)
                .filter_map(|e| state.by_id.get(&e.event_id))
                .map(|&i| (state.events[i].event_id, state.events[i].clone()))
                .collect();
            let head = Position(state.events.len() as u64);
            let mut planner = Planner::new(head, heads, existing, self.inner.clock.now());
            let planned = planner.plan(&writes)?;
            if let Planned::Write { events, .. } = &planned {
                for e in events {
                    let index = state.events.len();
                    let head = planner.stream_heads()[&e.stream_id];
                    let entry = state.streams.entry(e.stream_id.clone()).or_default();
                    entry.0 = head;
                    entry.1.push(index);
                    state.by_id.insert(e.event_id, index);
                    state.events.push(e.clone());
                }
            }
            planned
        };
        Ok(match outcome {
            Planned::Write { result, .. } => {
                self.inner.wake.send_replace(());
                result
            }
            Planned::AlreadyStored(result) => result,
        })
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        read: StreamRead,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let state = self.state();
        let Some((_, indexes)) = state.streams.get(stream) else {
            return Ok(Vec::new());
        };
        let pick = |i: &usize| state.events[*i].clone();
        Ok(match read {
            StreamRead::Forward { from } => {
                let skip = from.saturating_sub(1) as usize;
                indexes.iter().skip(skip).take(limit).map(pick).collect()
            }
            StreamRead::Backward { from } => {
                let end = from.map_or(indexes.len(), |v| (v as usize).min(indexes.len()));
                indexes[..end].iter().rev().take(limit).map(pick).collect()
            }
        })
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let state = self.state();
        let start = (after.0 as usize).min(state.events.len());
        Ok(state.events[start..].iter().take(limit).cloned().collect())
    }

    fn stream_all(&self, after: Position, limit: usize) -> EventSubscription {
        let state = self.state();
        let start = (after.0 as usize).min(state.events.len());
        let events: Vec<_> = state.events[start..].iter().take(limit).cloned().collect();
        Box::pin(futures::stream::iter(events.into_iter().map(Ok)))
    }

    async fn head(&self) -> Result<Position, StoreError> {
        Ok(Position(self.state().events.len() as u64))
    }

    fn subscribe_all(&self, after: Position) -> EventSubscription {
        follow(
            self.clone(),
            after,
            self.inner.wake.subscribe(),
            Duration::from_millis(500),
            1_000,
        )
    }
}
