//! Catch-up-then-live subscriptions over any store that can read its global log in pages.
//!
//! The subscription pulls one chunk at a time: it reads after its cursor, hands the events out
//! one by one as they arrive, and when a chunk comes back short it waits for a wake-up (a new append in this
//! process, a PostgreSQL NOTIFY from another one) or, as a fallback, for the poll interval.
//! Notifications never carry data, so a lost one costs at most one poll interval.

use std::time::Duration;

use tokio::sync::watch;

use futures::StreamExt;

use super::{EventStore, EventSubscription, Position};

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
