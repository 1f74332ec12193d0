//! The append planner: the one place that decides what an append writes, shared by every
//! adapter that assigns positions itself (PostgreSQL and in-memory).
//!
//! Given the current heads of the streams involved and any already-stored events with the same
//! ids, it validates the request, detects idempotent re-appends, checks expected versions,
//! assigns versions and positions and computes the hash chain. Several appends can be planned in
//! sequence against one planner (group commit): each sees the effects of the ones before it.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::hash::{GENESIS_HASH, Hash, HashedFields, chain_hash};
use super::types::{
    ActualVersion, AppendResult, ExpectedVersion, Position, RecordedEvent, StoreError, StreamId,
    StreamWrite, StreamWriteResult,
};

/// Most events one append may carry.
pub(crate) const MAX_EVENTS_PER_APPEND: usize = 10_000;

/// Current head of a stream: its version (0 = no stream) and last chain value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamHead {
    pub version: u64,
    pub hash: Hash,
}

impl Default for StreamHead {
    fn default() -> Self {
        Self {
            version: 0,
            hash: GENESIS_HASH,
        }
    }
}

/// Where an event holds text no store can keep as it is: U+0000 (PostgreSQL's `jsonb` and
/// `text` refuse it, other stores would keep what the first one cannot). The API refuses such
/// text at its boundary; this is the log's own guard, whatever the caller.
fn unstorable_text(e: &crate::store::NewEvent) -> Option<&'static str> {
    // In JSON text a NUL can only appear escaped, as `\u0000` after an odd run of backslashes
    // (an even run is escaped backslashes followed by the letters `u0000`).
    let data = e.data().as_bytes();
    let escaped_nul = data.windows(6).enumerate().any(|(i, w)| {
        w == b"\\u0000" && data[..i].iter().rev().take_while(|b| **b == b'\\').count() % 2 == 0
    });
    if escaped_nul || data.contains(&0) {
        return Some("data");
    }
    if e.metadata.actor.contains('\0') {
        return Some("actor");
    }
    if e.metadata
        .reason
        .as_deref()
        .is_some_and(|r| r.contains('\0'))
    {
        return Some("reason");
    }
    if e.event_type.contains('\0') {
        return Some("event type");
    }
    None
}

/// Checks the shape of an append before it reaches any store.
pub(crate) fn validate(writes: &[StreamWrite]) -> Result<(), StoreError> {
    let invalid = |reason: String| Err(StoreError::InvalidAppend { reason });
    if writes.is_empty() {
        return invalid("an append needs at least one stream write".into());
    }
    let mut streams = HashSet::new();
    let mut ids = HashSet::new();
    let mut total = 0;
    for w in writes {
        if !streams.insert(&w.stream) {
            return invalid(format!("stream {} appears twice in one append", w.stream));
        }
        if w.is_guard() && w.expected == ExpectedVersion::Any {
            return invalid(format!(
                "the write to stream {} has no events and expects any version: it checks nothing",
                w.stream
            ));
        }
        total += w.events.len();
        for e in &w.events {
            if !ids.insert(e.event_id) {
                return invalid(format!(
                    "event id {} appears twice in one append",
                    e.event_id
                ));
            }
            if let Some(what) = unstorable_text(e) {
                return Err(StoreError::UnstorableText {
                    event_id: e.event_id,
                    what,
                });
            }
            if e.event_type.is_empty() || e.event_type.len() > 200 {
                return invalid(format!(
                    "event {} has an empty or over-long type",
                    e.event_id
                ));
            }
        }
    }
    if total == 0 {
        return invalid("an append needs at least one event (guards alone write nothing)".into());
    }
    if total > MAX_EVENTS_PER_APPEND {
        return invalid(format!(
            "{total} events in one append; the limit is {MAX_EVENTS_PER_APPEND}"
        ));
    }
    Ok(())
}

/// Outcome of planning one append.
#[derive(Debug)]
pub(crate) enum Planned {
    /// New events to store, and the result to report once they are durable.
    Write {
        events: Vec<RecordedEvent>,
        result: AppendResult,
    },
    /// Every event was already stored with the same content: nothing to write.
    AlreadyStored(AppendResult),
}

/// Plans appends against a snapshot of the store taken under the store's write lock.
#[derive(Debug)]
pub(crate) struct Planner {
    head: Position,
    streams: HashMap<StreamId, StreamHead>,
    existing: HashMap<Uuid, RecordedEvent>,
    recorded_at: DateTime<Utc>,
}

impl Planner {
    /// `streams` holds the heads of (at least) every existing stream the appends touch;
    /// `existing` holds every already-stored event whose id the appends use.
    pub(crate) fn new(
        head: Position,
        streams: HashMap<StreamId, StreamHead>,
        existing: HashMap<Uuid, RecordedEvent>,
        recorded_at: DateTime<Utc>,
    ) -> Self {
        use chrono::SubsecRound;
        Self {
            head,
            streams,
            existing,
            recorded_at: recorded_at.trunc_subsecs(6),
        }
    }

