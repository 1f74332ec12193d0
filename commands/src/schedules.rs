//! Recurring schedules: define one on a listing, generate its slots (again and again, creating
//! nothing twice), change it (future unbooked slots follow, booked ones stay), take single dates
//! out and put them back, end it.
//!
//! Every slot is its own aggregate, so a schedule's change cannot be one atomic append. Instead
//! each future slot is withdrawn or revised by a command the slot itself decides *only if no
//! booking holds seats on it*: a customer who books a slot while its schedule changes keeps
//! the slot as it was, and the schedule records it as kept. Every step's command id derives
//! from the request's, so a retried request replays what already happened and does the rest.

use std::collections::BTreeSet;

use chrono::{NaiveDate, TimeDelta};
use tessera_domain::listing::{ListingAggregate, ListingError, ListingState};
use tessera_domain::schedule::{
    GeneratedSlot, MAX_PER_GENERATION, Recurrence, Schedule, ScheduleAggregate, ScheduleCommand,
    ScheduleError, ScheduleState, SlotTemplate,
};
use tessera_domain::slot::{SlotAggregate, SlotCommand, SlotError};
use tessera_domain::values::{ListingId, Money, ScheduleId, SlotId, derived_id};
use tessera_log::store::{EventStore, Position};
use uuid::Uuid;

use crate::catalog::{Acting, may_act_on};
use crate::error::CommandError;
use crate::handler::{CommandContext, Executed, execute, load, stream_of};

/// What a schedule's new slots are like, as a provider gives it (the price defaults to the
/// listing's base price).
#[derive(Debug, Clone)]
pub struct ScheduleSpec {
    pub recurrence: Recurrence,
    pub duration_minutes: u32,
    pub capacity: u32,
    pub price_per_seat: Option<Money>,
    pub horizon_days: u32,
}

/// What a generation did.
#[derive(Debug, Clone, Default)]
pub struct Generated {
    /// Slots created by this run (none when everything ahead already exists).
    pub created: Vec<GeneratedSlot>,
    /// Log position after the run's last append (the start of the log when nothing was).
    pub position: Position,
}

/// What a change did to the schedule's future slots.
#[derive(Debug, Clone, Default)]
pub struct Changed {
    /// Unbooked slots cancelled because the new rule has no such start (or another length).
    pub withdrawn: Vec<SlotId>,
    /// Unbooked slots given the new capacity and price.
    pub revised: Vec<SlotId>,
    /// Booked slots left as they were.
    pub kept_booked: Vec<SlotId>,
    pub generated: Generated,
    pub position: Position,
}

/// The current state of a schedule.
pub async fn current_schedule(
    store: &dyn EventStore,
    id: ScheduleId,
) -> Result<Schedule, CommandError> {
    let loaded =
        load::<ScheduleAggregate>(store, stream_of::<ScheduleAggregate>(id), Uuid::nil()).await?;
    match loaded.state {
        ScheduleState::Defined(s) => Ok(*s),
        ScheduleState::New => Err(CommandError::NotFound {
            what: "schedule",
            id: id.to_string(),
        }),
    }
}

fn step(ctx: &CommandContext, what: impl AsRef<[u8]>) -> CommandContext {
    let mut c = CommandContext::new(
        derived_id(ctx.command_id, what.as_ref()),
        ctx.actor.clone(),
        ctx.now,
    );
    c.correlation_id = ctx.correlation_id;
    c.reason = ctx.reason.clone();
    c
}

fn later(a: Position, b: Position) -> Position {
    if b.0 > a.0 { b } else { a }
}

async fn published_listing(
    store: &dyn EventStore,
    listing: ListingId,
) -> Result<tessera_domain::listing::Listing, CommandError> {
    let loaded =
        load::<ListingAggregate>(store, stream_of::<ListingAggregate>(listing), Uuid::nil())
            .await?;
    match loaded.state {
        ListingState::Published(l) => Ok(l),
        ListingState::New => Err(CommandError::NotFound {
            what: "listing",
            id: listing.to_string(),
        }),
    }
}

/// Defines a schedule on a listing and generates its slots up to its horizon. The schedule's
/// id derives from the command id.
pub async fn define(
    store: &dyn EventStore,
    acting: Acting,
    listing: ListingId,
    spec: ScheduleSpec,
    ctx: &CommandContext,
) -> Result<(ScheduleId, Changed), CommandError> {
    let l = published_listing(store, listing).await?;
    may_act_on(acting, l.provider_id, "listing")?;
    if l.retired {
        return Err(ListingError::Retired.into());
    }
    let price = spec.price_per_seat.unwrap_or(l.base_price);
    if price.currency != l.base_price.currency {
        return Err(ListingError::Invalid("a slot is priced in its listing's currency").into());
    }
    let id = ScheduleId(derived_id(ctx.command_id, b"schedule"));
    let defined = execute::<ScheduleAggregate>(
        store,
        stream_of::<ScheduleAggregate>(id),
        &ScheduleCommand::Define {
            id,
            listing_id: listing,
            provider_id: l.provider_id,
            recurrence: spec.recurrence,
            template: SlotTemplate {
                duration_minutes: spec.duration_minutes,
                capacity: spec.capacity,
                price_per_seat: price,
            },
            horizon_days: spec.horizon_days,
        },
        ctx,
    )
    .await?;
    let generated = generate(store, id, &step(ctx, "generate")).await?;
    let position = later(defined.position, generated.position);
    Ok((
        id,
        Changed {
            generated,
            position,
            ..Changed::default()
        },
    ))
}

