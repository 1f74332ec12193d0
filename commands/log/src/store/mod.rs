//! The event store port: the types every adapter speaks and the [`EventStore`] trait.
//!
//! The log is the source of truth of the platform. Every adapter gives the same guarantees
//! (checked by the [`conformance`] suite), except where [`Capabilities`] says otherwise:
//! optimistic concurrency per stream, atomic multi-stream appends, idempotent re-appends by event
//! id, a per-stream SHA-256 hash chain, and a global log that a reader can follow from a cursor
//! without ever missing an event that commits later behind it.

mod hash;
pub mod memory;
mod plan;
pub mod postgres;
mod subscription;
mod types;

#[cfg(feature = "kurrentdb")]
pub mod kurrent;

#[cfg(any(test, feature = "testkit"))]
pub mod conformance;

pub use hash::{GENESIS_HASH, Hash, HashedFields, chain_hash};
pub use memory::InMemoryEventStore;
pub use postgres::{PgEventStore, PgStoreOptions};
pub use types::{
    AppendResult, Capabilities, Direction, EventMetadata, ExpectedVersion, NewEvent, Position,
    RecordedEvent, StoreError, StreamId, StreamRead, StreamWrite, StreamWriteResult,
};

use async_trait::async_trait;
use futures::stream::BoxStream;

/// A stream of events from the global log, in log order, that catches up and then stays live.
/// It is pulled: a slow consumer simply pulls later, and the store reads no further ahead than
/// one page, which is the back-pressure.
pub type EventSubscription = BoxStream<'static, Result<RecordedEvent, StoreError>>;

/// The port through which the whole platform appends to and reads from the log.
#[async_trait]
pub trait EventStore: Send + Sync + std::fmt::Debug {
    /// What this adapter can and cannot promise (see the conformance suite and ADR 0001).
    fn capabilities(&self) -> Capabilities;

    /// Appends the events of one or more streams atomically: either every stream write passes its
    /// expected-version check and all events are stored, or nothing is written.
    ///
    /// Re-appending events whose ids are already stored with the same content writes nothing and
    /// returns the original result; the same id with different content is
    /// [`StoreError::EventIdConflict`].
    async fn append(&self, writes: Vec<StreamWrite>) -> Result<AppendResult, StoreError>;

    /// Reads up to `limit` events of one stream, forward from a version or backward from the end.
    async fn read_stream(
        &self,
        stream: &StreamId,
        read: StreamRead,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Reads up to `limit` events of the global log after the cursor `after`, in log order.
    /// No event can ever appear later at or before a position this call has returned.
    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Reads up to `limit` events of the global log after `after` as one finite stream, decoded
    /// as they arrive (PostgreSQL: one query). What catch-up readers use; `read_all` semantics.
    fn stream_all(&self, after: Position, limit: usize) -> EventSubscription;

    /// Position of the last event in the log ([`Position::START`] when the log is empty).
    async fn head(&self) -> Result<Position, StoreError>;

    /// Subscribes to the global log after `after`: catches up, then follows new events live.
    fn subscribe_all(&self, after: Position) -> EventSubscription;
}

/// Convenience: reads a whole stream forward (all pages).
pub async fn read_whole_stream(
    store: &dyn EventStore,
    stream: &StreamId,
) -> Result<Vec<RecordedEvent>, StoreError> {
    read_stream_after(store, stream, 0).await
}

/// Reads a stream forward from the event after `version` to its end (all pages).
pub async fn read_stream_after(
    store: &dyn EventStore,
    stream: &StreamId,
    version: u64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    const PAGE: usize = 1_000;
    let mut out = Vec::new();
    let mut next = version + 1;
    loop {
        let page = store
            .read_stream(stream, StreamRead::Forward { from: next }, PAGE)
            .await?;
        let done = page.len() < PAGE;
        if let Some(last) = page.last() {
            next = last.stream_version + 1;
        }
        out.extend(page);
        if done {
            return Ok(out);
        }
    }
}
