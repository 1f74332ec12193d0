//! Catch-up-then-live subscriptions over any store that can read its global log in pages.
//!
//! The subscription pulls one chunk at a time: it reads after its cursor, hands the events out
//! one by one as they arrive, and when a chunk comes back short it waits for a wake-up (a new append in this
//! process, a PostgreSQL NOTIFY from another one) or, as a fallback, for the poll interval.
//! Notifications never carry data, so a lost one costs at most one poll interval.
//!
//! On PostgreSQL, live subscriptions share one reader ([`follow_tail`]): a task per store reads
//! the log's new events once per wake-up into a bounded window, and every subscription whose
//! cursor the window reaches back to takes its events from there; one further behind (catching
//! up, or slower than the log grows) reads the store in chunks until it is back within reach.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use futures::StreamExt;

use super::{EventStore, EventSubscription, Position, RecordedEvent};

/// Follows the global log of `store` after `after`, reading it in chunks of `page_size` events
/// (each one streamed query on PostgreSQL).
pub(crate) fn follow<S>(
    store: S,
    after: Position,
    wake: watch::Receiver<()>,
    poll_interval: Duration,
    page_size: usize,
) -> EventSubscription
where
    S: EventStore + 'static,
{
    struct State<S> {
        store: S,
        cursor: Position,
        chunk: Option<(EventSubscription, usize)>,
        wake: watch::Receiver<()>,
        wake_alive: bool,
        poll_interval: Duration,
        page_size: usize,
    }
    let state = State {
        store,
        cursor: after,
        chunk: None,
        wake,
        wake_alive: true,
        poll_interval,
        page_size,
    };
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        loop {
            let Some((chunk, seen)) = st.chunk.as_mut() else {
                // Mark the current wake-up as seen *before* reading, so an append that lands
                // after the read still wakes the wait below.
                st.wake.borrow_and_update();
                st.chunk = Some((st.store.stream_all(st.cursor, st.page_size), 0));
                continue;
            };
            match chunk.next().await {
                Some(Ok(event)) => {
                    *seen += 1;
                    st.cursor = event.position;
                    return Some((Ok(event), st));
                }
                Some(Err(e)) => {
                    st.chunk = None;
                    return Some((Err(e), st));
                }
                None => {
                    let full = *seen >= st.page_size;
                    st.chunk = None;
                    if full {
                        continue;
                    }
                    // Caught up: wait for news.
                    if st.wake_alive {
                        tokio::select! {
                            changed = st.wake.changed() => st.wake_alive = changed.is_ok(),
                            () = tokio::time::sleep(st.poll_interval) => {}
                        }
                    } else {
                        tokio::time::sleep(st.poll_interval).await;
                    }
                }
            }
        }
    }))
}

/// The recent end of the log as one reader read it: every event after `from` up to and
/// including `to`, in chunks as they were read. Shared, immutable; a new read publishes a new
/// window that shares the old one's chunks.
#[derive(Debug, Default)]
pub(crate) struct Window {
    from: Position,
    to: Position,
    chunks: VecDeque<Arc<[RecordedEvent]>>,
    events: usize,
}

impl Window {
    /// An empty window at `head`.
    pub(crate) fn at(head: Position) -> Self {
        Self {
            from: head,
            to: head,
            ..Self::default()
        }
    }

    /// This window with `chunk` (the events right after `to`) added, and the oldest chunks
    /// dropped while more than `max_events` remain.
    pub(crate) fn extended(&self, chunk: Vec<RecordedEvent>, max_events: usize) -> Self {
        let Some(last) = chunk.last().map(|e| e.position) else {
            return Self {
                from: self.from,
                to: self.to,
                chunks: self.chunks.clone(),
                events: self.events,
            };
        };
        let mut next = Self {
            from: self.from,
            to: last,
            chunks: self.chunks.clone(),
            events: self.events + chunk.len(),
        };
        next.chunks.push_back(chunk.into());
        while next.events > max_events && next.chunks.len() > 1 {
            if let Some(old) = next.chunks.pop_front() {
                next.events -= old.len();
                if let Some(e) = old.last() {
                    next.from = e.position;
                }
            }
        }
        next
    }

    pub(crate) fn to(&self) -> Position {
        self.to
    }

    /// Where the events after `cursor` start in this window: `None` when the window does not
    /// reach back that far (or has nothing after it).
    fn find(&self, cursor: Position) -> Option<(usize, usize)> {
        if cursor < self.from || cursor >= self.to {
            return None;
        }
        let chunk = self
            .chunks
            .iter()
            .position(|c| c.last().is_some_and(|e| e.position > cursor))?;
        let index = self.chunks[chunk].partition_point(|e| e.position <= cursor);
        Some((chunk, index))
    }

    fn get(&self, (chunk, index): (usize, usize)) -> Option<(&RecordedEvent, (usize, usize))> {
        let c = self.chunks.get(chunk)?;
        let event = c.get(index)?;
        let next = if index + 1 < c.len() {
            (chunk, index + 1)
        } else {
            (chunk + 1, 0)
        };
        Some((event, next))
    }
}

