//! Booking commands on PostgreSQL: atomic place-and-hold under contention, release exactly once,
//! command retries, idempotency keys.

mod cached;
mod lifecycle;
mod live;
mod money;
mod moves;
mod onsale;
mod payments;
mod receipts;
mod users;

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use tessera_commands::booking::{
    BookingConfig, PlaceBooking, cancel_booking, cancellation_quote, expire_booking, place_booking,
};
use tessera_commands::error::CommandError;
use tessera_commands::handler::{CommandContext, execute, load, stream_of};
use tessera_commands::idempotency::{Claim, IdempotencyKeys};
use tessera_domain::booking::{BookingAggregate, BookingError, BookingStatus, Canceller};
use tessera_domain::listing::{
    Destination, ListingAggregate, ListingCommand, ListingDetails, ListingKind,
};
use tessera_domain::policy::CancellationPolicy;
use tessera_domain::slot::{SlotAggregate, SlotCommand, SlotError, SlotState};
use tessera_domain::values::{BookingId, Currency, ListingId, Money, Seats, SlotId, UserId};
use tessera_log::store::{EventStore, PgEventStore, PgStoreOptions};
use tessera_log::testkit::TestDatabase;
use uuid::Uuid;

fn t(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, day, hour, 0, 0)
        .single()
        .expect("valid time")
}

fn ctx(actor: &str, now: DateTime<Utc>) -> CommandContext {
    CommandContext::new(Uuid::new_v4(), actor, now)
}

struct World {
    _db: TestDatabase,
    store: Arc<dyn EventStore>,
    listing_id: ListingId,
    slot_id: SlotId,
    provider: UserId,
}

/// A published experience with one slot of `capacity` seats on 20 Dec 10:00–14:00 at 50 EUR.
async fn world(capacity: u32) -> World {
    let db = TestDatabase::new().await;
    let store: Arc<dyn EventStore> = Arc::new(PgEventStore::new(
        db.pool.clone(),
        PgStoreOptions::default(),
    ));
    let provider = UserId(Uuid::new_v4());
    let listing_id = ListingId(Uuid::new_v4());
    let slot_id = SlotId(Uuid::new_v4());
    let price = Money::new(5_000, Currency::EUR).expect("money");
    execute::<ListingAggregate>(
        &*store,
        stream_of::<ListingAggregate>(listing_id),
        &ListingCommand::Publish {
            id: listing_id,
            provider_id: provider,
            details: ListingDetails {
                kind: ListingKind::Experience,
                title: "Sunrise kayak tour".into(),
                description: "Paddle the bay at dawn.".into(),
                destination: Destination {
                    name: "Lisbon".into(),
                    country: "PT".into(),
                    lat: 38.7223,
                    lon: -9.1393,
                },
                category: "water-sports".into(),
                duration_minutes: 240,
                tax_rate_bp: 1000,
                includes: vec!["kayak".into(), "guide".into()],
                itinerary: vec![],
            },
            base_price: price,
            policy: CancellationPolicy::standard(),
        },
        &ctx("user:provider", t(1, 8)),
    )
    .await
    .expect("publish");
    execute::<SlotAggregate>(
        &*store,
        stream_of::<SlotAggregate>(slot_id),
        &SlotCommand::Schedule {
            id: slot_id,
            listing_id,
            provider_id: provider,
            starts_at: t(20, 10),
            ends_at: t(20, 14),
            capacity,
            price_per_seat: price,
        },
        &ctx("user:provider", t(1, 8)),
    )
    .await
    .expect("schedule");
    World {
        _db: db,
        store,
        listing_id,
        slot_id,
        provider,
    }
}

fn request(w: &World, seats: u32) -> PlaceBooking {
    PlaceBooking {
        booking_id: BookingId(Uuid::new_v4()),
        customer_id: UserId(Uuid::new_v4()),
        slot_id: w.slot_id,
        seats: Seats::new(seats).expect("seats"),
    }
}

