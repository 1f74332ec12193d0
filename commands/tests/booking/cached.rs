//! Holds decided on cached slot and listing states: never on a state the store no longer holds.
//! "Another process" is a second writer that does not share the cache.

use std::sync::Arc;

use tessera_commands::booking::{
    BookingConfig, cancel_booking, place_booking, place_booking_cached,
};
use tessera_commands::error::CommandError;
use tessera_commands::handler::{AggregateCache, execute, stream_of};
use tessera_domain::booking::Canceller;
use tessera_domain::listing::{ListingAggregate, ListingCommand, ListingError};
use tessera_domain::slot::SlotError;

use super::{ctx, request, slot, t, world};

fn sold_out<T>(outcome: &Result<T, CommandError>) -> bool {
    matches!(outcome, Err(CommandError::Slot(SlotError::SoldOut { .. })))
}

/// Holds through one shared cache race holds from another process: the slot is never oversold.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cached_and_uncached_holds_racing_never_oversell() {
    let w = Arc::new(world(10).await);
    let cache = Arc::new(AggregateCache::new(100));
    let barrier = Arc::new(tokio::sync::Barrier::new(300));
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let (w, cache, barrier) = (w.clone(), cache.clone(), barrier.clone());
            tokio::spawn(async move {
                let req = request(&w, 1);
                let c = ctx("user:customer", t(1, 9));
                barrier.wait().await;
                let cache = (i % 3 != 0).then_some(&*cache);
                place_booking_cached(&*w.store, cache, &BookingConfig::default(), &req, &c).await
            })
        })
        .collect();
    let (mut held, mut refused) = (0, 0);
    for task in tasks {
        let outcome = task.await.expect("task");
        if outcome.is_ok() {
            held += 1;
        } else if sold_out(&outcome) {
            refused += 1;
        } else {
            panic!("expected a hold or sold out, got {outcome:?}");
        }
    }
    assert_eq!((held, refused), (10, 290));
    let s = slot(&w).await;
    assert_eq!((s.taken(), s.remaining(), s.holds.len()), (10, 0, 10));
}

/// A cache that is behind the store in either direction (seats taken or freed elsewhere) only
/// costs a re-decision on the store's state.
#[tokio::test]
async fn a_stale_cache_never_decides() {
    let w = world(3).await;
    let cache = AggregateCache::new(100);
    let config = BookingConfig::default();
    let first = request(&w, 1);
    place_booking_cached(
        &*w.store,
        Some(&cache),
        &config,
        &first,
        &ctx("user:c", t(1, 9)),
    )
    .await
    .expect("a hold warms the cache");

    // Another process takes the two remaining seats; the cache still sees two free.
    let elsewhere = request(&w, 2);
    place_booking(&*w.store, &config, &elsewhere, &ctx("user:c", t(1, 9)))
        .await
        .expect("hold elsewhere");
    let late = place_booking_cached(
        &*w.store,
        Some(&cache),
        &config,
        &request(&w, 1),
        &ctx("user:c", t(1, 9)),
    )
    .await;
    assert!(sold_out(&late), "{late:?}");

    // Another process frees two seats; the cache (refreshed by the refusal) sees none free.
    cancel_booking(
        &*w.store,
        elsewhere.booking_id,
        Canceller::Customer(elsewhere.customer_id),
        false,
        &ctx("user:c", t(1, 10)),
    )
    .await
    .expect("cancel elsewhere");
    let freed = request(&w, 2);
    let placed = place_booking_cached(
        &*w.store,
        Some(&cache),
        &config,
        &freed,
        &ctx("user:c", t(1, 10)),
    )
    .await
    .expect("the freed seats are held");
    assert!(!placed.executed.replayed);
    let s = slot(&w).await;
    assert_eq!(s.remaining(), 0);
    assert!(s.holds.contains_key(&first.booking_id) && s.holds.contains_key(&freed.booking_id));
}

/// The listing a hold was decided on is part of the decision: once another process retired it,
/// a hold decided on the cached (published) listing does not commit.
#[tokio::test]
async fn a_listing_retired_elsewhere_refuses_cached_holds() {
    let w = world(10).await;
    let cache = AggregateCache::new(100);
    let config = BookingConfig::default();
    place_booking_cached(
        &*w.store,
        Some(&cache),
        &config,
        &request(&w, 1),
        &ctx("user:c", t(1, 9)),
    )
    .await
    .expect("a hold warms the cache");
    execute::<ListingAggregate>(
        &*w.store,
        stream_of::<ListingAggregate>(w.listing_id),
        &ListingCommand::Retire {
            reason: "season over".into(),
        },
        &ctx("user:provider", t(1, 10)),
    )
    .await
    .expect("retire elsewhere");
    let err = place_booking_cached(
        &*w.store,
        Some(&cache),
        &config,
        &request(&w, 1),
        &ctx("user:c", t(1, 11)),
    )
    .await
    .expect_err("the listing is retired");
    assert!(
        matches!(err, CommandError::Listing(ListingError::Retired)),
        "{err}"
    );
    assert_eq!(slot(&w).await.taken(), 1);
}

/// A retried command through the cache returns its first outcome and holds its seats once.
#[tokio::test]
async fn a_retry_through_the_cache_replays() {
    let w = world(10).await;
    let cache = AggregateCache::new(100);
    let config = BookingConfig::default();
    let req = request(&w, 2);
    let c = ctx("user:c", t(1, 9));
    let first = place_booking_cached(&*w.store, Some(&cache), &config, &req, &c)
        .await
        .expect("place");
    // The retry arrives later (its context, hence its events' content, differ in time).
    let mut later = c.clone();
    later.now = t(1, 10);
    let again = place_booking_cached(&*w.store, Some(&cache), &config, &req, &later)
        .await
        .expect("retry");
    assert!(!first.executed.replayed && again.executed.replayed);
    assert_eq!(again.executed.position, first.executed.position);
    // The answer is the first one: the hold expiry recorded then, not one computed now.
    assert_eq!(first.hold_expires_at, t(1, 9) + config.hold_ttl);
    assert_eq!(again.hold_expires_at, first.hold_expires_at);
    assert_eq!(slot(&w).await.taken(), 2, "seats held once");
}

