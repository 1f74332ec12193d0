//! The KurrentDB (EventStoreDB) adapter, through the official `kurrentdb` client crate.
//!
//! What it cannot give (ADR 0001, "KurrentDB"): atomic appends to several streams (refused
//! with [`StoreError::Unsupported`]); dense global positions (positions are KurrentDB commit
//! positions); detection of an event id reused in another place than a faithful retry (KurrentDB
//! keeps no index by event id). Live subscriptions poll the `$all` stream.
//!
//! Our metadata, schema version, effective time, record time and chain value travel in the
//! event's custom metadata; the chain is computed here from the stream's last event, and every
//! append is sent with an exact expected revision so that two writers cannot fork the chain
//! (an `Any` append that loses that race is re-planned, a bounded number of times).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use kurrentdb::{
    AppendToStreamOptions, Client, ClientSettings, EventData, ReadAllOptions, ReadStreamOptions,
    StreamPosition, StreamState, SubscriptionFilter,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use uuid::Uuid;

use super::hash::{GENESIS_HASH, Hash, HashedFields, chain_hash};
use super::plan::validate;
use super::subscription::follow;
use super::types::ActualVersion;
use super::{
    AppendResult, Capabilities, EventMetadata, EventStore, EventSubscription, ExpectedVersion,
    Position, RecordedEvent, StoreError, StreamId, StreamRead, StreamWrite, StreamWriteResult,
};

/// How many times an `Any` append is re-planned after losing a race.
const ANY_RETRIES: usize = 10;

/// The KurrentDB event store.
#[derive(Clone)]
pub struct KurrentEventStore {
    client: Client,
    // Never signalled: KurrentDB subscriptions here are polled.
    wake: std::sync::Arc<watch::Sender<()>>,
}

impl std::fmt::Debug for KurrentEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KurrentEventStore").finish_non_exhaustive()
    }
}

/// What we keep in KurrentDB's custom metadata.
#[derive(Debug, Serialize, Deserialize)]
struct StoredMeta {
    correlation_id: Uuid,
    causation_id: Option<Uuid>,
    actor: String,
    reason: Option<String>,
    schema_version: u32,
    effective_at: DateTime<Utc>,
    recorded_at: DateTime<Utc>,
    hash: String,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl KurrentEventStore {
    /// Connects with a KurrentDB connection string (`kurrentdb://host:2113?tls=false`).
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        let settings: ClientSettings = url.parse().map_err(backend)?;
        let client = Client::new(settings).map_err(backend)?;
        Ok(Self {
            client,
            wake: std::sync::Arc::new(watch::Sender::new(())),
        })
    }

    async fn last_event(&self, stream: &StreamId) -> Result<Option<RecordedEvent>, StoreError> {
        Ok(self
            .read_stream(stream, StreamRead::Backward { from: None }, 1)
            .await?
            .pop())
    }

    fn convert(e: &kurrentdb::RecordedEvent) -> Result<RecordedEvent, StoreError> {
        let position = Position(e.position.commit);
        let corrupt = |reason: String| StoreError::Corrupt { position, reason };
        let meta: StoredMeta = serde_json::from_slice(&e.custom_metadata)
            .map_err(|err| corrupt(format!("metadata is not Tessera's: {err}")))?;
        let hash = hex::decode(&meta.hash)
            .ok()
            .and_then(|b| Hash::from_slice(&b))
            .ok_or_else(|| corrupt("bad chain value".into()))?;
        Ok(RecordedEvent {
            position,
            event_id: e.id,
            stream_id: StreamId::new(e.stream_id()).map_err(|err| corrupt(err.to_string()))?,
            stream_version: e.revision + 1,
            event_type: e.event_type.clone(),
            schema_version: meta.schema_version,
            data: String::from_utf8(e.data.to_vec())
                .map_err(|err| corrupt(format!("payload is not UTF-8: {err}")))?,
            metadata: EventMetadata {
                correlation_id: meta.correlation_id,
                causation_id: meta.causation_id,
                actor: meta.actor,
                reason: meta.reason,
            },
            recorded_at: meta.recorded_at,
            effective_at: meta.effective_at,
            hash,
        })
    }

