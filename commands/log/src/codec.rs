//! Stored events are a boundary: this codec turns domain events into what the log stores
//! (an event type, a schema version, JSON data) and back, upcasting old versions on the way in.
//!
//! Rules: a change to an event's stored shape bumps its version in [`SCHEMA`] and adds an
//! upcaster from the previous version; golden files `fixtures/events/<type>/v<N>.json` keep one
//! stored example of every version ever written, and a test decodes them all. Never edit one.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// Current schema version of every event type the platform writes, by aggregate category.
pub const SCHEMA: &[(&str, &str, u32)] = &[
    // listing
    // v2 added `details.tax_rate_bp` (the tax included in the price).
    ("ListingPublished", "listing", 2),
    ("ListingUpdated", "listing", 2),
    ("ListingRepriced", "listing", 1),
    ("CancellationPolicyChanged", "listing", 1),
    ("ListingRetired", "listing", 1),
    ("TicketScanningSet", "listing", 1),
    // slot
    ("SlotScheduled", "slot", 1),
    ("SlotCapacityChanged", "slot", 1),
    ("SlotRepriced", "slot", 1),
    // v2 added `overbooked` (an admin's recorded decision to exceed capacity).
    ("SeatsHeld", "slot", 2),
    ("SeatsConfirmed", "slot", 1),
    ("SeatsReleased", "slot", 1),
    ("SlotCancelled", "slot", 1),
    // booking
    // v2 added `provider_id` and `commission_bp` (the commission snapshotted when placed).
    // v3 added `tax_rate_bp` (the listing's tax rate, snapshotted for the receipt).
    ("BookingPlaced", "booking", 3),
    ("BookingPaymentStarted", "booking", 1),
    ("BookingPaymentFailed", "booking", 1),
    ("BookingConfirmed", "booking", 1),
    ("BookingExpired", "booking", 1),
    ("BookingCancelled", "booking", 1),
    ("BookingCompleted", "booking", 1),
    ("BookingRefunded", "booking", 1),
    ("BookingReinstated", "booking", 1),
    ("LatePaymentAccepted", "booking", 1),
    ("TicketCheckedIn", "booking", 1),
    ("BookingNoShow", "booking", 1),
    // v2 added `top_up` (the payment of a move to a dearer slot; absent otherwise).
    ("BookingRescheduled", "booking", 2),
    ("BookingMoveRequested", "booking", 1),
    ("BookingMoveAbandoned", "booking", 1),
    // payment
    ("PaymentIntentCreated", "payment", 1),
    ("PaymentSucceeded", "payment", 1),
    ("PaymentFailed", "payment", 1),
    ("RefundRequested", "payment", 1),
    // v2 added `split` (who bears a refund after the provider's share was released).
    ("RefundSucceeded", "payment", 2),
    ("RefundFailed", "payment", 1),
    ("FundsReleased", "payment", 1),
    ("TransferStarted", "payment", 1),
    ("FundsTransferred", "payment", 1),
    ("TransferFailed", "payment", 1),
    ("ReversalStarted", "payment", 1),
    ("TransferReversed", "payment", 1),
    ("ReversalFailed", "payment", 1),
    ("ReceiptIssued", "payment", 1),
    ("CreditNoteIssued", "payment", 1),
    // provider
    ("PayoutAccountOpened", "provider", 1),
    ("DoorStaffAdded", "provider", 1),
    ("DoorStaffRemoved", "provider", 1),
    ("PayoutAccountActivated", "provider", 1),
    ("PayoutAccountRestricted", "provider", 1),
    ("CommissionRateSet", "provider", 1),
    ("TransferAwaitingAccount", "provider", 1),
    ("PayoutPaid", "provider", 1),
    ("PayoutFailed", "provider", 1),
    ("CommissionAccrued", "provider", 1),
    ("CommissionInvoiced", "provider", 1),
    // series (gapless document numbers)
    ("DocumentNumbered", "series", 1),
    // loyalty
    ("PointsAwarded", "loyalty", 1),
    ("PointsReversed", "loyalty", 1),
    ("PointsRedeemed", "loyalty", 1),
    ("PointsAdjusted", "loyalty", 1),
    ("BadgeEarned", "loyalty", 1),
    // review
    ("ReviewWritten", "review", 1),
    // user
    ("UserRegistered", "user", 1),
    ("UserProfileUpdated", "user", 1),
    ("RoleGranted", "user", 1),
    ("RoleRevoked", "user", 1),
    ("UserErased", "user", 1),
    ("NotificationPreferencesSet", "user", 1),
    ("PhoneNumberSet", "user", 1),
    ("PasswordChanged", "user", 1),
    ("UserSuspended", "user", 1),
    ("UserUnsuspended", "user", 1),
    ("EmailVerified", "user", 1),
    ("EmailChanged", "user", 1),
    ("ListingSaved", "user", 1),
    ("ListingUnsaved", "user", 1),
    ("EmailReserved", "email", 1),
    ("EmailReleased", "email", 1),
    // schedule
    ("ScheduleDefined", "schedule", 1),
    ("ScheduleChanged", "schedule", 1),
    ("ScheduleSlotsGenerated", "schedule", 1),
    ("ScheduleExceptionAdded", "schedule", 1),
    ("ScheduleExceptionRemoved", "schedule", 1),
    ("ScheduleEnded", "schedule", 1),
];