/// Creates the schedule's missing slots from now to its horizon (at most
/// [`MAX_PER_GENERATION`] per run) and records them. Running it again creates nothing twice.
/// An ended schedule, or one whose listing is retired, generates nothing.
pub async fn generate(
    store: &dyn EventStore,
    id: ScheduleId,
    ctx: &CommandContext,
) -> Result<Generated, CommandError> {
    let s = current_schedule(store, id).await?;
    if s.ended {
        return Ok(Generated::default());
    }
    let l = published_listing(store, s.listing_id).await?;
    if l.retired {
        return Ok(Generated::default());
    }
    let horizon = ctx.now + TimeDelta::days(i64::from(s.horizon_days));
    let starts = s
        .recurrence
        .occurrences(ctx.now, horizon, MAX_PER_GENERATION)?;
    let mut created = Vec::new();
    let mut position = Position::START;
    for start in starts {
        if s.slots.contains_key(&start) || s.exceptions.contains(&s.recurrence.local_date(start)) {
            continue;
        }
        let slot_id = s.slot_id_at(start);
        // The slot's command id derives from the slot: generating it again is a replay.
        let mut slot_ctx = step(ctx, slot_id.0.as_bytes());
        slot_ctx.command_id = derived_id(slot_id.0, b"generated");
        let done = execute::<SlotAggregate>(
            store,
            stream_of::<SlotAggregate>(slot_id),
            &SlotCommand::Schedule {
                id: slot_id,
                listing_id: s.listing_id,
                provider_id: s.provider_id,
                starts_at: start,
                ends_at: start + TimeDelta::minutes(i64::from(s.template.duration_minutes)),
                capacity: s.template.capacity,
                price_per_seat: s.template.price_per_seat,
            },
            &slot_ctx,
        )
        .await;
        match done {
            Ok(e) => position = later(position, e.position),
            Err(CommandError::Slot(SlotError::AlreadyScheduled)) => {}
            Err(e) => return Err(e),
        }
        created.push(GeneratedSlot {
            slot_id,
            starts_at: start,
        });
    }
    if !created.is_empty() {
        let recorded = execute::<ScheduleAggregate>(
            store,
            stream_of::<ScheduleAggregate>(id),
            &ScheduleCommand::RecordGenerated {
                slots: created.clone(),
            },
            &step(ctx, "record"),
        )
        .await?;
        position = later(position, recorded.position);
    }
    Ok(Generated { created, position })
}

/// What happened to one of the schedule's future slots.
enum Outcome {
    Done,
    Booked,
    Gone,
}

async fn on_slot(
    store: &dyn EventStore,
    slot: SlotId,
    command: SlotCommand,
    ctx: &CommandContext,
    position: &mut Position,
) -> Result<Outcome, CommandError> {
    match execute::<SlotAggregate>(store, stream_of::<SlotAggregate>(slot), &command, ctx).await {
        Ok(e) => {
            *position = later(*position, e.position);
            Ok(Outcome::Done)
        }
        Err(CommandError::Slot(SlotError::HasBookings | SlotError::Started)) => Ok(Outcome::Booked),
        Err(CommandError::Slot(SlotError::Cancelled | SlotError::NotScheduled)) => {
            Ok(Outcome::Gone)
        }
        Err(e) => Err(e),
    }
}

async fn owned(
    store: &dyn EventStore,
    acting: Acting,
    id: ScheduleId,
) -> Result<Schedule, CommandError> {
    let s = current_schedule(store, id).await?;
    may_act_on(acting, s.provider_id, "schedule")?;
    if s.ended {
        return Err(ScheduleError::Ended.into());
    }
    Ok(s)
}