/// The store, counting the stream events it hands out.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn tessera_log::store::EventStore>,
    read: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl tessera_log::store::EventStore for Counting {
    fn capabilities(&self) -> tessera_log::store::Capabilities {
        self.inner.capabilities()
    }
    async fn append(
        &self,
        writes: Vec<tessera_log::store::StreamWrite>,
    ) -> Result<tessera_log::store::AppendResult, tessera_log::store::StoreError> {
        self.inner.append(writes).await
    }
    async fn read_stream(
        &self,
        stream: &tessera_log::store::StreamId,
        read: tessera_log::store::StreamRead,
        limit: usize,
    ) -> Result<Vec<tessera_log::store::RecordedEvent>, tessera_log::store::StoreError> {
        let events = self.inner.read_stream(stream, read, limit).await?;
        self.read
            .fetch_add(events.len(), std::sync::atomic::Ordering::SeqCst);
        Ok(events)
    }
    async fn read_all(
        &self,
        after: tessera_log::store::Position,
        limit: usize,
    ) -> Result<Vec<tessera_log::store::RecordedEvent>, tessera_log::store::StoreError> {
        self.inner.read_all(after, limit).await
    }
    fn stream_all(
        &self,
        after: tessera_log::store::Position,
        limit: usize,
    ) -> tessera_log::store::EventSubscription {
        self.inner.stream_all(after, limit)
    }
    async fn head(&self) -> Result<tessera_log::store::Position, tessera_log::store::StoreError> {
        self.inner.head().await
    }
    fn subscribe_all(
        &self,
        after: tessera_log::store::Position,
    ) -> tessera_log::store::EventSubscription {
        self.inner.subscribe_all(after)
    }
}

/// Releases (cancellations, expiries) catch a cached slot up with the events written since,
/// by anyone, instead of replaying the slot's whole stream: the state is the store's, exactly,
/// and what is read is only what is new.
#[tokio::test]
async fn releases_catch_a_cached_slot_up_instead_of_replaying_it() {
    use tessera_commands::booking::{cancel_booking_cached, expire_booking_cached};
    use tessera_commands::handler::{load, load_caught_up};
    use tessera_domain::slot::SlotAggregate;
    use uuid::Uuid;

    let w = world(100).await;
    let store = Counting {
        inner: Arc::clone(&w.store),
        read: Default::default(),
    };
    let slot_stream = stream_of::<SlotAggregate>(w.slot_id);
    // Another process holds bookings (one event each on the slot, after its schedule).
    let mut bookings = Vec::new();
    let hold = async |bookings: &mut Vec<_>, n| {
        for _ in 0..n {
            let req = request(&w, 1);
            place_booking(
                &*w.store,
                &BookingConfig::default(),
                &req,
                &ctx("user:c", t(1, 9)),
            )
            .await
            .expect("hold");
            bookings.push(req);
        }
    };
    hold(&mut bookings, 30).await;
    let cache = AggregateCache::new(100);
    let first =
        load_caught_up::<SlotAggregate>(&store, Some(&cache), slot_stream.clone(), Uuid::nil())
            .await
            .expect("load");
    assert_eq!(first.version, 31);
    // Ten more holds elsewhere; the cache does not see them.
    hold(&mut bookings, 10).await;
    store.read.store(0, std::sync::atomic::Ordering::SeqCst);
    // A cancellation through the cache: the booking's stream (1 event) and the slot's ten new
    // events are read, not the slot's 41.
    cancel_booking_cached(
        &store,
        Some(&cache),
        bookings[35].booking_id,
        Canceller::Customer(bookings[35].customer_id),
        false,
        &ctx("user:c", t(1, 10)),
    )
    .await
    .expect("cancel");
    let read = store.read.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        read,
        1 + 10,
        "booking stream + the slot's events after the cached state"
    );
    // An expiry through the cache after the hold lapsed: seats come back, exactly once.
    let lapsed = ctx("system:expire-hold", t(2, 9));
    let expired = expire_booking_cached(&store, Some(&cache), bookings[0].booking_id, &lapsed)
        .await
        .expect("expire");
    let again = expire_booking_cached(&store, Some(&cache), bookings[0].booking_id, &lapsed)
        .await
        .expect("a retry is a replay");
    assert!(again.replayed);
    assert_eq!(
        again.position, expired.position,
        "the first answer, slot event included"
    );
    // What the cache now holds, caught up, is exactly what a full replay gives.
    let caught_up =
        load_caught_up::<SlotAggregate>(&store, Some(&cache), slot_stream.clone(), Uuid::nil())
            .await
            .expect("load");
    let whole = load::<SlotAggregate>(&*w.store, slot_stream, Uuid::nil())
        .await
        .expect("load");
    assert_eq!(caught_up.version, whole.version);
    assert_eq!(caught_up.last_position, whole.last_position);
    assert_eq!(
        serde_json::to_value(&caught_up.state).expect("json"),
        serde_json::to_value(&whole.state).expect("json")
    );
    let s = slot(&w).await;
    assert_eq!(
        (s.taken(), s.holds.len()),
        (38, 38),
        "a cancellation and an expiry released one seat each"
    );
}