/// Follows the global log of `store` after `after`: live from the shared `tail` (one reader
/// for every subscriber of the process) whenever the tail reaches back to the subscriber's
/// cursor, from the store in chunks of `page_size` events otherwise (catching up, or fallen
/// behind the tail).
pub(crate) fn follow_tail<S>(
    store: S,
    after: Position,
    tail: watch::Receiver<Arc<Window>>,
    poll_interval: Duration,
    page_size: usize,
) -> EventSubscription
where
    S: EventStore + 'static,
{
    enum Source {
        /// Between sources: look at the tail.
        Idle,
        /// Reading one chunk from the store, with how many events it gave so far.
        Store(EventSubscription, usize),
        /// Handing out the tail's events from this place on.
        Tail(Arc<Window>, (usize, usize)),
    }
    struct State<S> {
        store: S,
        cursor: Position,
        source: Source,
        tail: watch::Receiver<Arc<Window>>,
        poll_interval: Duration,
        page_size: usize,
    }
    let state = State {
        store,
        cursor: after,
        source: Source::Idle,
        tail,
        poll_interval,
        page_size,
    };
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        loop {
            match &mut st.source {
                Source::Idle => {
                    let window = st.tail.borrow_and_update().clone();
                    if let Some(at) = window.find(st.cursor) {
                        st.source = Source::Tail(window, at);
                    } else if st.cursor >= window.to() {
                        // Caught up with the tail: wait for it to move.
                        if st.tail.changed().await.is_err() {
                            // The tail reader is gone (the store is shutting down): poll.
                            tokio::time::sleep(st.poll_interval).await;
                            st.source =
                                Source::Store(st.store.stream_all(st.cursor, st.page_size), 0);
                        }
                    } else {
                        // Behind the tail: catch up from the store.
                        st.source = Source::Store(st.store.stream_all(st.cursor, st.page_size), 0);
                    }
                }
                Source::Tail(window, at) => match window.get(*at) {
                    Some((event, next)) => {
                        let event = event.clone();
                        *at = next;
                        st.cursor = event.position;
                        return Some((Ok(event), st));
                    }
                    None => st.source = Source::Idle,
                },
                Source::Store(chunk, seen) => match chunk.next().await {
                    Some(Ok(event)) => {
                        *seen += 1;
                        st.cursor = event.position;
                        return Some((Ok(event), st));
                    }
                    Some(Err(e)) => {
                        st.source = Source::Idle;
                        return Some((Err(e), st));
                    }
                    None => st.source = Source::Idle,
                },
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use uuid::Uuid;

    use super::Window;
    use crate::store::{EventMetadata, Hash, Position, RecordedEvent, StreamId};

    fn events(positions: std::ops::RangeInclusive<u64>) -> Vec<RecordedEvent> {
        positions
            .map(|p| RecordedEvent {
                position: Position(p),
                event_id: Uuid::from_u128(u128::from(p)),
                stream_id: StreamId::new(format!("s-{p}")).expect("id"),
                stream_version: 1,
                event_type: "Happened".into(),
                schema_version: 1,
                data: "{}".into(),
                metadata: EventMetadata::new(Uuid::nil(), "test"),
                recorded_at: Utc::now(),
                effective_at: Utc::now(),
                hash: Hash([0; 32]),
            })
            .collect()
    }

    /// Every event after `cursor` that the window hands out, in order.
    fn after(window: &Window, cursor: u64) -> Option<Vec<u64>> {
        let mut at = window.find(Position(cursor))?;
        let mut out = Vec::new();
        while let Some((e, next)) = window.get(at) {
            out.push(e.position.0);
            at = next;
        }
        Some(out)
    }

    #[test]
    fn the_window_hands_out_what_follows_a_cursor_it_reaches_back_to() {
        let w = Window::at(Position(10))
            .extended(events(11..=13), 100)
            .extended(Vec::new(), 100)
            .extended(events(14..=20), 100);
        assert_eq!(w.to(), Position(20));
        assert_eq!(after(&w, 10), Some((11..=20).collect()));
        assert_eq!(after(&w, 13), Some((14..=20).collect()), "across chunks");
        assert_eq!(after(&w, 15), Some((16..=20).collect()), "within a chunk");
        assert_eq!(after(&w, 20), None, "nothing after the end yet");
        assert_eq!(after(&w, 9), None, "before the window: read the store");
    }

    #[test]
    fn the_window_drops_its_oldest_chunks_past_its_bound() {
        let w = Window::at(Position(0))
            .extended(events(1..=4), 6)
            .extended(events(5..=8), 6)
            .extended(events(9..=10), 6);
        // 10 events > 6: the first chunk went, the window now starts after position 4.
        assert_eq!(after(&w, 3), None);
        assert_eq!(after(&w, 4), Some((5..=10).collect()));
        // A single chunk larger than the bound stays (the newest events are always there).
        let big = Window::at(Position(0)).extended(events(1..=9), 6);
        assert_eq!(after(&big, 0), Some((1..=9).collect()));
    }
}
