//! The PostgreSQL read models. Each one is a pure function of the log: it reads only the events
//! (never the wall clock or another projection), so a rebuild reproduces it exactly.

pub mod bookings;
pub mod catalog;
pub mod loyalty;
pub mod payments;
pub mod reviews;
pub mod stats;
pub mod users;

use std::collections::{BTreeMap, BTreeSet};

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

/// The keys of a batch's events that may already have a row, for one bulk load. `touches`
/// yields each event's key and whether that event creates the row wholesale (a booking's
/// `BookingPlaced`). A key whose first event in the batch creates its row is left out: the
/// batch holds only events past the checkpoint, so the row cannot be there yet, and if it were,
/// the event would replace it anyway. New bookings are most of a live batch, and probing the
/// index for rows that cannot exist cost as much as the write that follows.
pub(crate) fn keys_to_load(touches: impl IntoIterator<Item = (Uuid, bool)>) -> Vec<Uuid> {
    let mut first = BTreeMap::new();
    for (id, creates) in touches {
        first.entry(id).or_insert(creates);
    }
    first
        .into_iter()
        .filter_map(|(id, created_here)| (!created_here).then_some(id))
        .collect()
}

/// Whether the event creates its booking's row (for [`keys_to_load`]).
pub(crate) fn places_booking(e: &Envelope) -> bool {
    matches!(
        e.event,
        tessera_log::codec::AnyEvent::Booking(
            tessera_domain::booking::BookingEvent::BookingPlaced { .. }
        )
    )
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

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::keys_to_load;

    #[test]
    fn keys_whose_first_event_creates_the_row_are_not_loaded() {
        let [a, b, c] = [Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3)];
        // a: created in this batch, then changed; b: changed, then (oddly) created again;
        // c: only changed.
        let touches = [
            (c, false),
            (a, true),
            (b, false),
            (a, false),
            (b, true),
            (c, false),
        ];
        assert_eq!(keys_to_load(touches), vec![b, c]);
        assert!(keys_to_load([(a, true)]).is_empty());
    }
}