async fn slot(w: &World) -> tessera_domain::slot::Slot {
    match load::<SlotAggregate>(
        &*w.store,
        stream_of::<SlotAggregate>(w.slot_id),
        Uuid::nil(),
    )
    .await
    .expect("load")
    .state
    {
        SlotState::Scheduled(s) => s,
        SlotState::New => panic!("slot missing"),
    }
}

async fn status(w: &World, booking_id: BookingId) -> BookingStatus {
    load::<BookingAggregate>(
        &*w.store,
        stream_of::<BookingAggregate>(booking_id),
        Uuid::nil(),
    )
    .await
    .expect("load")
    .state
    .booking()
    .expect("booking")
    .status
}

/// 500 customers try to hold one seat each on a 10-seat slot at the same moment: exactly 10
/// bookings hold seats, every other attempt gets a clear "sold out".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_concurrent_holds_for_ten_seats() {
    let w = Arc::new(world(10).await);
    let barrier = Arc::new(tokio::sync::Barrier::new(500));
    let tasks: Vec<_> = (0..500)
        .map(|_| {
            let (w, barrier) = (Arc::clone(&w), Arc::clone(&barrier));
            tokio::spawn(async move {
                let req = request(&w, 1);
                barrier.wait().await;
                let outcome = place_booking(
                    &*w.store,
                    &BookingConfig::default(),
                    &req,
                    &ctx("user:customer", t(1, 9)),
                )
                .await;
                (req.booking_id, outcome)
            })
        })
        .collect();
    let (mut held, mut sold_out) = (Vec::new(), 0);
    for task in tasks {
        match task.await.expect("task") {
            (id, Ok(_)) => held.push(id),
            (
                _,
                Err(CommandError::Slot(SlotError::SoldOut {
                    requested: 1,
                    remaining: 0,
                })),
            ) => sold_out += 1,
            (_, Err(other)) => panic!("expected success or sold out, got {other}"),
        }
    }
    assert_eq!(held.len(), 10);
    assert_eq!(sold_out, 490);
    let s = slot(&w).await;
    assert_eq!((s.taken(), s.remaining()), (10, 0));
    assert_eq!(
        s.holds
            .keys()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        held.iter().copied().collect()
    );
    for id in held {
        assert_eq!(status(&w, id).await, BookingStatus::Held);
    }
}

#[tokio::test]
async fn a_retried_command_is_applied_once() {
    let w = world(10).await;
    let req = request(&w, 2);
    let c = ctx("user:customer", t(1, 9));
    let first = place_booking(&*w.store, &BookingConfig::default(), &req, &c)
        .await
        .expect("place");
    let again = place_booking(&*w.store, &BookingConfig::default(), &req, &c)
        .await
        .expect("retry");
    assert!(!first.replayed);
    assert!(again.replayed);
    assert_eq!(again.position, first.position);
    assert_eq!(slot(&w).await.taken(), 2, "seats held once");
    // A new command for the same booking is refused by the domain.
    let err = place_booking(
        &*w.store,
        &BookingConfig::default(),
        &req,
        &ctx("user:customer", t(1, 9)),
    )
    .await
    .expect_err("second placement");
    assert!(
        matches!(err, CommandError::Booking(BookingError::AlreadyPlaced)),
        "{err}"
    );
}