    /// Position of the last planned (or stored) event.
    pub(crate) fn head(&self) -> Position {
        self.head
    }

    /// Heads of the streams after everything planned so far.
    pub(crate) fn stream_heads(&self) -> &HashMap<StreamId, StreamHead> {
        &self.streams
    }

    /// Plans one append. On error nothing of it is planned and the planner is unchanged.
    pub(crate) fn plan(&mut self, writes: &[StreamWrite]) -> Result<Planned, StoreError> {
        if let Some(done) = self.already_stored(writes)? {
            return Ok(Planned::AlreadyStored(done));
        }
        for w in writes {
            let actual = self.streams.get(&w.stream).map_or(0, |h| h.version);
            if !w.expected.admits(actual) {
                return Err(StoreError::WrongExpectedVersion {
                    stream: w.stream.clone(),
                    expected: w.expected,
                    actual: ActualVersion(actual),
                });
            }
        }
        let first_position = Position(self.head.0 + 1);
        let mut events = Vec::with_capacity(writes.iter().map(|w| w.events.len()).sum());
        let mut streams = Vec::with_capacity(writes.len());
        for w in writes.iter().filter(|w| !w.is_guard()) {
            let head = self.streams.entry(w.stream.clone()).or_default();
            let first_version = head.version + 1;
            for e in &w.events {
                self.head.0 += 1;
                head.version += 1;
                let hash = chain_hash(
                    &head.hash,
                    &HashedFields {
                        event_id: e.event_id,
                        stream_id: &w.stream,
                        stream_version: head.version,
                        event_type: &e.event_type,
                        schema_version: e.schema_version,
                        data: e.data(),
                        metadata: &e.metadata,
                        recorded_at: self.recorded_at,
                        effective_at: e.effective_at,
                    },
                );
                head.hash = hash;
                events.push(RecordedEvent {
                    position: self.head,
                    event_id: e.event_id,
                    stream_id: w.stream.clone(),
                    stream_version: head.version,
                    event_type: e.event_type.clone(),
                    schema_version: e.schema_version,
                    data: e.data().to_owned(),
                    metadata: e.metadata.clone(),
                    recorded_at: self.recorded_at,
                    effective_at: e.effective_at,
                    hash,
                });
            }
            streams.push(StreamWriteResult {
                stream: w.stream.clone(),
                first_version,
                last_version: head.version,
            });
        }
        for e in &events {
            self.existing.insert(e.event_id, e.clone());
        }
        Ok(Planned::Write {
            events,
            result: AppendResult {
                streams,
                first_position,
                last_position: self.head,
            },
        })
    }

    /// `Some(result)` when every event of the append is already stored, in the same streams with
    /// the same content and as one contiguous run per stream; an error when only some are, or
    /// any differs; `None` when none is stored.
    fn already_stored(&self, writes: &[StreamWrite]) -> Result<Option<AppendResult>, StoreError> {
        let mut found = 0usize;
        let mut first_missing = None;
        for w in writes {
            for e in &w.events {
                match self.existing.get(&e.event_id) {
                    Some(stored) if !stored.same_content_as(&w.stream, e) => {
                        return Err(StoreError::EventIdConflict {
                            event_id: e.event_id,
                        });
                    }
                    Some(_) => found += 1,
                    None => {
                        first_missing.get_or_insert(e.event_id);
                    }
                }
            }
        }
        if found == 0 {
            return Ok(None);
        }
        if let Some(event_id) = first_missing {
            // Some events stored and some not: a partial overlap is never a faithful retry.
            return Err(StoreError::EventIdConflict { event_id });
        }
        let mut streams = Vec::with_capacity(writes.len());
        let mut first_position = Position(u64::MAX);
        let mut last_position = Position::START;
        for w in writes.iter().filter(|w| !w.is_guard()) {
            let stored: Vec<&RecordedEvent> = w
                .events
                .iter()
                .map(|e| &self.existing[&e.event_id])
                .collect();
            let contiguous = stored
                .windows(2)
                .all(|p| p[1].stream_version == p[0].stream_version + 1);
            if !contiguous {
                return Err(StoreError::EventIdConflict {
                    event_id: w.events[0].event_id,
                });
            }
            for s in &stored {
                first_position = first_position.min(s.position);
                last_position = last_position.max(s.position);
            }
            streams.push(StreamWriteResult {
                stream: w.stream.clone(),
                first_version: stored[0].stream_version,
                last_version: stored[stored.len() - 1].stream_version,
            });
        }
        Ok(Some(AppendResult {
            streams,
            first_position,
            last_position,
        }))
    }
}
