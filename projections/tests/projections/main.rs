//! Projections on a real PostgreSQL: incremental application equals a rebuild, rebuilds swap
//! without downtime, failures stop a projection and name the event, search answers.

mod search;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use sqlx::{AssertSqlSafe, PgPool};
use tessera_log::store::EventStore;
use tessera_log::testkit::TestDatabase;
use tessera_projections::{Projection, Projector, ProjectorOptions};
use tokio::sync::watch;

#[derive(Debug)]
pub struct Setup {
    pub db: TestDatabase,
    pub store: Arc<dyn EventStore>,
    pub index: tempfile::TempDir,
}

/// A database holding generated history of `scale`.
pub async fn history(scale: &str) -> Setup {
    let db = TestDatabase::new().await;
    let end = Utc
        .with_ymd_and_hms(2026, 11, 20, 12, 0, 0)
        .single()
        .expect("time");
    let (store, _) = tessera_fixtures::load(
        db.pool.clone(),
        tessera_fixtures::Scale::named(scale).expect("scale"),
        7,
        end,
        &|_, _| {},
        None,
    )
    .await
    .expect("fixtures");
    Setup {
        db,
        store,
        index: tempfile::tempdir().expect("tempdir"),
    }
}

pub fn projections(index: &std::path::Path) -> Vec<Projection> {
    tessera_projections::all(index)
}

/// Waits until every projection has applied the whole log (or fails after a deadline).
pub async fn caught_up(pool: &PgPool, expected: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = tessera_projections::status(pool).await.expect("status");
        if let Some(failed) = status.iter().find(|s| s.state == "failed") {
            panic!("projection failed: {failed:?}");
        }
        if status.len() == expected
            && status
                .iter()
                .all(|s| s.lag_events == 0 && s.generation.is_some() && s.rebuilding.is_none())
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "projections did not catch up: {status:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every row of every read-model table of the active generations, as sorted JSON.
pub async fn dump(pool: &PgPool) -> BTreeMap<String, Vec<String>> {
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT n.nspname::text, c.relname::text FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         JOIN projection_generations g ON n.nspname = 'proj_' || g.name || '_g' || g.generation
         WHERE g.state = 'active' AND c.relkind = 'r' ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .expect("tables");
    assert!(
        tables.len() >= 10,
        "expected the read-model tables, found {tables:?}"
    );
    let mut out = BTreeMap::new();
    for (schema, table) in tables {
        let rows: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT to_jsonb(t)::text FROM {schema}.{table} t ORDER BY 1"
        )))
        .fetch_all(pool)
        .await
        .expect("rows");
        out.insert(table, rows);
    }
    out
}

pub fn start(
    setup: &Setup,
    batch_size: usize,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let projector = Projector::new(
        setup.db.pool.clone(),
        setup.store.clone(),
        projections(setup.index.path()),
        ProjectorOptions {
            batch_size,
            lease_poll: Duration::from_millis(50),
            ..ProjectorOptions::default()
        },
    );
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(async move { projector.run(stopped).await.expect("projector") });
    (stop, task)
}