/// One step up: turns data stored at `from` into data of version `from + 1`.
struct Upcaster {
    event_type: &'static str,
    from: u32,
    apply: fn(&mut Map<String, Value>),
}

const UPCASTERS: &[Upcaster] = &[
    Upcaster {
        event_type: "SeatsHeld",
        from: 1,
        // Before v2 an overbooking was impossible.
        apply: |data| {
            data.entry("overbooked").or_insert(Value::Bool(false));
        },
    },
    Upcaster {
        event_type: "BookingPlaced",
        from: 1,
        // Before v2 every booking paid the platform's default commission (15 %); the provider
        // is found on the slot.
        apply: |data| {
            data.entry("provider_id").or_insert(Value::Null);
            data.entry("commission_bp")
                .or_insert(Value::from(tessera_domain::provider::DEFAULT_COMMISSION_BP));
        },
    },
    Upcaster {
        event_type: "ListingPublished",
        from: 1,
        // Before v2 no listing stated a tax rate.
        apply: no_tax_in_details,
    },
    Upcaster {
        event_type: "ListingUpdated",
        from: 1,
        apply: no_tax_in_details,
    },
    Upcaster {
        event_type: "BookingPlaced",
        from: 2,
        // Before v3 listings stated no tax rate.
        apply: |data| {
            data.entry("tax_rate_bp").or_insert(Value::from(0));
        },
    },
    Upcaster {
        event_type: "RefundSucceeded",
        from: 1,
        // Before v2 nothing was ever released: every refund came out of the held money.
        apply: |data| {
            data.entry("split").or_insert(Value::Null);
        },
    },
    Upcaster {
        event_type: "BookingRescheduled",
        from: 1,
        // Before v2 no move charged anything: a dearer slot was refused. (v2 writes `top_up`
        // only when a move has one, so the upcast data is what v2 writes for such a move.)
        apply: |_| {},
    },
];

fn no_tax_in_details(data: &mut Map<String, Value>) {
    if let Some(Value::Object(details)) = data.get_mut("details") {
        details.entry("tax_rate_bp").or_insert(Value::from(0));
    }
}

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
        .find(|(t, _, _)| *t == event_type)
        .map(|(_, _, v)| *v)
}

/// The aggregate category (`booking`, `slot`, …) whose streams hold `event_type`.
pub fn category_of(event_type: &str) -> Option<&'static str> {
    SCHEMA
        .iter()
        .find(|(t, _, _)| *t == event_type)
        .map(|(_, c, _)| *c)
}

/// Any event of the platform, for readers that do not know the stream (audit, golden files).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum AnyEvent {
    Listing(tessera_domain::listing::ListingEvent),
    Slot(tessera_domain::slot::SlotEvent),
    Booking(tessera_domain::booking::BookingEvent),
    Payment(tessera_domain::payment::PaymentEvent),
    Loyalty(tessera_domain::loyalty::LoyaltyEvent),
    Review(tessera_domain::review::ReviewEvent),
    User(tessera_domain::user::UserEvent),
    Email(tessera_domain::user::EmailReservationEvent),
    Provider(tessera_domain::provider::ProviderEvent),
    Series(tessera_domain::receipt::SeriesEvent),
    Schedule(tessera_domain::schedule::ScheduleEvent),
}

/// Decodes any stored event by its type.
pub fn decode_any(event_type: &str, version: u32, data: &str) -> Result<AnyEvent, CodecError> {
    match category_of(event_type) {
        Some("listing") => decode(event_type, version, data).map(AnyEvent::Listing),
        Some("slot") => decode(event_type, version, data).map(AnyEvent::Slot),
        Some("booking") => decode(event_type, version, data).map(AnyEvent::Booking),
        Some("payment") => decode(event_type, version, data).map(AnyEvent::Payment),
        Some("loyalty") => decode(event_type, version, data).map(AnyEvent::Loyalty),
        Some("review") => decode(event_type, version, data).map(AnyEvent::Review),
        Some("user") => decode(event_type, version, data).map(AnyEvent::User),
        Some("email") => decode(event_type, version, data).map(AnyEvent::Email),
        Some("provider") => decode(event_type, version, data).map(AnyEvent::Provider),
        Some("series") => decode(event_type, version, data).map(AnyEvent::Series),
        Some("schedule") => decode(event_type, version, data).map(AnyEvent::Schedule),
        _ => Err(CodecError::UnknownType(event_type.to_owned())),
    }
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
