//! An event as projections see it: decoded once, with the log facts they may use. Projections
//! must be deterministic functions of these (never the wall clock), so that a rebuild produces
//! exactly what incremental application produced.

use chrono::{DateTime, Utc};
use tessera_log::codec::{self, AnyEvent};
use tessera_log::store::{EventMetadata, Position, RecordedEvent};
use uuid::Uuid;

use crate::error::ProjectionError;

#[derive(Debug, Clone)]
pub struct Envelope {
    pub position: Position,
    pub stream_id: String,
    pub event_type: String,
    pub recorded_at: DateTime<Utc>,
    pub effective_at: DateTime<Utc>,
    pub metadata: EventMetadata,
    pub event: AnyEvent,
}

impl Envelope {
    /// Decodes a stored event; a failure names the event (a projection stops on it).
    pub fn decode(e: RecordedEvent, projection: &str) -> Result<Self, ProjectionError> {
        let event = codec::decode_any(&e.event_type, e.schema_version, &e.data).map_err(|err| {
            ProjectionError::Event {
                projection: projection.to_owned(),
                position: e.position,
                event_type: e.event_type.clone(),
                reason: err.to_string(),
            }
        })?;
        Ok(Self {
            position: e.position,
            stream_id: e.stream_id.as_str().to_owned(),
            event_type: e.event_type,
            recorded_at: e.recorded_at,
            effective_at: e.effective_at,
            metadata: e.metadata,
            event,
        })
    }

    /// The id part of a `<category>-<uuid>` stream id (loyalty events name their user this way).
    pub fn stream_uuid(&self) -> Option<Uuid> {
        self.stream_id
            .split_once('-')
            .and_then(|(_, id)| Uuid::parse_str(id).ok())
    }

    pub fn pos(&self) -> i64 {
        i64::try_from(self.position.0).unwrap_or(i64::MAX)
    }
}