#[tokio::test]
async fn cancelling_releases_seats_exactly_once_and_quotes_first() {
    let w = world(3).await;
    let req = request(&w, 3);
    place_booking(
        &*w.store,
        &BookingConfig::default(),
        &req,
        &ctx("user:customer", t(1, 9)),
    )
    .await
    .expect("place");
    assert_eq!(slot(&w).await.remaining(), 0);
    let customer = Canceller::Customer(req.customer_id);
    let quote = cancellation_quote(
        &*w.store,
        req.booking_id,
        customer,
        false,
        &ctx("user:customer", t(1, 9)),
    )
    .await
    .expect("quote");
    assert_eq!(quote.minor, 0, "nothing paid yet");
    cancel_booking(
        &*w.store,
        req.booking_id,
        customer,
        false,
        &ctx("user:customer", t(1, 9)).with_reason("plans changed"),
    )
    .await
    .expect("cancel");
    assert_eq!(status(&w, req.booking_id).await, BookingStatus::Cancelled);
    assert_eq!(slot(&w).await.remaining(), 3, "seats released");
    let err = cancel_booking(
        &*w.store,
        req.booking_id,
        customer,
        false,
        &ctx("user:customer", t(1, 9)),
    )
    .await
    .expect_err("cancel twice");
    assert!(
        matches!(
            err,
            CommandError::Booking(BookingError::InvalidTransition { .. })
        ),
        "{err}"
    );
    assert_eq!(slot(&w).await.remaining(), 3, "not released twice");
}

#[tokio::test]
async fn holds_expire_and_free_their_seats() {
    let w = world(2).await;
    let req = request(&w, 2);
    place_booking(
        &*w.store,
        &BookingConfig::default(),
        &req,
        &ctx("user:customer", t(1, 9)),
    )
    .await
    .expect("place");
    let other = request(&w, 1);
    let err = place_booking(
        &*w.store,
        &BookingConfig::default(),
        &other,
        &ctx("user:customer", t(1, 9)),
    )
    .await
    .expect_err("sold out");
    assert!(
        matches!(err, CommandError::Slot(SlotError::SoldOut { .. })),
        "{err}"
    );
    let too_early = expire_booking(
        &*w.store,
        req.booking_id,
        &ctx("system:expiry", t(1, 9) + TimeDelta::minutes(14)),
    )
    .await
    .expect_err("not due");
    assert!(
        matches!(
            too_early,
            CommandError::Booking(BookingError::HoldNotExpired(_))
        ),
        "{too_early}"
    );
    expire_booking(
        &*w.store,
        req.booking_id,
        &ctx("system:expiry", t(1, 9) + TimeDelta::minutes(15)),
    )
    .await
    .expect("expire");
    assert_eq!(status(&w, req.booking_id).await, BookingStatus::Expired);
    place_booking(
        &*w.store,
        &BookingConfig::default(),
        &other,
        &ctx("user:customer", t(1, 10)),
    )
    .await
    .expect("seats are free again");
}

#[tokio::test]
async fn events_carry_actor_reason_and_causation() {
    let w = world(2).await;
    let req = request(&w, 1);
    let c = ctx("user:customer-7", t(1, 9));
    place_booking(&*w.store, &BookingConfig::default(), &req, &c)
        .await
        .expect("place");
    let admin = ctx("user:admin-1", t(1, 9)).with_reason("duplicate booking");
    cancel_booking(
        &*w.store,
        req.booking_id,
        Canceller::Admin(UserId(Uuid::new_v4())),
        true,
        &admin,
    )
    .await
    .expect("cancel");
    let events = tessera_log::store::read_whole_stream(
        &*w.store,
        &stream_of::<BookingAggregate>(req.booking_id),
    )
    .await
    .expect("read");
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].metadata.actor, "user:customer-7");
    assert_eq!(events[0].metadata.causation_id, Some(c.command_id));
    assert_eq!(
        events[0].event_id,
        c.event_id(&events[0].stream_id, 0),
        "ids derive from the command"
    );
    assert_eq!(events[1].metadata.actor, "user:admin-1");
    assert_eq!(
        events[1].metadata.reason.as_deref(),
        Some("duplicate booking")
    );
}