/// Changes a schedule's rule, slot template or horizon. Future slots nobody booked follow:
/// those at a start the new rule keeps (with the same length) get the new capacity and price,
/// the others are withdrawn; booked slots stay as they are. Then the new rule's missing slots
/// are generated.
pub async fn change(
    store: &dyn EventStore,
    acting: Acting,
    id: ScheduleId,
    spec: ScheduleSpec,
    ctx: &CommandContext,
) -> Result<Changed, CommandError> {
    let s = owned(store, acting, id).await?;
    let template = SlotTemplate {
        duration_minutes: spec.duration_minutes,
        capacity: spec.capacity,
        price_per_seat: spec.price_per_seat.unwrap_or(s.template.price_per_seat),
    };
    tessera_domain::schedule::check(&spec.recurrence, &template, spec.horizon_days)?;
    if template.price_per_seat.currency != s.template.price_per_seat.currency {
        return Err(ScheduleError::Invalid("slots are priced in the listing's currency").into());
    }
    let horizon = ctx.now + TimeDelta::days(i64::from(spec.horizon_days));
    let next: BTreeSet<_> = spec
        .recurrence
        .occurrences(ctx.now, horizon, MAX_PER_GENERATION)?
        .into_iter()
        .collect();
    let mut out = Changed::default();
    let mut position = Position::START;
    let mut kept = Vec::new();
    for (&start, &slot) in s.slots.range(ctx.now..) {
        let stays = next.contains(&start)
            && template.duration_minutes == s.template.duration_minutes
            && !s.exceptions.contains(&spec.recurrence.local_date(start));
        let command = if stays {
            SlotCommand::Revise {
                capacity: template.capacity,
                price_per_seat: template.price_per_seat,
            }
        } else {
            SlotCommand::Withdraw {
                reason: "its schedule changed".into(),
            }
        };
        let slot_ctx = step(ctx, format!("slot:{slot}"));
        match on_slot(store, slot, command, &slot_ctx, &mut position).await? {
            Outcome::Done if stays => {
                out.revised.push(slot);
                kept.push(GeneratedSlot {
                    slot_id: slot,
                    starts_at: start,
                });
            }
            Outcome::Done | Outcome::Gone => out.withdrawn.push(slot),
            Outcome::Booked => {
                out.kept_booked.push(slot);
                kept.push(GeneratedSlot {
                    slot_id: slot,
                    starts_at: start,
                });
            }
        }
    }
    let changed = execute::<ScheduleAggregate>(
        store,
        stream_of::<ScheduleAggregate>(id),
        &ScheduleCommand::Change {
            recurrence: spec.recurrence,
            template,
            horizon_days: spec.horizon_days,
            kept,
        },
        ctx,
    )
    .await?;
    position = later(position, changed.position);
    out.generated = generate(store, id, &step(ctx, "generate")).await?;
    out.position = later(position, out.generated.position);
    Ok(out)
}

/// Takes one local date out of the schedule: its slot, if generated and unbooked, is
/// withdrawn; a booked one refuses the exception (cancel that slot explicitly, which refunds
/// its bookings).
pub async fn add_exception(
    store: &dyn EventStore,
    acting: Acting,
    id: ScheduleId,
    date: NaiveDate,
    ctx: &CommandContext,
) -> Result<Executed, CommandError> {
    let s = owned(store, acting, id).await?;
    if s.exceptions.contains(&date) {
        return Err(ScheduleError::AlreadyException(date).into());
    }
    let mut position = Position::START;
    for (&start, &slot) in s.slots.range(ctx.now..) {
        if s.recurrence.local_date(start) != date {
            continue;
        }
        let command = SlotCommand::Withdraw {
            reason: format!("{date} is taken out of its schedule"),
        };
        let slot_ctx = step(ctx, format!("slot:{slot}"));
        if let Outcome::Booked = on_slot(store, slot, command, &slot_ctx, &mut position).await? {
            return Err(ScheduleError::OccurrenceBooked(date).into());
        }
    }
    let done = execute::<ScheduleAggregate>(
        store,
        stream_of::<ScheduleAggregate>(id),
        &ScheduleCommand::AddException { date },
        ctx,
    )
    .await?;
    Ok(Executed {
        position: later(position, done.position),
        replayed: done.replayed,
    })
}

/// Puts an excepted date back; its slot is generated again (under a new id).
pub async fn remove_exception(
    store: &dyn EventStore,
    acting: Acting,
    id: ScheduleId,
    date: NaiveDate,
    ctx: &CommandContext,
) -> Result<(Executed, Generated), CommandError> {
    owned(store, acting, id).await?;
    let done = execute::<ScheduleAggregate>(
        store,
        stream_of::<ScheduleAggregate>(id),
        &ScheduleCommand::RemoveException { date },
        ctx,
    )
    .await?;
    let generated = generate(store, id, &step(ctx, "generate")).await?;
    Ok((done, generated))
}

/// Ends a schedule: nothing more is generated and its future unbooked slots are withdrawn;
/// booked ones stay.
pub async fn end(
    store: &dyn EventStore,
    acting: Acting,
    id: ScheduleId,
    reason: &str,
    ctx: &CommandContext,
) -> Result<Changed, CommandError> {
    if reason.trim().is_empty() {
        return Err(CommandError::ReasonRequired);
    }
    let s = owned(store, acting, id).await?;
    let mut out = Changed::default();
    let mut position = Position::START;
    for (_, &slot) in s.slots.range(ctx.now..) {
        let command = SlotCommand::Withdraw {
            reason: format!("its schedule ended: {reason}"),
        };
        let slot_ctx = step(ctx, format!("slot:{slot}"));
        match on_slot(store, slot, command, &slot_ctx, &mut position).await? {
            Outcome::Done | Outcome::Gone => out.withdrawn.push(slot),
            Outcome::Booked => out.kept_booked.push(slot),
        }
    }
    let done = execute::<ScheduleAggregate>(
        store,
        stream_of::<ScheduleAggregate>(id),
        &ScheduleCommand::End {
            reason: reason.to_owned(),
        },
        ctx,
    )
    .await?;
    out.position = later(position, done.position);
    Ok(out)
}
