//! Provider commands: publish, change and retire listings; schedule and cancel slots. A provider
//! acts only on their own listings and slots; an admin may act on any (the actor is recorded).

use chrono::{DateTime, Utc};
use tessera_domain::listing::{
    ListingAggregate, ListingCommand, ListingDetails, ListingError, ListingState,
};
use tessera_domain::policy::CancellationPolicy;
use tessera_domain::slot::{Slot, SlotAggregate, SlotCommand, SlotError, SlotState};
use tessera_domain::values::{ListingId, Money, SlotId, UserId, derived_id};
use uuid::Uuid;

use crate::error::CommandError;
use crate::handler::{CommandContext, Executed, execute, load, stream_of};
use tessera_log::store::EventStore;

/// Who is acting on a listing or slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acting {
    /// A provider: only on their own.
    Provider(UserId),
    /// An admin: on anyone's.
    Admin,
}

impl Acting {
    fn may_change(self, owner: UserId, what: &'static str) -> Result<(), CommandError> {
        match self {
            Acting::Admin => Ok(()),
            Acting::Provider(p) if p == owner => Ok(()),
            Acting::Provider(_) => Err(CommandError::NotYours { what }),
        }
    }
}

/// A provider's change to one of their listings.
#[derive(Debug, Clone)]
pub enum ListingChange {
    Update(ListingDetails),
    Reprice(Money),
    ChangePolicy(CancellationPolicy),
    Retire(String),
    /// Whether tickets are scanned at the door (no-shows).
    TicketScanning(bool),
}

/// Publishes a new listing owned by `provider`. The listing id derives from the command id, so
/// a retried request publishes nothing twice.
pub async fn publish_listing(
    store: &dyn EventStore,
    provider: UserId,
    details: ListingDetails,
    base_price: Money,
    policy: CancellationPolicy,
    ctx: &CommandContext,
) -> Result<(ListingId, Executed), CommandError> {
    let id = ListingId(derived_id(ctx.command_id, b"listing"));
    let executed = execute::<ListingAggregate>(
        store,
        stream_of::<ListingAggregate>(id),
        &ListingCommand::Publish {
            id,
            provider_id: provider,
            details,
            base_price,
            policy,
        },
        ctx,
    )
    .await?;
    Ok((id, executed))
}

async fn listing_owner(
    store: &dyn EventStore,
    listing: ListingId,
) -> Result<(UserId, Money), CommandError> {
    let loaded =
        load::<ListingAggregate>(store, stream_of::<ListingAggregate>(listing), Uuid::nil())
            .await?;
    match loaded.state {
        ListingState::Published(l) => Ok((l.provider_id, l.base_price)),
        ListingState::New => Err(CommandError::NotFound {
            what: "listing",
            id: listing.to_string(),
        }),
    }
}

/// Changes a listing (details, price, policy) or retires it.
pub async fn change_listing(
    store: &dyn EventStore,
    acting: Acting,
    listing: ListingId,
    change: ListingChange,
    ctx: &CommandContext,
) -> Result<Executed, CommandError> {
    let (owner, _) = listing_owner(store, listing).await?;
    acting.may_change(owner, "listing")?;
    let command = match change {
        ListingChange::Update(details) => ListingCommand::Update { details },
        ListingChange::Reprice(base_price) => ListingCommand::Reprice { base_price },
        ListingChange::ChangePolicy(policy) => ListingCommand::ChangePolicy { policy },
        ListingChange::Retire(reason) => ListingCommand::Retire { reason },
        ListingChange::TicketScanning(scans_tickets) => {
            ListingCommand::SetTicketScanning { scans_tickets }
        }
    };
    execute::<ListingAggregate>(store, stream_of::<ListingAggregate>(listing), &command, ctx).await
}

