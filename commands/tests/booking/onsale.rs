//! On-sale: holds on one slot through its queue (ADR 0014). Batches are an implementation
//! detail: each request gets its own booking, its own answer, its own replay; no ordinary hold
//! ever ends in `Contention`, and a slot is never oversold, also with a second "process" (its
//! own store, cache and queues) on the same slot.

use std::collections::BTreeSet;
use std::sync::Arc;

use tessera_commands::booking::{BookingConfig, PlaceBooking, Placed};
use tessera_commands::error::CommandError;
use tessera_commands::handler::{AggregateCache, stream_of};
use tessera_commands::onsale::{QueueConfig, SlotQueues};
use tessera_domain::booking::{BookingError, BookingStatus};
use tessera_domain::slot::{SlotAggregate, SlotError};
use tessera_domain::values::BookingId;
use tessera_log::store::{EventStore, PgEventStore, PgStoreOptions};

use super::{World, ctx, request, slot, status, t, world};

fn queues(store: Arc<dyn EventStore>, config: QueueConfig) -> (SlotQueues, AggregateCache) {
    let cache = AggregateCache::new(1_000);
    (
        SlotQueues::new(store, cache.clone(), BookingConfig::default(), config),
        cache,
    )
}

/// Sends `n` holds of one seat at once through `pick(i)`'s queues; their outcomes in order.
async fn rush(
    w: &Arc<World>,
    n: usize,
    pick: impl Fn(usize) -> SlotQueues,
) -> Vec<(PlaceBooking, Result<Placed, CommandError>)> {
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (queues, barrier, req) = (pick(i), barrier.clone(), request(w, 1));
            tokio::spawn(async move {
                barrier.wait().await;
                let outcome = queues.place(req, ctx("user:customer", t(1, 9))).await;
                (req, outcome)
            })
        })
        .collect();
    let mut outcomes = Vec::with_capacity(n);
    for task in tasks {
        outcomes.push(task.await.expect("task"));
    }
    outcomes
}

