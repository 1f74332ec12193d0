//! Value types of the event store port: stream ids, expected versions, new and recorded events,
//! append results and the typed errors.

use std::fmt;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::hash::Hash;

/// Longest stream id accepted; long enough for `category-<uuid>-<suffix>` shapes.
pub const MAX_STREAM_ID_LEN: usize = 200;

/// Name of a stream, conventionally `category-id` (for example `booking-0b5c…`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamId(String);

impl StreamId {
    /// Parses a stream id: 1 to 200 characters, no whitespace or control characters, and not
    /// starting with `$` (reserved for system streams, as in KurrentDB).
    pub fn new(id: impl Into<String>) -> Result<Self, StoreError> {
        let id = id.into();
        let invalid = |why: &str| StoreError::InvalidStreamId {
            stream: id.clone(),
            reason: why.to_owned(),
        };
        if id.is_empty() {
            return Err(invalid("it is empty"));
        }
        if id.len() > MAX_STREAM_ID_LEN {
            return Err(invalid("it is longer than 200 bytes"));
        }
        if id.starts_with('$') {
            return Err(invalid("ids starting with '$' are reserved"));
        }
        if id.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("it contains whitespace or control characters"));
        }
        Ok(Self(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the first `-`: the stream's category (`booking` for `booking-42`).
    pub fn category(&self) -> &str {
        self.0.split_once('-').map_or(&self.0, |(c, _)| c)
    }
}

impl TryFrom<String> for StreamId {
    type Error = StoreError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<StreamId> for String {
    fn from(value: StreamId) -> Self {
        value.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the writer believes the stream's current version is. Versions count events: the first
/// event of a stream has version 1, and a stream at version `v` holds `v` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last event must have exactly this version (`Exact(0)` means `NoStream`).
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream currently at `actual` (0 = no stream) satisfies this expectation.
    pub fn admits(self, actual: u64) -> bool {
        match self {
            Self::Any => true,
            Self::NoStream => actual == 0,
            Self::Exact(v) => actual == v,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any version"),
            Self::NoStream | Self::Exact(0) => f.write_str("no stream"),
            Self::Exact(v) => write!(f, "version {v}"),
        }
    }
}

/// Shows a current stream version, where 0 means the stream does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActualVersion(pub u64);

impl fmt::Display for ActualVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("no stream"),
            v => write!(f, "version {v}"),
        }
    }
}

/// Who did what, why, and in reply to what. Stored beside every event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// Shared by every event that one request or process caused, across streams.
    pub correlation_id: Uuid,
    /// The command or event that directly caused this one.
    pub causation_id: Option<Uuid>,
    /// A user id, or `system:<reactor>` for automated actors.
    pub actor: String,
    /// The reason a person gave (required for admin compensations by the command layer).
    pub reason: Option<String>,
}

impl EventMetadata {
    pub fn new(correlation_id: Uuid, actor: impl Into<String>) -> Self {
        Self {
            correlation_id,
            causation_id: None,
            actor: actor.into(),
            reason: None,
        }
    }

    pub fn caused_by(mut self, causation_id: Uuid) -> Self {
        self.causation_id = Some(causation_id);
        self
    }

    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

/// An event to append. The data is kept as the exact JSON text that will be stored (and hashed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    data: String,
    pub metadata: EventMetadata,
    /// When the fact happened in business terms (may differ from when it was recorded).
    pub effective_at: DateTime<Utc>,
}

impl NewEvent {
    /// Builds an event from any serialisable payload. Timestamps are kept at microsecond
    /// precision, which is what PostgreSQL stores (so that hashes re-derive exactly).
    pub fn new(
        event_id: Uuid,
        event_type: impl Into<String>,
        schema_version: u32,
        data: &impl Serialize,
        metadata: EventMetadata,
        effective_at: DateTime<Utc>,
    ) -> Result<Self, StoreError> {
        let data = serde_json::to_string(data).map_err(|e| StoreError::InvalidAppend {
            reason: format!("event data does not serialise to JSON: {e}"),
        })?;
        Self::from_json_text(
            event_id,
            event_type,
            schema_version,
            data,
            metadata,
            effective_at,
        )
    }

    /// Builds an event from JSON text, which is validated and stored byte for byte.
    pub fn from_json_text(
        event_id: Uuid,
        event_type: impl Into<String>,
        schema_version: u32,
        data: String,
        metadata: EventMetadata,
        effective_at: DateTime<Utc>,
    ) -> Result<Self, StoreError> {
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&data) {
            return Err(StoreError::InvalidAppend {
                reason: format!("event data is not valid JSON: {e}"),
            });
        }
        Ok(Self {
            event_id,
            event_type: event_type.into(),
            schema_version,
            data,
            metadata,
            effective_at: effective_at.trunc_subsecs(6),
        })
    }

    /// The JSON text of the payload.
    pub fn data(&self) -> &str {
        &self.data
    }
}