/// Incremental application (small batches, while the log grows) and a rebuild from scratch
/// produce identical read models; the rebuild swaps while the live projector keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_equals_incremental_application() {
    let setup = history("small").await;
    let (stop, task) = start(&setup, 7);
    let n = projections(setup.index.path()).len();
    caught_up(&setup.db.pool, n).await;
    let incremental = dump(&setup.db.pool).await;
    let total: usize = incremental.values().map(Vec::len).sum();
    assert!(
        total > 1_000,
        "the history should fill the read models, got {total} rows"
    );
    for table in [
        "listings",
        "slots",
        "slot_holds",
        "bookings",
        "booking_timeline",
        "payments",
        "ledger",
        "loyalty_accounts",
        "points_history",
        "reviews",
        "listing_ratings",
        "daily_stats",
        "provider_earnings",
        "users",
    ] {
        assert!(
            incremental.get(table).is_some_and(|rows| !rows.is_empty()),
            "{table} is empty"
        );
    }
    // A slot's counters are the sums of the seats held and confirmed on it, kept by moving
    // them with each hold row rather than by recounting.
    let miscounted: Vec<String> = sqlx::query_scalar(
        "SELECT to_jsonb(s)::text FROM read.slots s
           LEFT JOIN LATERAL (
             SELECT coalesce(sum(seats) FILTER (WHERE NOT confirmed), 0) AS held,
                    coalesce(sum(seats) FILTER (WHERE confirmed), 0) AS confirmed
               FROM read.slot_holds h WHERE h.slot_id = s.slot_id) h ON true
          WHERE s.held <> h.held OR s.confirmed <> h.confirmed
             OR s.remaining <> greatest(s.capacity - h.held - h.confirmed, 0)",
    )
    .fetch_all(&setup.db.pool)
    .await
    .expect("counters");
    assert_eq!(
        miscounted,
        Vec::<String>::new(),
        "slots whose counters disagree with their holds"
    );
    let confirmed: i64 = sqlx::query_scalar("SELECT count(*) FROM read.slot_holds WHERE confirmed")
        .fetch_one(&setup.db.pool)
        .await
        .expect("confirmed holds");
    assert!(confirmed > 0, "the history confirms some holds");
    let search_before = search::everything(&setup).await;

    let generations_before: Vec<(String, i64)> =
        sqlx::query_as("SELECT name, active_generation FROM projections ORDER BY name")
            .fetch_all(&setup.db.pool)
            .await
            .expect("gens");
    tessera_projections::rebuild(
        &setup.db.pool,
        setup.store.clone(),
        &projections(setup.index.path()),
        &|_| {},
    )
    .await
    .expect("rebuild");
    caught_up(&setup.db.pool, n).await;
    let generations_after: Vec<(String, i64)> =
        sqlx::query_as("SELECT name, active_generation FROM projections ORDER BY name")
            .fetch_all(&setup.db.pool)
            .await
            .expect("gens");
    for ((name, before), (_, after)) in generations_before.iter().zip(&generations_after) {
        assert_eq!(*after, before + 1, "{name} was swapped to a new generation");
    }
    let rebuilt = dump(&setup.db.pool).await;
    for (table, rows) in &incremental {
        assert_eq!(
            rows, &rebuilt[table],
            "table {table} differs after the rebuild"
        );
    }
    assert_eq!(
        search_before,
        search::everything(&setup).await,
        "the search index differs after the rebuild"
    );
    // The old generations are gone; the read views point at the new ones.
    let schemas: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'proj\\_%'")
            .fetch_one(&setup.db.pool)
            .await
            .expect("schemas");
    assert_eq!(schemas, (n - 1) as i64);
    let via_view: i64 = sqlx::query_scalar("SELECT count(*) FROM read.bookings")
        .fetch_one(&setup.db.pool)
        .await
        .expect("view");
    assert_eq!(via_view as usize, rebuilt["bookings"].len());
    let _ = stop.send(true);
    task.await.expect("projector stops");
}

