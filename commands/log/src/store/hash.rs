//! The per-stream hash chain: `hash(n) = SHA-256(hash(n-1) || encode(event n))`, with
//! [`GENESIS_HASH`] before the first event. The encoding covers every stored field of the event
//! except its global position (which the global seals bind) and is length-prefixed, so no two
//! different events encode to the same bytes.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::types::{EventMetadata, StreamId};

/// A SHA-256 value of the chain.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Hash(pub [u8; 32]);

/// The value before the first event of every stream.
pub const GENESIS_HASH: Hash = Hash([0; 32]);

impl Hash {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Hash)
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The stored fields of one event that the chain covers.
#[derive(Debug, Clone, Copy)]
pub struct HashedFields<'a> {
    pub event_id: Uuid,
    pub stream_id: &'a StreamId,
    pub stream_version: u64,
    pub event_type: &'a str,
    pub schema_version: u32,
    pub data: &'a str,
    pub metadata: &'a EventMetadata,
    pub recorded_at: DateTime<Utc>,
    pub effective_at: DateTime<Utc>,
}

/// Computes the chain value of an event from its predecessor's value.
pub fn chain_hash(previous: &Hash, e: &HashedFields<'_>) -> Hash {
    fn bytes(h: &mut Sha256, b: &[u8]) {
        h.update((b.len() as u64).to_be_bytes());
        h.update(b);
    }
    fn opt(h: &mut Sha256, b: Option<&[u8]>) {
        match b {
            None => h.update([0u8]),
            Some(b) => {
                h.update([1u8]);
                bytes(h, b);
            }
        }
    }
    let mut h = Sha256::new();
    h.update(b"tessera-event-v1");
    h.update(previous.0);
    h.update(e.event_id.as_bytes());
    bytes(&mut h, e.stream_id.as_str().as_bytes());
    h.update(e.stream_version.to_be_bytes());
    bytes(&mut h, e.event_type.as_bytes());
    h.update(e.schema_version.to_be_bytes());
    bytes(&mut h, e.data.as_bytes());
    h.update(e.metadata.correlation_id.as_bytes());
    opt(
        &mut h,
        e.metadata.causation_id.as_ref().map(|u| &u.as_bytes()[..]),
    );
    bytes(&mut h, e.metadata.actor.as_bytes());
    opt(&mut h, e.metadata.reason.as_deref().map(str::as_bytes));
    h.update(e.recorded_at.timestamp_micros().to_be_bytes());
    h.update(e.effective_at.timestamp_micros().to_be_bytes());
    Hash(h.finalize().into())
}

impl super::types::RecordedEvent {
    /// The fields of this event that its chain value covers.
    pub fn hashed_fields(&self) -> HashedFields<'_> {
        HashedFields {
            event_id: self.event_id,
            stream_id: &self.stream_id,
            stream_version: self.stream_version,
            event_type: &self.event_type,
            schema_version: self.schema_version,
            data: &self.data,
            metadata: &self.metadata,
            recorded_at: self.recorded_at,
            effective_at: self.effective_at,
        }
    }

    /// Whether this event's stored hash follows from `previous` and its own stored bytes.
    pub fn chain_holds(&self, previous: &Hash) -> bool {
        chain_hash(previous, &self.hashed_fields()) == self.hash
    }
}