/// The events to append to one stream, guarded by an expected version. A write without events
/// is a **guard**: it appends nothing, but the whole append fails unless that stream is at the
/// expected version. A decision that read a stream it does not change (a hold reads its
/// listing) guards it, so it cannot commit against a state that has since moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamWrite {
    pub stream: StreamId,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
}

impl StreamWrite {
    pub fn new(stream: StreamId, expected: ExpectedVersion, events: Vec<NewEvent>) -> Self {
        Self {
            stream,
            expected,
            events,
        }
    }

    /// A guard: the append commits only if `stream` is at `expected` (never [`ExpectedVersion::Any`]).
    pub fn guard(stream: StreamId, expected: ExpectedVersion) -> Self {
        Self::new(stream, expected, Vec::new())
    }

    /// Whether this write appends nothing and only checks its stream's version.
    pub fn is_guard(&self) -> bool {
        self.events.is_empty()
    }
}

/// A position in the global log. Positions only grow; [`Position::START`] is before the first
/// event. In the PostgreSQL and in-memory stores positions are dense (1, 2, 3, … without gaps),
/// so a missing position is evidence of a deleted event.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Position(pub u64);

impl Position {
    pub const START: Position = Position(0);
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An event as stored in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    pub position: Position,
    pub event_id: Uuid,
    pub stream_id: StreamId,
    pub stream_version: u64,
    pub event_type: String,
    pub schema_version: u32,
    /// The stored JSON text of the payload.
    pub data: String,
    pub metadata: EventMetadata,
    pub recorded_at: DateTime<Utc>,
    pub effective_at: DateTime<Utc>,
    /// SHA-256 over the previous event's hash in this stream and this event's stored bytes.
    pub hash: Hash,
}

impl RecordedEvent {
    /// Decodes the payload into a concrete type.
    pub fn decode<'a, T: Deserialize<'a>>(&'a self) -> Result<T, StoreError> {
        serde_json::from_str(&self.data).map_err(|e| StoreError::Corrupt {
            position: self.position,
            reason: format!("payload of {} does not decode: {e}", self.event_type),
        })
    }

    /// Whether this stored event carries the same content as `new` (what an idempotent
    /// re-append must match; positions, versions and record times are the store's own).
    pub fn same_content_as(&self, stream: &StreamId, new: &NewEvent) -> bool {
        self.event_id == new.event_id
            && &self.stream_id == stream
            && self.event_type == new.event_type
            && self.schema_version == new.schema_version
            && self.data == new.data
            && self.metadata == new.metadata
            && self.effective_at == new.effective_at
    }
}

/// Where one stream of an append ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamWriteResult {
    pub stream: StreamId,
    pub first_version: u64,
    pub last_version: u64,
}

/// What an append produced (or, for an idempotent re-append, had produced the first time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendResult {
    pub streams: Vec<StreamWriteResult>,
    /// Position of the first event written by the append.
    pub first_position: Position,
    /// Position of the last event written by the append: what a client waits for to read its writes.
    pub last_position: Position,
}

/// How to read one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamRead {
    /// From this version (inclusive, 1 is the first event) towards the end.
    Forward { from: u64 },
    /// From this version (inclusive; `None` is the last event) towards the start.
    Backward { from: Option<u64> },
}

/// Direction of a read, for display and CLI use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Backward,
}

/// What an adapter guarantees beyond the common core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Several streams in one append succeed or fail together.
    pub atomic_multi_stream: bool,
    /// Global positions are 1, 2, 3, … with no gaps.
    pub dense_positions: bool,
    /// Event ids are unique across the whole log: reusing one anywhere is detected, not only a
    /// faithful retry of the same append.
    pub log_wide_event_ids: bool,
}

/// Everything an event store can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("wrong expected version on stream {stream}: expected {expected}, actual {actual}")]
    WrongExpectedVersion {
        stream: StreamId,
        expected: ExpectedVersion,
        actual: ActualVersion,
    },
    #[error("event {event_id} is already stored with different content or in another place")]
    EventIdConflict { event_id: Uuid },
    #[error("invalid stream id {stream:?}: {reason}")]
    InvalidStreamId { stream: String, reason: String },
    #[error("invalid append: {reason}")]
    InvalidAppend { reason: String },
    /// The event's text holds what the log does not store (U+0000); nothing was written.
    #[error("event {event_id} holds text the log does not store (U+0000 in its {what})")]
    UnstorableText { event_id: Uuid, what: &'static str },
    #[error("not supported by this event store: {what}")]
    Unsupported { what: &'static str },
    #[error("stored event at position {position} is unreadable: {reason}")]
    Corrupt { position: Position, reason: String },
    #[error("event store database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("event store backend error: {0}")]
    Backend(String),
    #[error("the event store is shutting down")]
    Closed,
}

impl StoreError {
    /// Whether retrying the same command after reloading state may succeed.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::WrongExpectedVersion { .. })
    }
}
