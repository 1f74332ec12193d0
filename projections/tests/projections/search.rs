//! Search over the index built by its projection.

use tessera_projections::search::{SearchIndex, SearchQuery, SearchResults, Sort};

use super::Setup;

pub async fn everything(setup: &Setup) -> SearchResults {
    let index = SearchIndex::new(setup.db.pool.clone(), setup.index.path());
    let mut r = index
        .search(&SearchQuery {
            sort: Sort::PriceAsc,
            limit: 100,
            ..SearchQuery::default()
        })
        .await
        .expect("search");
    r.position = 0;
    // Which generation answered is not content.
    r.generation = 0;
    // Equal prices come in index order, which differs between two builds of the same content.
    r.hits.sort_by_key(|h| (h.price_minor, h.listing_id));
    r
}

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use serde::Deserialize;
use tessera_commands::booking::{BookingConfig, PlaceBooking, place_booking};
use tessera_commands::handler::{CommandContext, execute, stream_of};
use tessera_domain::listing::{
    Destination, ListingAggregate, ListingCommand, ListingDetails, ListingKind,
};
use tessera_domain::policy::CancellationPolicy;
use tessera_domain::slot::{SlotAggregate, SlotCommand};
use tessera_domain::values::{BookingId, Currency, ListingId, Money, Seats, SlotId, UserId};
use tessera_log::store::{EventStore, PgEventStore, PgStoreOptions};
use tessera_log::testkit::TestDatabase;
use tessera_projections::search::SearchHit;
use uuid::Uuid;

#[derive(Debug, Deserialize)]
struct Entry {
    key: String,
    kind: String,
    title: String,
    description: String,
    category: String,
    city: String,
    country: String,
    lat: f64,
    lon: f64,
    minutes: u32,
    price: i64,
    slot_days: Vec<i64>,
    capacity: u32,
}

fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2027, 3, 1, 0, 0, 0)
        .single()
        .expect("time")
}

fn day(n: i64) -> NaiveDate {
    (base() + Duration::days(n)).date_naive()
}

fn ctx() -> CommandContext {
    CommandContext::new(Uuid::new_v4(), "user:provider", base() - Duration::days(30))
}

struct Corpus {
    setup: Setup,
    ids: BTreeMap<String, Uuid>,
    index: SearchIndex,
}

impl Corpus {
    fn key(&self, id: Uuid) -> &str {
        self.ids
            .iter()
            .find(|(_, v)| **v == id)
            .map(|(k, _)| k.as_str())
            .expect("known listing")
    }

    async fn keys(&self, q: SearchQuery) -> Vec<String> {
        let r = self
            .index
            .search(&SearchQuery { limit: 50, ..q })
            .await
            .expect("search");
        r.hits
            .iter()
            .map(|h: &SearchHit| self.key(h.listing_id).to_owned())
            .collect()
    }

    async fn caught_up(&self) {
        super::caught_up(&self.setup.db.pool, 1).await;
    }
}

