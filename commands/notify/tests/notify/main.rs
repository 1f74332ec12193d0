//! The notification reactor, the outbox and delivery against a real SMTP server process
//! (aiosmtpd, started here over TCP), on real PostgreSQL, with the platform's real commands and
//! reactors and a manual clock.

mod golden;
mod smtp;
mod webhooks;

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use tessera_commands::booking::{BookingConfig, PlaceBooking, place_booking};
use tessera_commands::gateway::{GatewayEvent, SimulatedGateway};
use tessera_commands::handler::{AggregateCache, CommandContext, execute, stream_of};
use tessera_commands::payment::start_payment;
use tessera_commands::reactor::{
    Clock, ManualClock, Reactor, ReactorRunner, fire_due_deadlines, handle_gateway_event,
};
use tessera_commands::users::{register_user_hashed, set_notification_preferences};
use tessera_domain::listing::{
    Destination, ListingAggregate, ListingCommand, ListingDetails, ListingKind,
};
use tessera_domain::policy::CancellationPolicy;
use tessera_domain::slot::{SlotAggregate, SlotCommand};
use tessera_domain::user::{Locale, UserAggregate, UserCommand};
use tessera_domain::values::{BookingId, Currency, ListingId, Money, Seats, SlotId, UserId};
use tessera_log::pii::Vault;
use tessera_log::store::{EventStore, PgEventStore, PgStoreOptions, Position};
use tessera_log::testkit::TestDatabase;
use tessera_notify::outbox;
use tessera_notify::{Deliverer, NotificationReactor, NotifyConfig, RetryPolicy, Transport};
use uuid::Uuid;

pub(crate) fn t(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, day, hour, 0, 0).unwrap()
}

pub(crate) struct World {
    pub db: TestDatabase,
    pub vault: Arc<Vault>,
    pub store: Arc<dyn EventStore>,
    pub clock: Arc<ManualClock>,
    pub runner: ReactorRunner,
    pub reactors: Vec<Arc<dyn Reactor>>,
    pub gateway: SimulatedGateway,
    outcomes: tokio::sync::mpsc::UnboundedReceiver<GatewayEvent>,
    pub cache: AggregateCache,
    pub slot_id: SlotId,
    /// A second tour, on 27 Dec 10:00–14:00.
    pub later_slot: SlotId,
    pub customer: UserId,
    pub provider: UserId,
}

pub(crate) const KEY: &[u8] = b"unsubscribe key of the tests";

