//! Listings: travel packages (with itinerary days) and local experiences, published by a
//! provider, with a base price and a cancellation policy.

use serde::{Deserialize, Serialize};

use crate::aggregate::Aggregate;
use crate::policy::CancellationPolicy;
use crate::values::{ListingId, Money, UserId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListingKind {
    Package,
    Experience,
}

/// A place on the map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Destination {
    pub name: String,
    pub country: String,
    pub lat: f64,
    pub lon: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItineraryDay {
    pub day: u16,
    pub title: String,
    pub description: String,
}

/// What a customer reads about a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListingDetails {
    pub kind: ListingKind,
    pub title: String,
    pub description: String,
    pub destination: Destination,
    pub category: String,
    pub duration_minutes: u32,
    pub includes: Vec<String>,
    /// Packages only.
    pub itinerary: Vec<ItineraryDay>,
    /// The tax rate included in the price, in basis points (1900: 19 %); v2 of the listing
    /// events. Snapshotted into each booking when placed and stated on its receipt.
    pub tax_rate_bp: u32,
}

/// The highest tax rate a listing may state: 50 %.
pub const MAX_TAX_RATE_BP: u32 = 5_000;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ListingError {
    #[error("the listing is already published")]
    AlreadyPublished,
    #[error("the listing does not exist")]
    NotPublished,
    #[error("the listing is retired")]
    Retired,
    #[error("invalid listing: {0}")]
    Invalid(&'static str),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listing {
    pub id: ListingId,
    pub provider_id: UserId,
    pub details: ListingDetails,
    pub base_price: Money,
    pub policy: CancellationPolicy,
    pub retired: bool,
    /// Tickets are scanned at the door: after the slot ends, a booking none of whose tickets
    /// was checked in is a no-show instead of completed.
    #[serde(default)]
    pub scans_tickets: bool,
}

/// One value per aggregate instance, so the size gap between variants costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub enum ListingState {
    #[default]
    New,
    Published(Listing),
}