/// The bookings the slot holds seats for.
async fn holders(w: &World) -> BTreeSet<BookingId> {
    slot(w).await.holds.keys().copied().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_holds_on_one_slot_all_succeed_without_contention() {
    let w = Arc::new(world(10_000).await);
    let (q, _) = queues(w.store.clone(), QueueConfig::default());
    let outcomes = rush(&w, 1_000, |_| q.clone()).await;
    let mut held = BTreeSet::new();
    for (req, outcome) in &outcomes {
        let placed = outcome.as_ref().expect("every hold succeeds");
        assert!(!placed.executed.replayed);
        held.insert(req.booking_id);
    }
    assert_eq!(held.len(), 1_000);
    let s = slot(&w).await;
    assert_eq!((s.taken(), s.remaining()), (1_000, 9_000));
    assert_eq!(
        holders(&w).await,
        held,
        "each acknowledged hold is in the log once"
    );
    for (req, _) in outcomes.iter().step_by(97) {
        assert_eq!(status(&w, req.booking_id).await, BookingStatus::Held);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_holds_on_ten_seats_sell_exactly_ten() {
    let w = Arc::new(world(10).await);
    let (q, _) = queues(w.store.clone(), QueueConfig::default());
    let outcomes = rush(&w, 1_000, |_| q.clone()).await;
    let mut held = BTreeSet::new();
    let mut sold_out = 0;
    for (req, outcome) in outcomes {
        match outcome {
            Ok(_) => {
                held.insert(req.booking_id);
            }
            Err(CommandError::Slot(SlotError::SoldOut { requested: 1, .. })) => sold_out += 1,
            Err(other) => panic!("expected a hold or sold out, got {other}"),
        }
    }
    assert_eq!((held.len(), sold_out), (10, 990));
    assert_eq!(holders(&w).await, held);
}

/// Two processes, each with its own store, cache and queues, rush the same slot: the expected
/// version decides between their batches, and no client sees a contention failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_on_one_slot_never_oversell_nor_surface_contention() {
    let w = Arc::new(world(300).await);
    let other: Arc<dyn EventStore> = Arc::new(PgEventStore::new(
        w._db.pool.clone(),
        PgStoreOptions::default(),
    ));
    let small = QueueConfig {
        depth: 4096,
        // Small batches: many appends, so the two processes do collide.
        max_batch: 8,
    };
    let (a, _) = queues(w.store.clone(), small);
    let (b, _) = queues(other, small);
    let outcomes = rush(&w, 600, |i| if i % 2 == 0 { a.clone() } else { b.clone() }).await;
    let mut held = BTreeSet::new();
    let mut sold_out = 0;
    for (req, outcome) in outcomes {
        match outcome {
            Ok(_) => {
                held.insert(req.booking_id);
            }
            Err(CommandError::Slot(SlotError::SoldOut { .. })) => sold_out += 1,
            Err(other) => panic!("expected a hold or sold out, got {other}"),
        }
    }
    assert_eq!((held.len(), sold_out), (300, 300));
    assert_eq!(holders(&w).await, held, "every acknowledged hold once");
}

/// A retried request (same command) in a batch is answered with what its first attempt wrote,
/// and does not fail the requests batched with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_among_a_batch_is_replayed_and_the_batch_still_lands() {
    let w = Arc::new(world(100).await);
    let (q, _) = queues(w.store.clone(), QueueConfig::default());
    let first = request(&w, 2);
    let first_ctx = ctx("user:customer", t(1, 9));
    let placed = q
        .place(first, first_ctx.clone())
        .await
        .expect("first attempt");
    // The retry races 50 new holds through the same queue.
    let retry = {
        let q = q.clone();
        tokio::spawn(async move { q.place(first, first_ctx).await })
    };
    let others = rush(&w, 50, |_| q.clone()).await;
    let again = retry.await.expect("task").expect("retry");
    assert!(again.executed.replayed);
    assert_eq!(again.hold_expires_at, placed.hold_expires_at);
    assert!(others.iter().all(|(_, o)| o.is_ok()));
    assert_eq!(
        slot(&w).await.taken(),
        2 + 50,
        "the retry held nothing twice"
    );
    // A new command for the same booking is refused by the domain.
    let refused = q
        .place(first, ctx("user:customer", t(1, 9)))
        .await
        .expect_err("a second placement of one booking");
    assert!(
        matches!(refused, CommandError::Booking(BookingError::AlreadyPlaced)),
        "{refused}"
    );
}

/// A full queue refuses at once (`Busy`, nothing done) instead of growing; what it accepted is
/// decided once the slot's turn comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_refuses_at_once_and_decides_what_it_took() {
    let w = Arc::new(world(100).await);
    let (q, cache) = queues(
        w.store.clone(),
        QueueConfig {
            depth: 1,
            max_batch: 1,
        },
    );
    // Someone else has the slot's turn: the worker takes at most one request and waits, and
    // the queue holds one more. Each request is enqueued (or refused) when first polled.
    let turn = cache.turn(&stream_of::<SlotAggregate>(w.slot_id)).await;
    let mut accepted = Vec::new();
    let mut busy = 0;
    for _ in 0..5 {
        let mut placing = Box::pin(
            q.clone()
                .place_owned(request(&w, 1), ctx("user:customer", t(1, 9))),
        );
        match futures::poll!(&mut placing) {
            std::task::Poll::Ready(Err(CommandError::Busy(_))) => busy += 1,
            std::task::Poll::Ready(other) => {
                panic!("nothing is decided while the turn is taken: {other:?}")
            }
            std::task::Poll::Pending => accepted.push(tokio::spawn(placing)),
        }
    }
    assert!(
        (1..=2).contains(&accepted.len()) && busy == 5 - accepted.len(),
        "one request in the worker's hands and at most one waiting: {} accepted",
        accepted.len()
    );
    drop(turn);
    let n = accepted.len() as u32;
    for task in accepted {
        task.await
            .expect("task")
            .expect("decided once the turn came");
    }
    assert_eq!(slot(&w).await.taken(), n);
}

/// Releases take the slot's turn with the holds (ADR 0014): cancellations sent during a rush
/// are decided between batches, first come first served, never starved into `Contention`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancellations_during_a_rush_take_their_turn_and_never_starve() {
    use tessera_commands::booking::cancel_booking_cached;
    use tessera_domain::booking::Canceller;

    let w = Arc::new(world(2_000).await);
    let (q, cache) = queues(w.store.clone(), QueueConfig::default());
    let first = rush(&w, 100, |_| q.clone()).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let cancels = {
        let (w, cache, barrier) = (w.clone(), cache.clone(), barrier.clone());
        let held: Vec<PlaceBooking> = first.iter().map(|(req, _)| *req).collect();
        tokio::spawn(async move {
            barrier.wait().await;
            let tasks: Vec<_> = held
                .into_iter()
                .map(|req| {
                    let (w, cache) = (w.clone(), cache.clone());
                    tokio::spawn(async move {
                        cancel_booking_cached(
                            &*w.store,
                            Some(&cache),
                            req.booking_id,
                            Canceller::Customer(req.customer_id),
                            false,
                            &ctx("user:customer", t(1, 10)).with_reason("plans changed"),
                        )
                        .await
                    })
                })
                .collect();
            let mut outcomes = Vec::new();
            for task in tasks {
                outcomes.push(task.await.expect("task"));
            }
            outcomes
        })
    };
    barrier.wait().await;
    let second = rush(&w, 1_000, |_| q.clone()).await;
    for outcome in cancels.await.expect("cancels") {
        outcome.expect("every cancellation is decided, none starved");
    }
    assert!(second.iter().all(|(_, o)| o.is_ok()), "every hold succeeds");
    let s = slot(&w).await;
    assert_eq!(s.taken(), 1_000, "100 held and released, 1,000 held");
    for (req, _) in first.iter().step_by(9) {
        assert_eq!(status(&w, req.booking_id).await, BookingStatus::Cancelled);
    }
}