impl World {
    /// A provider with a kayak tour on 20 Dec 10:00–14:00 (50 EUR a seat, 10 % tax included),
    /// a customer "Ada" (`ada@example.org`), every reactor of the platform and the notifier.
    pub async fn new() -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let db = TestDatabase::new().await;
        let clock = Arc::new(ManualClock::new(t(1, 9)));
        let store: Arc<dyn EventStore> = Arc::new(PgEventStore::new(
            db.pool.clone(),
            PgStoreOptions {
                clock: clock.clone(),
                ..PgStoreOptions::default()
            },
        ));
        let ctx = CommandContext::new(Uuid::new_v4(), "system:test", clock.now());
        let (customer, _) =
            register_user_hashed(&*store, "ada@example.org", "Ada", "x".into(), None, &ctx)
                .await
                .expect("customer");
        let ctx = CommandContext::new(Uuid::new_v4(), "system:test", clock.now());
        let (provider, _) = register_user_hashed(
            &*store,
            "kayaks@example.org",
            "Lisbon Kayaks",
            "x".into(),
            None,
            &ctx,
        )
        .await
        .expect("provider");
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
                        lat: 38.7,
                        lon: -9.1,
                    },
                    category: "water-sports".into(),
                    duration_minutes: 240,
                    tax_rate_bp: 1000,
                    includes: vec![],
                    itinerary: vec![],
                },
                base_price: price,
                policy: CancellationPolicy::standard(),
            },
            &CommandContext::new(Uuid::new_v4(), "user:provider", clock.now()),
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
                capacity: 10,
                price_per_seat: price,
            },
            &CommandContext::new(Uuid::new_v4(), "user:provider", clock.now()),
        )
        .await
        .expect("schedule");
        let later_slot = SlotId(Uuid::new_v4());
        execute::<SlotAggregate>(
            &*store,
            stream_of::<SlotAggregate>(later_slot),
            &SlotCommand::Schedule {
                id: later_slot,
                listing_id,
                provider_id: provider,
                starts_at: t(27, 10),
                ends_at: t(27, 14),
                capacity: 10,
                price_per_seat: price,
            },
            &CommandContext::new(Uuid::new_v4(), "user:provider", clock.now()),
        )
        .await
        .expect("schedule");
        let (gateway, outcomes) = SimulatedGateway::new();
        let vault = Vault::load(db.pool.clone(), None).await.expect("vault");
        let cache = AggregateCache::new(100);
        let pool = db.pool.clone();
        let mut reactors =
            tessera_commands::reactor::all(&store, &pool, Arc::new(gateway.clone()), None);
        reactors.push(Arc::new(tessera_notify::webhooks::WebhookReactor {
            store: store.clone(),
            pool: pool.clone(),
            max_age: TimeDelta::days(2),
        }));
        reactors.push(Arc::new(NotificationReactor::new(
            store.clone(),
            pool.clone(),
            vault.clone(),
            NotifyConfig::new("https://tessera.example", KEY.to_vec()),
        )));
        let runner = ReactorRunner {
            store: store.clone(),
            pool,
            clock: clock.clone(),
        };
        Self {
            db,
            vault,
            store,
            clock,
            runner,
            reactors,
            gateway,
            outcomes,
            cache,
            slot_id,
            later_slot,
            customer,
            provider,
        }
    }

    pub fn ctx(&self, actor: &str) -> CommandContext {
        CommandContext::new(Uuid::new_v4(), actor, self.clock.now())
    }

    pub fn pool(&self) -> &sqlx::PgPool {
        &self.db.pool
    }

    /// Fires due deadlines, handles the gateway's answers and runs every reactor until nothing
    /// new happens.
    pub async fn settle(&mut self) {
        loop {
            let mut handled = fire_due_deadlines(
                &*self.store,
                self.pool(),
                Some(&self.cache),
                self.clock.now(),
            )
            .await
            .expect("deadlines") as u64;
            while let Ok(outcome) = self.outcomes.try_recv() {
                handle_gateway_event(&*self.store, &outcome, self.clock.now())
                    .await
                    .expect("gateway event");
                handled += 1;
            }
            for r in &self.reactors {
                handled += self.runner.run_until_idle(&**r).await.expect("reactor");
            }
            if handled == 0 {
                return;
            }
        }
    }

    pub async fn place(&mut self, seats: u32) -> BookingId {
        self.place_on(self.slot_id, seats).await
    }

    pub async fn place_on(&mut self, slot_id: SlotId, seats: u32) -> BookingId {
        let req = PlaceBooking {
            booking_id: BookingId(Uuid::new_v4()),
            customer_id: self.customer,
            slot_id,
            seats: Seats::new(seats).expect("seats"),
        };
        place_booking(
            &*self.store,
            &BookingConfig::default(),
            &req,
            &self.ctx("user:ada"),
        )
        .await
        .expect("place");
        self.settle().await;
        req.booking_id
    }

    pub async fn pay(&mut self, booking: BookingId) {
        start_payment(
            &*self.store,
            &self.gateway,
            booking,
            None,
            &self.ctx("user:ada"),
        )
        .await
        .expect("pay");
        self.settle().await;
    }

    pub fn deliverer(&self, transport: Arc<dyn Transport>, policy: RetryPolicy) -> Deliverer {
        Deliverer {
            pool: self.pool().clone(),
            transport,
            clock: self.clock.clone(),
            policy,
            from: "Tessera <no-reply@tessera.test>".into(),
            vault: self.vault.clone(),
        }
    }

    pub async fn messages(&self) -> Vec<outbox::Row> {
        let mut rows = outbox::list(
            self.pool(),
            &outbox::Filter {
                limit: 1000,
                ..outbox::Filter::default()
            },
        )
        .await
        .expect("outbox");
        rows.sort_by_key(|r| (r.event_position, r.template.clone()));
        rows
    }

    pub async fn templates_with_status(&self, status: &str) -> Vec<String> {
        let mut t: Vec<String> = self
            .messages()
            .await
            .into_iter()
            .filter(|r| r.status == status)
            .map(|r| r.template)
            .collect();
        t.sort();
        t
    }

    pub async fn set_preferences(&self, locale: Locale, marketing: bool) {
        set_notification_preferences(
            &*self.store,
            self.customer,
            locale,
            marketing,
            &self.ctx("user:ada"),
        )
        .await
        .expect("preferences");
    }

    pub async fn erase_customer(&mut self) {
        execute::<UserAggregate>(
            &*self.store,
            stream_of::<UserAggregate>(self.customer),
            &UserCommand::Erase,
            &self.ctx("user:admin").with_reason("asked to be forgotten"),
        )
        .await
        .expect("erase");
        self.vault
            .shred(self.customer.0, "user:admin")
            .await
            .expect("shred");
        self.settle().await;
    }

    /// Rewinds every reactor to the start of the log and lets them run again.
    pub async fn replay_everything(&mut self) {
        for r in &self.reactors {
            self.runner
                .save(r.name(), Position::START)
                .await
                .expect("rewind");
        }
        self.settle().await;
    }

    pub fn advance(&self, by: TimeDelta) {
        self.clock.set(self.clock.now() + by);
    }
}