    /// A faithful retry: the stream already holds these events right after `expected`.
    async fn find_retry(&self, w: &StreamWrite) -> Result<Option<AppendResult>, StoreError> {
        let from = match w.expected {
            ExpectedVersion::Any => return Ok(None),
            ExpectedVersion::NoStream => 1,
            ExpectedVersion::Exact(v) => v + 1,
        };
        let stored = self
            .read_stream(&w.stream, StreamRead::Forward { from }, w.events.len())
            .await?;
        if stored.len() != w.events.len() || stored[0].event_id != w.events[0].event_id {
            return Ok(None);
        }
        for (s, e) in stored.iter().zip(&w.events) {
            if !s.same_content_as(&w.stream, e) {
                return Err(StoreError::EventIdConflict {
                    event_id: e.event_id,
                });
            }
        }
        Ok(Some(AppendResult {
            streams: vec![StreamWriteResult {
                stream: w.stream.clone(),
                first_version: stored[0].stream_version,
                last_version: stored[stored.len() - 1].stream_version,
            }],
            first_position: stored[0].position,
            last_position: stored[stored.len() - 1].position,
        }))
    }
}

#[async_trait]
impl EventStore for KurrentEventStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            atomic_multi_stream: false,
            dense_positions: false,
            log_wide_event_ids: false,
        }
    }

    async fn append(&self, writes: Vec<StreamWrite>) -> Result<AppendResult, StoreError> {
        validate(&writes)?;
        if writes.len() > 1 {
            return Err(StoreError::Unsupported {
                what: "atomic appends to several streams (KurrentDB has no multi-stream transaction)",
            });
        }
        let w = &writes[0];
        for _ in 0..ANY_RETRIES {
            let last = self.last_event(&w.stream).await?;
            let (current, mut previous) = last
                .as_ref()
                .map_or((0, GENESIS_HASH), |e| (e.stream_version, e.hash));
            if !w.expected.admits(current) {
                if let Some(done) = self.find_retry(w).await? {
                    return Ok(done);
                }
                return Err(StoreError::WrongExpectedVersion {
                    stream: w.stream.clone(),
                    expected: w.expected,
                    actual: ActualVersion(current),
                });
            }
            let recorded_at = chrono::SubsecRound::trunc_subsecs(Utc::now(), 6);
            let mut data = Vec::with_capacity(w.events.len());
            for (i, e) in w.events.iter().enumerate() {
                let hash = chain_hash(
                    &previous,
                    &HashedFields {
                        event_id: e.event_id,
                        stream_id: &w.stream,
                        stream_version: current + 1 + i as u64,
                        event_type: &e.event_type,
                        schema_version: e.schema_version,
                        data: e.data(),
                        metadata: &e.metadata,
                        recorded_at,
                        effective_at: e.effective_at,
                    },
                );
                previous = hash;
                let payload: serde_json::Value = serde_json::from_str(e.data()).map_err(backend)?;
                let event = EventData::json(&e.event_type, &payload)
                    .map_err(backend)?
                    .id(e.event_id)
                    .metadata_as_json(&StoredMeta {
                        correlation_id: e.metadata.correlation_id,
                        causation_id: e.metadata.causation_id,
                        actor: e.metadata.actor.clone(),
                        reason: e.metadata.reason.clone(),
                        schema_version: e.schema_version,
                        effective_at: e.effective_at,
                        recorded_at,
                        hash: hash.to_hex(),
                    })
                    .map_err(backend)?;
                data.push(event);
            }
            let state = match current {
                0 => StreamState::NoStream,
                v => StreamState::StreamRevision(v - 1),
            };
            let options = AppendToStreamOptions::default().stream_state(state);
            match self
                .client
                .append_to_stream(w.stream.as_str(), &options, data)
                .await
            {
                Ok(_) => {
                    // Read back what was written to report its positions.
                    let stored = self
                        .read_stream(
                            &w.stream,
                            StreamRead::Forward { from: current + 1 },
                            w.events.len(),
                        )
                        .await?;
                    let (first, last) = match (stored.first(), stored.last()) {
                        (Some(f), Some(l)) => (f.position, l.position),
                        _ => return Err(backend("appended events are not readable")),
                    };
                    return Ok(AppendResult {
                        streams: vec![StreamWriteResult {
                            stream: w.stream.clone(),
                            first_version: current + 1,
                            last_version: current + w.events.len() as u64,
                        }],
                        first_position: first,
                        last_position: last,
                    });
                }
                Err(kurrentdb::Error::WrongExpectedVersion { .. })
                    if w.expected == ExpectedVersion::Any => {}
                Err(kurrentdb::Error::WrongExpectedVersion { current, .. }) => {
                    return Err(StoreError::WrongExpectedVersion {
                        stream: w.stream.clone(),
                        expected: w.expected,
                        actual: ActualVersion(match current {
                            kurrentdb::CurrentRevision::Current(r) => r + 1,
                            kurrentdb::CurrentRevision::NoStream => 0,
                        }),
                    });
                }
                Err(e) => return Err(backend(e)),
            }
        }
        Err(StoreError::Backend(format!(
            "stream {} kept changing; gave up after {ANY_RETRIES} attempts",
            w.stream
        )))
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        read: StreamRead,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let options = match read {
            StreamRead::Forward { from } => ReadStreamOptions::default()
                .forwards()
                .position(StreamPosition::Position(from.saturating_sub(1))),
            StreamRead::Backward { from: None } => ReadStreamOptions::default()
                .backwards()
                .position(StreamPosition::End),
            StreamRead::Backward { from: Some(v) } => ReadStreamOptions::default()
                .backwards()
                .position(StreamPosition::Position(v.saturating_sub(1))),
        }
        .max_count(limit);
        let mut reader = match self.client.read_stream(stream.as_str(), &options).await {
            Ok(r) => r,
            Err(kurrentdb::Error::ResourceNotFound) => return Ok(Vec::new()),
            Err(e) => return Err(backend(e)),
        };
        let mut out = Vec::new();
        loop {
            match reader.next().await {
                Ok(Some(e)) => out.push(Self::convert(e.get_original_event())?),
                Ok(None) => return Ok(out),
                Err(kurrentdb::Error::ResourceNotFound) => return Ok(Vec::new()),
                Err(e) => return Err(backend(e)),
            }
        }
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let from = match after {
            Position::START => StreamPosition::Start,
            Position(p) => StreamPosition::Position(kurrentdb::Position {
                commit: p,
                prepare: p,
            }),
        };
        let options = ReadAllOptions::default()
            .forwards()
            .position(from)
            .filter(SubscriptionFilter::on_event_type().exclude_system_events())
            .max_count(limit + 1);
        let mut reader = self.client.read_all(&options).await.map_err(backend)?;
        let mut out = Vec::with_capacity(limit);
        while out.len() < limit {
            match reader.next().await.map_err(backend)? {
                Some(e) => {
                    let e = e.get_original_event();
                    if e.position.commit > after.0 && !e.stream_id().starts_with('$') {
                        out.push(Self::convert(e)?);
                    }
                }
                None => break,
            }
        }
        Ok(out)
    }

    fn stream_all(&self, after: Position, limit: usize) -> EventSubscription {
        let store = self.clone();
        Box::pin(async_stream::try_stream! {
            for event in store.read_all(after, limit).await? {
                yield event;
            }
        })
    }

    async fn head(&self) -> Result<Position, StoreError> {
        let options = ReadAllOptions::default()
            .backwards()
            .position(StreamPosition::End)
            .filter(SubscriptionFilter::on_event_type().exclude_system_events())
            .max_count(1);
        let mut reader = self.client.read_all(&options).await.map_err(backend)?;
        Ok(match reader.next().await.map_err(backend)? {
            Some(e) => Position(e.get_original_event().position.commit),
            None => Position::START,
        })
    }

    fn subscribe_all(&self, after: Position) -> EventSubscription {
        follow(
            self.clone(),
            after,
            self.wake.subscribe(),
            Duration::from_millis(100),
            1_000,
        )
    }
}