#[derive(Debug, Clone)]
pub enum ListingCommand {
    Publish {
        id: ListingId,
        provider_id: UserId,
        details: ListingDetails,
        base_price: Money,
        policy: CancellationPolicy,
    },
    Update {
        details: ListingDetails,
    },
    Reprice {
        base_price: Money,
    },
    ChangePolicy {
        policy: CancellationPolicy,
    },
    Retire {
        reason: String,
    },
    /// Whether tickets are scanned at the door (see [`Listing::scans_tickets`]).
    SetTicketScanning {
        scans_tickets: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ListingEvent {
    ListingPublished {
        listing_id: ListingId,
        provider_id: UserId,
        details: ListingDetails,
        base_price: Money,
        policy: CancellationPolicy,
    },
    ListingUpdated {
        listing_id: ListingId,
        details: ListingDetails,
    },
    ListingRepriced {
        listing_id: ListingId,
        base_price: Money,
    },
    CancellationPolicyChanged {
        listing_id: ListingId,
        policy: CancellationPolicy,
    },
    ListingRetired {
        listing_id: ListingId,
        reason: String,
    },
    TicketScanningSet {
        listing_id: ListingId,
        scans_tickets: bool,
    },
}

fn validate(d: &ListingDetails) -> Result<(), ListingError> {
    let bad = |why| Err(ListingError::Invalid(why));
    if d.title.trim().is_empty() || d.title.chars().count() > 200 {
        return bad("title must have 1 to 200 characters");
    }
    if d.description.chars().count() > 20_000 {
        return bad("description is longer than 20,000 characters");
    }
    if d.category.trim().is_empty() {
        return bad("category is required");
    }
    if !(-90.0..=90.0).contains(&d.destination.lat)
        || !(-180.0..=180.0).contains(&d.destination.lon)
    {
        return bad("coordinates are out of range");
    }
    if d.destination.name.trim().is_empty() {
        return bad("destination name is required");
    }
    if d.duration_minutes == 0 {
        return bad("duration must be positive");
    }
    if d.tax_rate_bp > MAX_TAX_RATE_BP {
        return bad("tax rate must be between 0 and 5000 basis points");
    }
    if d.kind == ListingKind::Experience && !d.itinerary.is_empty() {
        return bad("only packages have itinerary days");
    }
    if d.itinerary
        .iter()
        .enumerate()
        .any(|(i, day)| usize::from(day.day) != i + 1)
    {
        return bad("itinerary days must be numbered 1, 2, 3, …");
    }
    Ok(())
}

/// The listing aggregate.
#[derive(Debug)]
pub struct ListingAggregate;

impl Aggregate for ListingAggregate {
    type State = ListingState;
    type Command = ListingCommand;
    type Event = ListingEvent;
    type Error = ListingError;
    const CATEGORY: &'static str = "listing";

    fn decide(
        state: &ListingState,
        command: &ListingCommand,
    ) -> Result<Vec<ListingEvent>, ListingError> {
        let listing = match (state, command) {
            (
                ListingState::New,
                ListingCommand::Publish {
                    id,
                    provider_id,
                    details,
                    base_price,
                    policy,
                },
            ) => {
                validate(details)?;
                return Ok(vec![ListingEvent::ListingPublished {
                    listing_id: *id,
                    provider_id: *provider_id,
                    details: details.clone(),
                    base_price: *base_price,
                    policy: policy.clone(),
                }]);
            }
            (ListingState::Published(_), ListingCommand::Publish { .. }) => {
                return Err(ListingError::AlreadyPublished);
            }
            (ListingState::New, _) => return Err(ListingError::NotPublished),
            (ListingState::Published(l), _) if l.retired => return Err(ListingError::Retired),
            (ListingState::Published(l), _) => l,
        };
        let listing_id = listing.id;
        Ok(vec![match command {
            ListingCommand::Publish { .. } => return Err(ListingError::AlreadyPublished),
            ListingCommand::Update { details } => {
                validate(details)?;
                if details.kind != listing.details.kind {
                    return Err(ListingError::Invalid("the kind of a listing cannot change"));
                }
                ListingEvent::ListingUpdated {
                    listing_id,
                    details: details.clone(),
                }
            }
            ListingCommand::Reprice { base_price } => {
                if base_price.currency != listing.base_price.currency {
                    return Err(ListingError::Invalid(
                        "the currency of a listing cannot change",
                    ));
                }
                ListingEvent::ListingRepriced {
                    listing_id,
                    base_price: *base_price,
                }
            }
            ListingCommand::ChangePolicy { policy } => ListingEvent::CancellationPolicyChanged {
                listing_id,
                policy: policy.clone(),
            },
            ListingCommand::Retire { reason } => ListingEvent::ListingRetired {
                listing_id,
                reason: reason.clone(),
            },
            ListingCommand::SetTicketScanning { scans_tickets } => {
                ListingEvent::TicketScanningSet {
                    listing_id,
                    scans_tickets: *scans_tickets,
                }
            }
        }])
    }

    fn evolve(state: ListingState, event: &ListingEvent) -> ListingState {
        match (state, event) {
            (
                ListingState::New,
                ListingEvent::ListingPublished {
                    listing_id,
                    provider_id,
                    details,
                    base_price,
                    policy,
                },
            ) => ListingState::Published(Listing {
                id: *listing_id,
                provider_id: *provider_id,
                details: details.clone(),
                base_price: *base_price,
                policy: policy.clone(),
                retired: false,
                scans_tickets: false,
            }),
            (ListingState::Published(mut l), e) => {
                match e {
                    ListingEvent::ListingPublished { .. } => {}
                    ListingEvent::ListingUpdated { details, .. } => l.details = details.clone(),
                    ListingEvent::ListingRepriced { base_price, .. } => l.base_price = *base_price,
                    ListingEvent::CancellationPolicyChanged { policy, .. } => {
                        l.policy = policy.clone()
                    }
                    ListingEvent::ListingRetired { .. } => l.retired = true,
                    ListingEvent::TicketScanningSet { scans_tickets, .. } => {
                        l.scans_tickets = *scans_tickets
                    }
                }
                ListingState::Published(l)
            }
            (state, _) => state,
        }
    }
}
