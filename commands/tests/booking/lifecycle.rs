//! The whole lifecycle driven by reactors and a manual clock: holds lapse, slots end, points
//! and badges follow, paid cancellations are refunded, a provider's slot cancellation unwinds
//! its bookings — and replaying every reactor from position 0 changes nothing.

use std::sync::Arc;

use chrono::TimeDelta;
use tessera_commands::admin;
use tessera_commands::booking::{BookingConfig, cancel_booking, place_booking, write_review};
use tessera_commands::error::CommandError;
use tessera_commands::gateway::{GatewayEvent, SimulatedGateway};
use tessera_commands::handler::{AggregateCache, CommandContext, execute, load, stream_of};
use tessera_commands::payment::start_payment;
use tessera_commands::reactor::{
    Clock, DeadlineReactor, LoyaltyReactor, ManualClock, PaymentsReactor, Reactor, ReactorRunner,
    fire_due_deadlines, handle_gateway_event,
};
use tessera_domain::booking::{BookingStatus, Canceller};
use tessera_domain::loyalty::{Badge, LoyaltyAccount, LoyaltyAggregate, LoyaltyError};
use tessera_domain::slot::{SlotAggregate, SlotCommand};
use tessera_domain::values::UserId;
use uuid::Uuid;

use super::*;

pub(crate) struct Platform {
    pub(crate) w: World,
    pub(crate) runner: ReactorRunner,
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) reactors: Vec<Arc<dyn Reactor>>,
    pub(crate) gateway: SimulatedGateway,
    outcomes: tokio::sync::mpsc::UnboundedReceiver<GatewayEvent>,
    pub(crate) pool: sqlx::PgPool,
    pub(crate) cache: AggregateCache,
}

pub(crate) async fn platform(capacity: u32) -> Platform {
    let w = world(capacity).await;
    let pool = w._db.pool.clone();
    let clock = Arc::new(ManualClock::new(t(1, 9)));
    let (gateway, outcomes) = SimulatedGateway::new();
    // The slots whose bookings the reactors and the deadlines release, caught up between
    // releases (as on the platform's read side).
    let cache = AggregateCache::new(100);
    let runner = ReactorRunner {
        store: Arc::clone(&w.store),
        pool: pool.clone(),
        clock: clock.clone(),
    };
    let reactors: Vec<Arc<dyn Reactor>> = vec![
        Arc::new(DeadlineReactor::new(Arc::clone(&w.store), pool.clone())),
        Arc::new(PaymentsReactor {
            store: Arc::clone(&w.store),
            gateway: Arc::new(gateway.clone()),
            cache: Some(cache.clone()),
        }),
        Arc::new(LoyaltyReactor {
            store: Arc::clone(&w.store),
        }),
        Arc::new(tessera_commands::receipts::DocumentsReactor::new(
            Arc::clone(&w.store),
        )),
    ];
    Platform {
        w,
        runner,
        clock,
        reactors,
        gateway,
        outcomes,
        pool,
        cache,
    }
}

impl Platform {
    pub(crate) fn ctx(&self, actor: &str) -> CommandContext {
        CommandContext::new(Uuid::new_v4(), actor, self.clock.now())
    }

    /// The gateway's outcomes delivered so far and not handled yet.
    pub(crate) fn take_outcomes(&mut self) -> Vec<GatewayEvent> {
        let mut out = Vec::new();
        while let Ok(outcome) = self.outcomes.try_recv() {
            out.push(outcome);
        }
        out
    }

    /// Runs every reactor until a full pass finds nothing new (reactions cause events).
    pub(crate) async fn settle(&mut self) {
        loop {
            while let Ok(outcome) = self.outcomes.try_recv() {
                handle_gateway_event(&*self.w.store, &outcome, self.clock.now())
                    .await
                    .expect("gateway event");
            }
            let mut handled = 0;
            for r in &self.reactors {
                handled += self.runner.run_until_idle(&**r).await.expect("reactor");
            }
            if handled == 0 && self.outcomes.is_empty() {
                return;
            }
        }
    }

    /// Places and pays a booking; returns (booking, customer).
    pub(crate) async fn paid_booking(&mut self, seats: u32) -> PlaceBooking {
        let req = request(&self.w, seats);
        place_booking(
            &*self.w.store,
            &BookingConfig::default(),
            &req,
            &self.ctx("user:c"),
        )
        .await
        .expect("place");
        start_payment(
            &*self.w.store,
            &self.gateway,
            req.booking_id,
            None,
            &self.ctx("user:c"),
        )
        .await
        .expect("pay");
        self.settle().await;
        req
    }