/// The small catalogue of `fixtures/search/catalogue.json`, published through the command
/// handlers and indexed by a running search projector.
async fn corpus() -> (Corpus, tokio::sync::watch::Sender<bool>) {
    let db = TestDatabase::new().await;
    let store: Arc<dyn EventStore> = Arc::new(PgEventStore::new(
        db.pool.clone(),
        PgStoreOptions::default(),
    ));
    let entries: Vec<Entry> =
        serde_json::from_str(include_str!("../../../fixtures/search/catalogue.json"))
            .expect("catalogue");
    let provider = UserId(Uuid::new_v4());
    let mut ids = BTreeMap::new();
    for e in entries {
        let id = ListingId(Uuid::new_v4());
        let price = Money::new(e.price, Currency::EUR).expect("money");
        execute::<ListingAggregate>(
            &*store,
            stream_of::<ListingAggregate>(id),
            &ListingCommand::Publish {
                id,
                provider_id: provider,
                details: ListingDetails {
                    kind: if e.kind == "package" {
                        ListingKind::Package
                    } else {
                        ListingKind::Experience
                    },
                    title: e.title,
                    description: e.description,
                    destination: Destination {
                        name: e.city,
                        country: e.country,
                        lat: e.lat,
                        lon: e.lon,
                    },
                    category: e.category,
                    duration_minutes: e.minutes,
                    tax_rate_bp: 0,
                    includes: vec![],
                    itinerary: vec![],
                },
                base_price: price,
                policy: CancellationPolicy::standard(),
            },
            &ctx(),
        )
        .await
        .expect("publish");
        for d in &e.slot_days {
            let slot = SlotId(Uuid::new_v4());
            let starts_at = base() + Duration::days(*d) + Duration::hours(10);
            execute::<SlotAggregate>(
                &*store,
                stream_of::<SlotAggregate>(slot),
                &SlotCommand::Schedule {
                    id: slot,
                    listing_id: id,
                    provider_id: provider,
                    starts_at,
                    ends_at: starts_at + Duration::hours(3),
                    capacity: e.capacity,
                    price_per_seat: price,
                },
                &ctx(),
            )
            .await
            .expect("schedule");
            if e.capacity == 1 {
                // Sold out: this date has no free seats any more.
                let req = PlaceBooking {
                    booking_id: BookingId(Uuid::new_v4()),
                    customer_id: UserId(Uuid::new_v4()),
                    slot_id: slot,
                    seats: Seats::new(1).expect("seats"),
                };
                place_booking(&*store, &BookingConfig::default(), &req, &ctx())
                    .await
                    .expect("hold");
            }
        }
        ids.insert(e.key, id.0);
    }
    let index_dir = tempfile::tempdir().expect("tempdir");
    let setup = Setup {
        db,
        store,
        index: index_dir,
    };
    let projector = tessera_projections::Projector::new(
        setup.db.pool.clone(),
        setup.store.clone(),
        tessera_projections::select(super::projections(setup.index.path()), &["search".into()])
            .expect("search"),
        tessera_projections::ProjectorOptions {
            lease_poll: std::time::Duration::from_millis(50),
            ..Default::default()
        },
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move { projector.run(stopped).await.expect("projector") });
    let index = SearchIndex::new(setup.db.pool.clone(), setup.index.path());
    let c = Corpus { setup, ids, index };
    c.caught_up().await;
    (c, stop)
}

