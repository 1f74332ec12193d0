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