    async fn points(&self, user: UserId) -> LoyaltyAccount {
        load::<LoyaltyAggregate>(
            &*self.w.store,
            stream_of::<LoyaltyAggregate>(user),
            Uuid::nil(),
        )
        .await
        .expect("load")
        .state
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reactors_drive_the_lifecycle_and_are_restart_safe() {
    let mut p = platform(5).await;
    // An unpaid hold lapses when the clock passes it.
    let unpaid = request(&p.w, 1);
    place_booking(
        &*p.w.store,
        &BookingConfig::default(),
        &unpaid,
        &p.ctx("user:c"),
    )
    .await
    .expect("place");
    let paid = p.paid_booking(2).await;
    assert_eq!(
        status(&p.w, paid.booking_id).await,
        BookingStatus::Confirmed
    );
    assert_eq!(
        fire_due_deadlines(&*p.w.store, &p.pool, Some(&p.cache), p.clock.now())
            .await
            .expect("fire"),
        0,
        "nothing due yet"
    );
    p.clock.advance(TimeDelta::minutes(16));
    fire_due_deadlines(&*p.w.store, &p.pool, Some(&p.cache), p.clock.now())
        .await
        .expect("fire");
    p.settle().await;
    assert_eq!(
        status(&p.w, unpaid.booking_id).await,
        BookingStatus::Expired
    );
    assert_eq!(
        (slot(&p.w).await.held(), slot(&p.w).await.confirmed()),
        (0, 2)
    );

    // First booking: 500 points and First Traveler.
    let account = p.points(paid.customer_id).await;
    assert_eq!(account.balance, 500);
    assert!(account.badges.contains(&Badge::FirstTraveler));

    // The slot ends: the booking completes (+100); a review follows (+50).
    p.clock.set(t(20, 14));
    fire_due_deadlines(&*p.w.store, &p.pool, Some(&p.cache), p.clock.now())
        .await
        .expect("fire");
    p.settle().await;
    assert_eq!(
        status(&p.w, paid.booking_id).await,
        BookingStatus::Completed
    );
    write_review(
        &*p.w.store,
        paid.booking_id,
        paid.customer_id,
        5,
        "Worth the early start.",
        &p.ctx("user:c"),
    )
    .await
    .expect("review");
    p.settle().await;
    assert_eq!(p.points(paid.customer_id).await.balance, 650);
    // A customer cannot review someone else's booking, nor twice.
    let err = write_review(
        &*p.w.store,
        paid.booking_id,
        UserId(Uuid::new_v4()),
        1,
        "x",
        &p.ctx("user:x"),
    )
    .await
    .expect_err("not theirs");
    assert!(matches!(err, CommandError::NotFound { .. }));

    // Every reactor replays the whole log from position 0: nothing is appended twice.
    let head = p.w.store.head().await.expect("head");
    sqlx::query("UPDATE reactor_checkpoints SET position = 0")
        .execute(&p.pool)
        .await
        .expect("reset");
    sqlx::query("UPDATE deadlines SET done_at = NULL")
        .execute(&p.pool)
        .await
        .expect("reset");
    fire_due_deadlines(&*p.w.store, &p.pool, Some(&p.cache), p.clock.now())
        .await
        .expect("fire again");
    p.settle().await;
    assert_eq!(
        p.w.store.head().await.expect("head"),
        head,
        "redelivery re-issued only replays"
    );
    assert_eq!(p.points(paid.customer_id).await.balance, 650);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_cancellations_and_cancelled_slots_are_refunded_and_points_reversed() {
    let mut p = platform(6).await;
    let early = p.paid_booking(1).await;
    assert_eq!(p.points(early.customer_id).await.balance, 500);
    // ≥ 7 days before the start: 100 % back, the booking ends Refunded, its points go back.
    cancel_booking(
        &*p.w.store,
        early.booking_id,
        Canceller::Customer(early.customer_id),
        false,
        &p.ctx("user:c"),
    )
    .await
    .expect("cancel");
    p.settle().await;
    assert_eq!(
        status(&p.w, early.booking_id).await,
        BookingStatus::Refunded
    );
    assert_eq!(p.points(early.customer_id).await.balance, 0);

    // The provider cancels the slot: every booking on it is cancelled and fully refunded.
    let a = p.paid_booking(2).await;
    let b = request(&p.w, 1);
    place_booking(&*p.w.store, &BookingConfig::default(), &b, &p.ctx("user:c"))
        .await
        .expect("unpaid hold");
    p.clock.set(t(19, 12));
    execute::<SlotAggregate>(
        &*p.w.store,
        stream_of::<SlotAggregate>(p.w.slot_id),
        &SlotCommand::Cancel {
            reason: "storm warning".into(),
        },
        &p.ctx("user:provider"),
    )
    .await
    .expect("cancel slot");
    p.settle().await;
    assert_eq!(
        status(&p.w, a.booking_id).await,
        BookingStatus::Refunded,
        "paid: cancelled and refunded in full"
    );
    assert_eq!(
        status(&p.w, b.booking_id).await,
        BookingStatus::Cancelled,
        "unpaid: cancelled"
    );
    assert_eq!(slot(&p.w).await.taken(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_compensations_need_a_reason_and_record_the_admin() {
    let mut p = platform(2).await;
    let admin_id = UserId(Uuid::new_v4());
    let booking = p.paid_booking(1).await;
    let no_reason = admin::refund(
        &*p.w.store,
        booking.booking_id,
        Money::new(1_000, Currency::EUR).expect("m"),
        &p.ctx("user:admin"),
    )
    .await;
    assert!(matches!(no_reason, Err(CommandError::ReasonRequired)));
    // A goodwill refund of 10 EUR on a confirmed booking: refunded, booking stays confirmed.
    admin::refund(
        &*p.w.store,
        booking.booking_id,
        Money::new(1_000, Currency::EUR).expect("m"),
        &p.ctx("user:admin").with_reason("late guide"),
    )
    .await
    .expect("refund");
    p.settle().await;
    assert_eq!(
        status(&p.w, booking.booking_id).await,
        BookingStatus::Confirmed
    );
    let too_much = admin::refund(
        &*p.w.store,
        booking.booking_id,
        Money::new(5_000, Currency::EUR).expect("m"),
        &p.ctx("user:admin").with_reason("x"),
    )
    .await;
    assert!(
        matches!(too_much, Err(CommandError::Payment(_))),
        "{too_much:?}"
    );
    // Points: never below zero.
    let err = admin::adjust_points(
        &*p.w.store,
        booking.customer_id,
        -501,
        &p.ctx("user:admin").with_reason("abuse"),
    )
    .await;
    assert!(matches!(
        err,
        Err(CommandError::Loyalty(LoyaltyError::InsufficientPoints {
            balance: 500,
            needed: 501
        }))
    ));
    admin::adjust_points(
        &*p.w.store,
        booking.customer_id,
        25,
        &p.ctx("user:admin").with_reason("apology"),
    )
    .await
    .expect("adjust");
    assert_eq!(p.points(booking.customer_id).await.balance, 525);
    // Reinstate an expired booking: only with room, or with an explicit, recorded overbooking.
    let lapsed = request(&p.w, 1);
    place_booking(
        &*p.w.store,
        &BookingConfig::default(),
        &lapsed,
        &p.ctx("user:c"),
    )
    .await
    .expect("place");
    p.settle().await; // the deadline reactor records the hold's deadline
    p.clock.advance(TimeDelta::minutes(20));
    fire_due_deadlines(&*p.w.store, &p.pool, Some(&p.cache), p.clock.now())
        .await
        .expect("fire");
    p.settle().await;
    assert_eq!(
        status(&p.w, lapsed.booking_id).await,
        BookingStatus::Expired
    );
    p.paid_booking(1).await; // the slot is full now
    let full = admin::reinstate(
        &*p.w.store,
        &BookingConfig::default(),
        lapsed.booking_id,
        false,
        &p.ctx("user:admin").with_reason("customer called"),
    )
    .await;
    assert!(
        matches!(
            full,
            Err(CommandError::Slot(
                tessera_domain::slot::SlotError::SoldOut { .. }
            ))
        ),
        "{full:?}"
    );
    admin::reinstate(
        &*p.w.store,
        &BookingConfig::default(),
        lapsed.booking_id,
        true,
        &p.ctx("user:admin").with_reason("VIP, approved by ops"),
    )
    .await
    .expect("overbook");
    assert_eq!(status(&p.w, lapsed.booking_id).await, BookingStatus::Held);
    assert_eq!(slot(&p.w).await.taken(), 3, "overbooked by one, on record");
    // The force-cancel is in the booking's history with the admin as actor and the reason.
    admin::force_cancel(
        &*p.w.store,
        booking.booking_id,
        admin_id,
        true,
        &p.ctx("user:admin-7").with_reason("duplicate"),
    )
    .await
    .expect("force");
    let history = tessera_log::store::read_whole_stream(
        &*p.w.store,
        &stream_of::<tessera_domain::booking::BookingAggregate>(booking.booking_id),
    )
    .await
    .expect("read");
    let last = history.last().expect("events");
    assert_eq!(
        (
            last.event_type.as_str(),
            last.metadata.actor.as_str(),
            last.metadata.reason.as_deref()
        ),
        ("BookingCancelled", "user:admin-7", Some("duplicate"))
    );
}

/// The same commands with the same clock produce the same log, byte for byte (what the
/// fixture generator relies on): ids derive from command ids, `recorded_at` from the clock.
#[tokio::test]
async fn same_commands_and_clock_give_a_byte_identical_log() {
    async fn run() -> Vec<(u64, Uuid, String, String, String, i64, String)> {
        let db = TestDatabase::new().await;
        let clock = Arc::new(ManualClock::new(t(1, 8)));
        let options = PgStoreOptions {
            clock: clock.clone(),
            ..PgStoreOptions::default()
        };
        let store: Arc<dyn EventStore> = Arc::new(PgEventStore::new(db.pool.clone(), options));
        let seeded = |n: u128| CommandContext::new(Uuid::from_u128(n), "user:fixture", clock.now());
        let listing_id = tessera_domain::values::ListingId(Uuid::from_u128(10));
        let slot_id = SlotId(Uuid::from_u128(11));
        execute::<tessera_domain::listing::ListingAggregate>(
            &*store,
            stream_of::<tessera_domain::listing::ListingAggregate>(listing_id),
            &tessera_domain::listing::ListingCommand::Publish {
                id: listing_id,
                provider_id: UserId(Uuid::from_u128(12)),
                details: tessera_domain::listing::ListingDetails {
                    kind: tessera_domain::listing::ListingKind::Experience,
                    title: "Harbour cruise".into(),
                    description: "Two hours on the water.".into(),
                    destination: tessera_domain::listing::Destination {
                        name: "Hamburg".into(),
                        country: "DE".into(),
                        lat: 53.5511,
                        lon: 9.9937,
                    },
                    category: "boat".into(),
                    duration_minutes: 120,
                    tax_rate_bp: 0,
                    includes: vec![],
                    itinerary: vec![],
                },
                base_price: Money::new(3_000, Currency::EUR).expect("m"),
                policy: tessera_domain::policy::CancellationPolicy::standard(),
            },
            &seeded(1),
        )
        .await
        .expect("publish");
        clock.advance(TimeDelta::seconds(7));
        execute::<SlotAggregate>(
            &*store,
            stream_of::<SlotAggregate>(slot_id),
            &SlotCommand::Schedule {
                id: slot_id,
                listing_id,
                provider_id: UserId(Uuid::from_u128(12)),
                starts_at: t(20, 10),
                ends_at: t(20, 12),
                capacity: 8,
                price_per_seat: Money::new(3_000, Currency::EUR).expect("m"),
            },
            &seeded(2),
        )
        .await
        .expect("schedule");
        for n in 0..5u128 {
            clock.advance(TimeDelta::milliseconds(1_234));
            let req = PlaceBooking {
                booking_id: BookingId(Uuid::from_u128(100 + n)),
                customer_id: UserId(Uuid::from_u128(200 + n)),
                slot_id,
                seats: Seats::new(1).expect("seats"),
            };
            place_booking(&*store, &BookingConfig::default(), &req, &seeded(1_000 + n))
                .await
                .expect("place");
        }
        store
            .read_all(tessera_log::store::Position::START, 1_000)
            .await
            .expect("read")
            .into_iter()
            .map(|e| {
                (
                    e.position.0,
                    e.event_id,
                    e.stream_id.to_string(),
                    e.data,
                    e.hash.to_hex(),
                    e.recorded_at.timestamp_micros(),
                    e.metadata.actor,
                )
            })
            .collect()
    }
    let (first, second) = (run().await, run().await);
    assert_eq!(first.len(), 12);
    assert_eq!(first, second);
}