fn set(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| (*s).to_owned()).collect();
    v.sort();
    v
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_answers_known_questions() {
    let (c, stop) = corpus().await;
    let text = |t: &str| SearchQuery {
        text: Some(t.into()),
        ..SearchQuery::default()
    };

    // Stemming: "kayaking" and "kayak" meet.
    assert_eq!(
        sorted(c.keys(text("kayak")).await),
        set(&["lisbon-kayak", "reykjavik-kayak"])
    );
    // Relevance: the listing matching both words comes first.
    assert_eq!(c.keys(text("lisbon kayak")).await[0], "lisbon-kayak");
    // Typo tolerance.
    assert_eq!(c.keys(text("flamenko")).await, vec!["seville-flamenco"]);
    assert_eq!(
        sorted(c.keys(text("Lisbn")).await),
        set(&["lisbon-food", "lisbon-kayak"])
    );
    // Free text is never a syntax error.
    c.index
        .search(&SearchQuery {
            limit: 10,
            ..text("title:(\"unclosed AND")
        })
        .await
        .expect("lenient parsing");

    // Facet counts over the matches.
    let all = c
        .index
        .search(&SearchQuery {
            limit: 10,
            ..SearchQuery::default()
        })
        .await
        .expect("search");
    assert_eq!(all.total, 8);
    assert_eq!(
        all.facets.kind,
        vec![("experience".into(), 6), ("package".into(), 2)]
    );
    assert_eq!(
        all.facets.category,
        vec![
            ("food".into(), 3),
            ("water".into(), 3),
            ("culture".into(), 1),
            ("nightlife".into(), 1)
        ]
    );
    assert_eq!(all.facets.country[0], ("PT".into(), 5));
    let lisbon = c
        .index
        .search(&SearchQuery {
            limit: 10,
            destination: Some("Lisbon".into()),
            ..SearchQuery::default()
        })
        .await
        .expect("search");
    assert_eq!(lisbon.total, 2);
    assert_eq!(
        lisbon.facets.category,
        vec![("food".into(), 1), ("water".into(), 1)]
    );

    // Filters.
    let price = SearchQuery {
        min_price_minor: Some(4_000),
        max_price_minor: Some(8_000),
        ..SearchQuery::default()
    };
    assert_eq!(
        sorted(c.keys(price).await),
        set(&[
            "lisbon-food",
            "lisbon-kayak",
            "porto-wine",
            "seville-flamenco"
        ])
    );
    let packages_pt = SearchQuery {
        kind: Some("package".into()),
        country: Some("PT".into()),
        ..SearchQuery::default()
    };
    assert_eq!(c.keys(packages_pt).await, vec!["porto-douro"]);
    let short = SearchQuery {
        max_duration_minutes: Some(150),
        ..SearchQuery::default()
    };
    assert_eq!(
        sorted(c.keys(short).await),
        set(&["cascais-surf", "seville-flamenco"])
    );

    // Dates with free seats: day 12 exists only on a sold-out slot.
    let on = |from: i64, to: i64| SearchQuery {
        available_from: Some(day(from)),
        available_to: Some(day(to)),
        ..SearchQuery::default()
    };
    assert!(c.keys(on(12, 12)).await.is_empty());
    assert_eq!(
        sorted(c.keys(on(10, 11)).await),
        set(&["lisbon-kayak", "porto-wine"])
    );

    // Geo radius around Lisbon's centre: Cascais is ~25 km away.
    let near = |km: f64| SearchQuery {
        near: Some((38.7223, -9.1393)),
        radius_km: Some(km),
        ..SearchQuery::default()
    };
    assert_eq!(
        sorted(c.keys(near(30.0)).await),
        set(&["cascais-surf", "lisbon-food", "lisbon-kayak"])
    );
    assert_eq!(
        sorted(c.keys(near(5.0)).await),
        set(&["lisbon-food", "lisbon-kayak"])
    );
    // Porto is ~275 km away, Seville ~315 km.
    assert_eq!(c.keys(near(300.0)).await.len(), 5);
    assert_eq!(c.keys(near(400.0)).await.len(), 6);

    // Sorting and pagination.
    let by_price = c
        .keys(SearchQuery {
            sort: Sort::PriceDesc,
            ..SearchQuery::default()
        })
        .await;
    assert_eq!(
        &by_price[..2],
        &["kyoto-temples".to_owned(), "porto-douro".to_owned()]
    );
    let page2 = c
        .index
        .search(&SearchQuery {
            sort: Sort::PriceAsc,
            offset: 2,
            limit: 2,
            ..SearchQuery::default()
        })
        .await
        .expect("page");
    assert_eq!(page2.total, 8);
    assert_eq!(
        page2
            .hits
            .iter()
            .map(|h| c.key(h.listing_id))
            .collect::<Vec<_>>(),
        vec!["porto-wine", "seville-flamenco"]
    );

    // Bad requests are typed errors, not panics.
    for bad in [
        SearchQuery {
            limit: 0,
            ..SearchQuery::default()
        },
        SearchQuery {
            limit: 10,
            min_price_minor: Some(9),
            max_price_minor: Some(1),
            ..SearchQuery::default()
        },
        SearchQuery {
            limit: 10,
            near: Some((91.0, 0.0)),
            radius_km: Some(1.0),
            ..SearchQuery::default()
        },
        SearchQuery {
            limit: 10,
            near: Some((1.0, 0.0)),
            ..SearchQuery::default()
        },
    ] {
        assert!(
            matches!(
                c.index.search(&bad).await,
                Err(tessera_projections::ProjectionError::Invalid(_))
            ),
            "{bad:?}"
        );
    }

    // A retired listing leaves the results once the projector has applied it.
    let seville = ListingId(c.ids["seville-flamenco"]);
    execute::<ListingAggregate>(
        &*c.setup.store,
        stream_of::<ListingAggregate>(seville),
        &ListingCommand::Retire {
            reason: "season over".into(),
        },
        &ctx(),
    )
    .await
    .expect("retire");
    c.caught_up().await;
    assert!(c.keys(text("flamenco")).await.is_empty());
    let _ = stop.send(true);
}
