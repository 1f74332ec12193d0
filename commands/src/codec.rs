//! Stored events are a boundary: this codec turns domain events into what the log stores
//! (an event type, a schema version, JSON data) and back, upcasting old versions on the way in.
//!
//! Rules: a change to an event's stored shape bumps its version in [`SCHEMA`] and adds an
//! upcaster from the previous version; golden files `fixtures/events/<type>/v<N>.json` keep one
//! stored example of every version ever written, and a test decodes them all. Never edit one.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// Current schema version of every event type the platform writes.
pub const SCHEMA: &[(&str, u32)] = &[
    // listing
    ("ListingPublished", 1),
    ("ListingUpdated", 1),
    ("ListingRepriced", 1),
    ("CancellationPolicyChanged", 1),
    ("ListingRetired", 1),
    // slot
    ("SlotScheduled", 1),
    ("SlotCapacityChanged", 1),
    // v2 added `overbooked` (an admin's recorded decision to exceed capacity).
    ("SeatsHeld", 2),
    ("SeatsConfirmed", 1),
    ("SeatsReleased", 1),
    ("SlotCancelled", 1),
    // booking
    ("BookingPlaced", 1),
    ("BookingPaymentStarted", 1),
    ("BookingPaymentFailed", 1),
    ("BookingConfirmed", 1),
    ("BookingExpired", 1),
    ("BookingCancelled", 1),
    ("BookingCompleted", 1),
    ("BookingRefunded", 1),
    ("BookingReinstated", 1),
];

/// One step up: turns data stored at `from` into data of version `from + 1`.
struct Upcaster {
    event_type: &'static str,
    from: u32,
    apply: fn(&mut Map<String, Value>),
}

const UPCASTERS: &[Upcaster] = &[Upcaster {
    event_type: "SeatsHeld",
    from: 1,
    // Before v2 an overbooking was impossible.
    apply: |data| {
        data.entry("overbooked").or_insert(Value::Bool(false));
    },
}];

/// Why stored data could not become a domain event.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("unknown event type {0}")]
    UnknownType(String),
    #[error("{event_type} v{version} is newer than this build understands (v{current})")]
    FutureVersion {
        event_type: String,
        version: u32,
        current: u32,
    },
    #[error("no upcaster for {event_type} v{version}")]
    MissingUpcaster { event_type: String, version: u32 },
    #[error("{event_type} v{version} does not decode: {source}")]
    Decode {
        event_type: String,
        version: u32,
        #[source]
        source: serde_json::Error,
    },
    #[error("event does not encode: {0}")]
    Encode(String),
}

/// The current version of `event_type`.
pub fn current_version(event_type: &str) -> Option<u32> {
    SCHEMA
        .iter()
        .find(|(t, _)| *t == event_type)
        .map(|(_, v)| *v)
}

/// A domain event in its stored form.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub event_type: String,
    pub schema_version: u32,
    pub data: String,
}

/// Encodes a domain event enum (serialised as `{"type": …, "data": {…}}`) at its current version.
pub fn encode<E: Serialize>(event: &E) -> Result<Encoded, CodecError> {
    let value = serde_json::to_value(event).map_err(|e| CodecError::Encode(e.to_string()))?;
    let Value::Object(mut object) = value else {
        return Err(CodecError::Encode(
            "an event must serialise to an object".into(),
        ));
    };
    let Some(Value::String(event_type)) = object.remove("type") else {
        return Err(CodecError::Encode("an event must carry its type".into()));
    };
    let schema_version =
        current_version(&event_type).ok_or_else(|| CodecError::UnknownType(event_type.clone()))?;
    let data = object.remove("data").unwrap_or(Value::Object(Map::new()));
    let data = serde_json::to_string(&data).map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(Encoded {
        event_type,
        schema_version,
        data,
    })
}

/// Decodes stored data of any known version into the current domain event.
pub fn decode<E: DeserializeOwned>(
    event_type: &str,
    version: u32,
    data: &str,
) -> Result<E, CodecError> {
    let current = current_version(event_type)
        .ok_or_else(|| CodecError::UnknownType(event_type.to_owned()))?;
    let decode_err = |source| CodecError::Decode {
        event_type: event_type.to_owned(),
        version,
        source,
    };
    if version > current {
        return Err(CodecError::FutureVersion {
            event_type: event_type.to_owned(),
            version,
            current,
        });
    }
    let mut value: Value = serde_json::from_str(data).map_err(decode_err)?;
    for v in version..current {
        let upcaster = UPCASTERS
            .iter()
            .find(|u| u.event_type == event_type && u.from == v)
            .ok_or_else(|| CodecError::MissingUpcaster {
                event_type: event_type.to_owned(),
                version: v,
            })?;
        if let Value::Object(map) = &mut value {
            (upcaster.apply)(map);
        }
    }
    let mut tagged = Map::new();
    tagged.insert("type".into(), Value::String(event_type.to_owned()));
    tagged.insert("data".into(), value);
    serde_json::from_value(Value::Object(tagged)).map_err(decode_err)
}