#[tokio::test]
async fn idempotency_keys_return_the_first_result_and_refuse_reuse() {
    let db = TestDatabase::new().await;
    let keys = IdempotencyKeys::new(db.pool.clone());
    let request = serde_json::json!({ "slot_id": "s-1", "seats": 2 });
    let Claim::Run { command_id } = keys
        .claim::<serde_json::Value>("user-1", "key-1", &request)
        .await
        .expect("claim")
    else {
        panic!("first claim must run");
    };
    // A retry before the first attempt finished runs again with the same command id.
    let Claim::Run { command_id: again } = keys
        .claim::<serde_json::Value>("user-1", "key-1", &request)
        .await
        .expect("claim")
    else {
        panic!("unfinished claim must run");
    };
    assert_eq!(again, command_id);
    keys.complete(
        "user-1",
        "key-1",
        &serde_json::json!({ "booking_id": "b-1" }),
    )
    .await
    .expect("complete");
    keys.complete(
        "user-1",
        "key-1",
        &serde_json::json!({ "booking_id": "b-2" }),
    )
    .await
    .expect("second complete is ignored");
    match keys
        .claim::<serde_json::Value>("user-1", "key-1", &request)
        .await
        .expect("claim")
    {
        Claim::Done(v) => assert_eq!(v, serde_json::json!({ "booking_id": "b-1" })),
        Claim::Run { .. } => panic!("finished claim must return the first result"),
    }
    let other = serde_json::json!({ "slot_id": "s-1", "seats": 3 });
    let err = keys
        .claim::<serde_json::Value>("user-1", "key-1", &other)
        .await
        .expect_err("reuse");
    assert!(matches!(err, CommandError::IdempotencyKeyReused));
    // Keys are scoped per user.
    assert!(matches!(
        keys.claim::<serde_json::Value>("user-2", "key-1", &other)
            .await,
        Ok(Claim::Run { .. })
    ));
}

#[tokio::test]
async fn concurrent_claims_of_one_key_share_one_command_and_its_result() {
    let db = TestDatabase::new().await;
    let keys = IdempotencyKeys::new(db.pool.clone());
    let request = serde_json::json!({ "slot_id": "s-1", "seats": 1 });
    let other = serde_json::json!({ "slot_id": "s-1", "seats": 9 });
    // Many claims at once, most of them coalesced into shared statements: the same key more
    // than once in one batch, distinct keys, and one reuse of a key with another request.
    let claims = futures::future::join_all((0..40).map(|i| {
        let keys = keys.clone();
        let (request, other) = (request.clone(), other.clone());
        async move {
            let key = if i % 2 == 0 {
                "shared".to_owned()
            } else {
                format!("own-{i}")
            };
            let body = if i == 38 { other } else { request };
            (
                i,
                keys.claim::<serde_json::Value>("user-1", &key, &body).await,
            )
        }
    }))
    .await;
    let mut shared = None;
    let mut own = std::collections::HashSet::new();
    for (i, claim) in claims {
        match (i % 2 == 0, i == 38, claim) {
            (_, true, Err(CommandError::IdempotencyKeyReused)) => {}
            (true, false, Ok(Claim::Run { command_id })) => {
                assert_eq!(
                    *shared.get_or_insert(command_id),
                    command_id,
                    "one command per key"
                );
            }
            (false, false, Ok(Claim::Run { command_id })) => {
                assert!(own.insert(command_id), "a command per distinct key");
            }
            (_, _, other) => panic!("claim {i}: unexpected {other:?}"),
        }
    }
    assert_eq!(own.len(), 20);
    // Results stored after the log, concurrently: the first for the key wins, once.
    let stored = futures::future::join_all((0..10).map(|n| {
        let keys = keys.clone();
        async move {
            keys.complete_after_log("user-1", "shared", &serde_json::json!({ "n": n }))
                .await
        }
    }))
    .await;
    assert!(stored.iter().all(Result::is_ok), "{stored:?}");
    let Claim::Done(first) = keys
        .claim::<serde_json::Value>("user-1", "shared", &request)
        .await
        .expect("claim")
    else {
        panic!("a completed key returns its result");
    };
    let again = keys
        .claim::<serde_json::Value>("user-1", "shared", &request)
        .await
        .expect("claim");
    assert!(
        matches!(again, Claim::Done(ref v) if *v == first),
        "{again:?}"
    );
    assert!(first["n"].as_i64().is_some_and(|n| (0..10).contains(&n)));
}