/// An event a projection cannot apply stops that projection (and only it), with the projection,
/// the position and the event type in its status; nothing after it is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_projection_stops_and_names_the_event() {
    use tessera_domain::booking::BookingEvent;
    use tessera_domain::values::{BookingId, Currency, Money, PaymentId};
    use tessera_log::codec::encode;
    use tessera_log::store::{EventMetadata, ExpectedVersion, NewEvent, StreamId, StreamWrite};

    let setup = history("tiny").await;
    let ghost = BookingId(uuid::Uuid::new_v4());
    let e = encode(&BookingEvent::BookingConfirmed {
        booking_id: ghost,
        payment_id: PaymentId(uuid::Uuid::new_v4()),
        amount_paid: Money::new(100, Currency::EUR).expect("money"),
    })
    .expect("encode");
    let bad = setup
        .store
        .append(vec![StreamWrite {
            stream: StreamId::new(format!("booking-{}", ghost.0)).expect("stream"),
            expected: ExpectedVersion::Any,
            events: vec![
                NewEvent::from_json_text(
                    uuid::Uuid::new_v4(),
                    e.event_type,
                    e.schema_version,
                    e.data,
                    EventMetadata::new(uuid::Uuid::new_v4(), "user:test"),
                    Utc::now(),
                )
                .expect("event"),
            ],
        }])
        .await
        .expect("append")
        .last_position;

    let (stop, task) = start(&setup, 1_000);
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        let status = tessera_projections::status(&setup.db.pool)
            .await
            .expect("status");
        // Bookings and stats both need the booking placed; the other six do not care.
        let failed = status.iter().filter(|s| s.state == "failed").count();
        let others_done = status.len() == 8
            && status
                .iter()
                .filter(|s| s.name != "bookings" && s.name != "stats")
                .all(|s| s.lag_events == 0 && s.state == "live");
        if failed == 2 && others_done {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "bookings did not fail: {status:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for name in ["bookings", "stats"] {
        let s = status.iter().find(|s| s.name == name).expect("status");
        assert_eq!(s.state, "failed");
        assert_eq!(s.error_position, Some(bad.0 as i64));
        assert_eq!(s.error_event_type.as_deref(), Some("BookingConfirmed"));
        let error = s.error.as_deref().unwrap_or_default();
        assert!(
            error.contains(&format!("projection {name} failed on event {}", bad.0))
                && error.contains("was never placed"),
            "{error}"
        );
        // Everything before the bad event was applied, nothing at or after it.
        assert_eq!(s.position, bad.0 as i64 - 1);
        assert_eq!(s.lag_events, 1);
    }
    let _ = stop.send(true);
    task.await.expect("projector stops");
}

/// A first start killed after creating its generation and before activating it leaves that
/// generation `building`. The next start drops it and builds its own: the projection goes
/// live and its status does not show a rebuild nobody is running. Until a generation is
/// active, a projection being started shows `rebuilding`, never `live`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_generation_left_by_a_killed_start_is_dropped() {
    let setup = history("tiny").await;
    let all = projections(setup.index.path());
    let p = all
        .iter()
        .find(|p| p.name() == "bookings")
        .expect("bookings");
    let abandoned = tessera_projections::registry::create_generation(&setup.db.pool, p)
        .await
        .expect("generation");
    // What a killed first start leaves: the lease row says live, no generation is active.
    sqlx::query("UPDATE projections SET state = 'live' WHERE name = 'bookings'")
        .execute(&setup.db.pool)
        .await
        .expect("state");
    let status = tessera_projections::status(&setup.db.pool)
        .await
        .expect("status");
    let bookings = status.iter().find(|s| s.name == "bookings").expect("row");
    assert_eq!(bookings.state, "stopped", "{bookings:?}");
    assert_eq!(bookings.generation, None);

    let (stop, task) = start(&setup, 1_000);
    caught_up(&setup.db.pool, all.len()).await;
    let building: Vec<(String, i64)> = sqlx::query_as(
        "SELECT name, generation FROM projection_generations WHERE state <> 'active' ORDER BY 1",
    )
    .fetch_all(&setup.db.pool)
    .await
    .expect("generations");
    assert_eq!(building, vec![], "only active generations remain");
    // Its number is free again, so the new one took it; no other storage is left.
    let schemas: Vec<String> = sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'proj\\_bookings\\_g%'",
    )
    .fetch_all(&setup.db.pool)
    .await
    .expect("schemas");
    assert_eq!(
        schemas,
        vec![tessera_projections::registry::schema_name(
            "bookings",
            abandoned.generation
        )]
    );
    let _ = stop.send(true);
    task.await.expect("projector stops");
}