/// Schedules a slot of a listing; without a price, the listing's base price applies.
#[allow(clippy::too_many_arguments)]
pub async fn schedule_slot(
    store: &dyn EventStore,
    acting: Acting,
    listing: ListingId,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    capacity: u32,
    price_per_seat: Option<Money>,
    ctx: &CommandContext,
) -> Result<(SlotId, Executed), CommandError> {
    let loaded =
        load::<ListingAggregate>(store, stream_of::<ListingAggregate>(listing), Uuid::nil())
            .await?;
    let ListingState::Published(l) = loaded.state else {
        return Err(CommandError::NotFound {
            what: "listing",
            id: listing.to_string(),
        });
    };
    acting.may_change(l.provider_id, "listing")?;
    if l.retired {
        return Err(ListingError::Retired.into());
    }
    if starts_at <= ctx.now {
        return Err(SlotError::InvalidTimes.into());
    }
    let price = price_per_seat.unwrap_or(l.base_price);
    if price.currency != l.base_price.currency {
        return Err(ListingError::Invalid("a slot is priced in its listing's currency").into());
    }
    let id = SlotId(derived_id(ctx.command_id, b"slot"));
    let executed = execute::<SlotAggregate>(
        store,
        stream_of::<SlotAggregate>(id),
        &SlotCommand::Schedule {
            id,
            listing_id: listing,
            provider_id: l.provider_id,
            starts_at,
            ends_at,
            capacity,
            price_per_seat: price,
        },
        ctx,
    )
    .await?;
    Ok((id, executed))
}

/// A slot as its stream says now (its provider, times, capacity, price and holds).
pub async fn current_slot(store: &dyn EventStore, slot: SlotId) -> Result<Slot, CommandError> {
    let loaded =
        load::<SlotAggregate>(store, stream_of::<SlotAggregate>(slot), Uuid::nil()).await?;
    match loaded.state {
        SlotState::Scheduled(s) => Ok(s),
        SlotState::New => Err(CommandError::NotFound {
            what: "slot",
            id: slot.to_string(),
        }),
    }
}

/// Whether `acting` may see or change a slot (or listing) owned by `owner`.
pub fn may_act_on(acting: Acting, owner: UserId, what: &'static str) -> Result<(), CommandError> {
    acting.may_change(owner, what)
}

/// A provider's change to one of their slots before it starts.
#[derive(Debug, Clone, Copy)]
pub enum SlotChange {
    /// Never below the seats held and confirmed.
    Capacity(u32),
    /// For bookings placed from now on; placed bookings keep their price.
    Price(Money),
}

/// Changes a slot's capacity or price; refused once the slot has started or when cancelled.
pub async fn change_slot(
    store: &dyn EventStore,
    acting: Acting,
    slot: SlotId,
    change: SlotChange,
    ctx: &CommandContext,
) -> Result<Executed, CommandError> {
    let s = current_slot(store, slot).await?;
    acting.may_change(s.provider_id, "slot")?;
    if ctx.now >= s.starts_at {
        return Err(SlotError::Started.into());
    }
    let command = match change {
        SlotChange::Capacity(capacity) => SlotCommand::ChangeCapacity { capacity },
        SlotChange::Price(price_per_seat) => SlotCommand::Reprice { price_per_seat },
    };
    execute::<SlotAggregate>(store, stream_of::<SlotAggregate>(slot), &command, ctx).await
}

/// Cancels a slot; the payments reactor then cancels and fully refunds its bookings.
pub async fn cancel_slot(
    store: &dyn EventStore,
    acting: Acting,
    slot: SlotId,
    reason: &str,
    ctx: &CommandContext,
) -> Result<Executed, CommandError> {
    if reason.trim().is_empty() {
        return Err(CommandError::ReasonRequired);
    }
    let loaded =
        load::<SlotAggregate>(store, stream_of::<SlotAggregate>(slot), Uuid::nil()).await?;
    let SlotState::Scheduled(s) = loaded.state else {
        return Err(CommandError::NotFound {
            what: "slot",
            id: slot.to_string(),
        });
    };
    acting.may_change(s.provider_id, "slot")?;
    execute::<SlotAggregate>(
        store,
        stream_of::<SlotAggregate>(slot),
        &SlotCommand::Cancel {
            reason: reason.to_owned(),
        },
        ctx,
    )
    .await
}
