//! The event store conformance suite, run against every adapter and decorator: in-memory,
//! PostgreSQL, the personal-data decorator `PiiStore` over each of them (every production path
//! goes through it), and KurrentDB where one is reachable. The fixtures' `StagedStore` runs it in
//! `fixtures/tests/staged.rs`.

use std::sync::Arc;

use tessera_log::pii::{PiiStore, Vault};
use tessera_log::store::conformance::StoreFixture;
use tessera_log::store::{InMemoryEventStore, PgEventStore, PgStoreOptions};
use tessera_log::testkit::TestDatabase;

mod in_memory {
    use super::*;

    async fn make() -> Option<StoreFixture> {
        Some(StoreFixture {
            store: Arc::new(InMemoryEventStore::new()),
            guard: Box::new(()),
        })
    }

    tessera_log::store_conformance_suite!(make);
}

mod postgres {
    use super::*;

    async fn make() -> Option<StoreFixture> {
        let db = TestDatabase::new().await;
        let store = PgEventStore::new(db.pool.clone(), PgStoreOptions::default());
        Some(StoreFixture {
            store: Arc::new(store),
            guard: Box::new(db),
        })
    }

    tessera_log::store_conformance_suite!(make);
}

/// `PiiStore` over PostgreSQL: what `tessera up`, `serve`, the projectors and the fixtures use.
mod pii_over_postgres {
    use super::*;

    async fn make() -> Option<StoreFixture> {
        let db = TestDatabase::new().await;
        let inner = PgEventStore::new(db.pool.clone(), PgStoreOptions::default());
        let vault = Vault::load(db.pool.clone(), None).await.expect("vault");
        Some(StoreFixture {
            store: Arc::new(PiiStore::new(Arc::new(inner), vault)),
            guard: Box::new(db),
        })
    }

    tessera_log::store_conformance_suite!(make);
}

/// `PiiStore` over the in-memory store (its keys still live in PostgreSQL).
mod pii_over_memory {
    use super::*;

    async fn make() -> Option<StoreFixture> {
        let db = TestDatabase::new().await;
        let vault = Vault::load(db.pool.clone(), None).await.expect("vault");
        Some(StoreFixture {
            store: Arc::new(PiiStore::new(Arc::new(InMemoryEventStore::new()), vault)),
            guard: Box::new(db),
        })
    }

    tessera_log::store_conformance_suite!(make);
}

/// KurrentDB cannot run on this machine: the suite runs only where `KURRENTDB_URL` points at a
/// server, and otherwise every case prints a visible `skipped:` line (shown by nextest, see
/// `.config/nextest.toml`).
#[cfg(feature = "kurrentdb")]
mod kurrentdb {
    use super::*;
    use tessera_log::store::kurrent::KurrentEventStore;

    async fn make() -> Option<StoreFixture> {
        let Ok(url) = std::env::var("KURRENTDB_URL") else {
            eprintln!(
                "skipped: set KURRENTDB_URL (e.g. kurrentdb://127.0.0.1:2113?tls=false) to run the KurrentDB conformance suite"
            );
            return None;
        };
        let store = KurrentEventStore::connect(&url).expect("connect to KurrentDB");
        Some(StoreFixture {
            store: Arc::new(store),
            guard: Box::new(()),
        })
    }

    tessera_log::store_conformance_suite!(make);
}

#[cfg(not(feature = "kurrentdb"))]
#[test]
fn kurrentdb_conformance() {
    eprintln!(
        "skipped: build with --features kurrentdb and set KURRENTDB_URL to run the KurrentDB conformance suite"
    );
}

/// Behaviour specific to the PostgreSQL store: several processes sharing one database.
mod postgres_processes {
    use std::time::Duration;

    use super::*;
    use tessera_log::store::EventStore;
    use tessera_log::store::conformance::concurrency_proof_across;

    async fn store_with_own_pool(
        db: &TestDatabase,
        poll_interval: Duration,
    ) -> Arc<dyn EventStore> {
        let pool = tessera_log::pg::connect(db.connect_options(), 10)
            .await
            .expect("connect");
        let options = PgStoreOptions {
            poll_interval,
            ..PgStoreOptions::default()
        };
        Arc::new(PgEventStore::new(pool, options))
    }

    /// The concurrency proof with a tail window of 64 events and pages of 100: the subscribers
    /// keep falling behind the shared window and catching up from the store, and still see
    /// every event once, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn subscribers_that_fall_behind_the_shared_tail_read_the_store_and_return() {
        let db = TestDatabase::new().await;
        let pool = tessera_log::pg::connect(db.connect_options(), 10)
            .await
            .expect("connect");
        let store: Arc<dyn EventStore> = Arc::new(PgEventStore::new(
            pool,
            PgStoreOptions {
                tail_events: 64,
                page_size: 100,
                ..PgStoreOptions::default()
            },
        ));
        tessera_log::store::conformance::concurrency_proof(store).await;
    }

    /// Writers in two store instances (two pools, two group-commit writers: two processes as far
    /// as PostgreSQL can tell) race on the global lock, while the subscribers run on a third
    /// instance whose poll fallback is an hour: only LISTEN/NOTIFY can keep it live.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn writers_in_separate_processes_and_a_notified_subscriber() {
        let db = TestDatabase::new().await;
        let writer_a = store_with_own_pool(&db, Duration::from_millis(500)).await;
        let writer_b = store_with_own_pool(&db, Duration::from_millis(500)).await;
        let reader = store_with_own_pool(&db, Duration::from_secs(3_600)).await;
        concurrency_proof_across(vec![writer_a, writer_b], reader).await;
    }
}
