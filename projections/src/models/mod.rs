//! The PostgreSQL read models. Each one is a pure function of the log: it reads only the events
//! (never the wall clock or another projection), so a rebuild reproduces it exactly.

pub mod bookings;
pub mod catalog;
pub mod loyalty;
pub mod payments;
pub mod reviews;
pub mod stats;

use std::collections::BTreeSet;

use uuid::Uuid;

use crate::envelope::Envelope;
use crate::error::ProjectionError;

/// The keys a batch touches, for one bulk load.
pub(crate) fn keys(ids: impl IntoIterator<Item = Uuid>) -> Vec<Uuid> {
    ids.into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The projection cannot make sense of this event given what it saw before.
pub(crate) fn inconsistent(
    projection: &str,
    e: &Envelope,
    why: impl Into<String>,
) -> ProjectionError {
    ProjectionError::Event {
        projection: projection.to_owned(),
        position: e.position,
        event_type: e.event_type.clone(),
        reason: why.into(),
    }
}

/// A value as JSON for a `jsonb` column. Serialising what the domain already serialised cannot
/// fail in practice; if it ever does, the projection stops on that event rather than guess.
pub(crate) fn json<T: serde::Serialize>(
    projection: &str,
    e: &Envelope,
    v: &T,
) -> Result<serde_json::Value, ProjectionError> {
    serde_json::to_value(v).map_err(|why| inconsistent(projection, e, why.to_string()))
}
