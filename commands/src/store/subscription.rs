//! Catch-up-then-live subscriptions over any store that can read its global log in pages.
//!
//! The subscription pulls one page at a time: it reads after its cursor, hands the events out
//! one by one, and when a read comes back empty it waits for a wake-up (a new append in this
//! process, a PostgreSQL NOTIFY from another one) or, as a fallback, for the poll interval.
//! Notifications never carry data, so a lost one costs at most one poll interval.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::watch;

use super::{EventStore, EventSubscription, Position, RecordedEvent};

/// Follows the global log of `store` after `after`.
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
        buffer: VecDeque<RecordedEvent>,
        wake: watch::Receiver<()>,
        wake_alive: bool,
        poll_interval: Duration,
        page_size: usize,
    }
    let state = State {
        store,
        cursor: after,
        buffer: VecDeque::new(),
        wake,
        wake_alive: true,
        poll_interval,
        page_size,
    };
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(event) = st.buffer.pop_front() {
                st.cursor = event.position;
                return Some((Ok(event), st));
            }
            // Mark the current wake-up as seen *before* reading, so an append that lands after
            // the read still wakes the wait below.
            st.wake.borrow_and_update();
            match st.store.read_all(st.cursor, st.page_size).await {
                Err(e) => return Some((Err(e), st)),
                Ok(page) if page.is_empty() => {
                    if st.wake_alive {
                        tokio::select! {
                            changed = st.wake.changed() => st.wake_alive = changed.is_ok(),
                            () = tokio::time::sleep(st.poll_interval) => {}
                        }
                    } else {
                        tokio::time::sleep(st.poll_interval).await;
                    }
                }
                Ok(page) => st.buffer.extend(page),
            }
        }
    }))
}
