//! The event store conformance suite, run against every adapter.

use std::sync::Arc;

use tessera_commands::store::conformance::StoreFixture;
use tessera_commands::store::{InMemoryEventStore, PgEventStore, PgStoreOptions};
use tessera_commands::testkit::TestDatabase;

mod in_memory {
    use super::*;

    async fn make() -> Option<StoreFixture> {
        Some(StoreFixture {
            store: Arc::new(InMemoryEventStore::new()),
            guard: Box::new(()),
        })
    }

    tessera_commands::store_conformance_suite!(make);
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

    tessera_commands::store_conformance_suite!(make);
}
