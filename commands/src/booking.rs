//! Booking commands that span aggregates. Placing a booking and holding its seats is **one
//! atomic decision**: the booking's first event and the slot's `SeatsHeld` are appended together,
//! guarded by the slot's expected version, so concurrent bookings race on the slot and the
//! loser re-decides against the new seat count. Releasing seats (expiry, cancellation) is
//! appended together with the booking's own event, so it happens exactly once.

use chrono::{DateTime, TimeDelta, Utc};
use std::sync::Mutex;
use tessera_domain::Aggregate;
use tessera_domain::booking::MoveAbandoned;
use tessera_domain::booking::{
    Booking, BookingAggregate, BookingCommand, BookingEvent, BookingStatus, Canceller,
};
use tessera_domain::listing::{ListingAggregate, ListingError, ListingState};
use tessera_domain::payment::{PaymentAggregate, PaymentCommand, PaymentError};
use tessera_domain::slot::{SlotAggregate, SlotCommand, SlotError, SlotEvent, SlotState};
use tessera_domain::values::{BookingId, Money, PaymentId, Seats, SlotId, UserId, derived_id};

use crate::gateway::{Intent, IntentRequest, PaymentGateway};
use crate::payment::{StartedPayment, lock};

use crate::error::CommandError;
use crate::handler::{
    AggregateCache, Attempt, CommandContext, Executed, Loaded, MAX_ATTEMPTS, decide_and_append,
    load, load_caught_up, load_via, replayed, stream_of, whole_if_retried, write_for,
};
use tessera_log::codec;
use tessera_log::store::{EventStore, StreamId, StreamWrite};

/// Rules of the booking process that are configuration, not code.
#[derive(Debug, Clone, Copy)]
pub struct BookingConfig {
    /// How long seats stay held while the customer pays.
    pub hold_ttl: TimeDelta,
}

impl Default for BookingConfig {
    fn default() -> Self {
        Self {
            hold_ttl: TimeDelta::minutes(15),
        }
    }
}

/// A customer's request to hold seats.
#[derive(Debug, Clone, Copy)]
pub struct PlaceBooking {
    pub booking_id: BookingId,
    pub customer_id: UserId,
    pub slot_id: SlotId,
    pub seats: Seats,
}

/// Places a booking and holds its seats on the slot, atomically.
pub async fn place_booking(
    store: &dyn EventStore,
    config: &BookingConfig,
    request: &PlaceBooking,
    ctx: &CommandContext,
) -> Result<Executed, CommandError> {
    Ok(place_booking_cached(store, None, config, request, ctx)
        .await?
        .executed)
}

/// What placing a booking did, with what the customer is told about the hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub executed: Executed,
    /// When the held seats lapse unless paid for, as recorded when the booking was placed (a
    /// replayed command answers with the recorded value, not one computed again).
    pub hold_expires_at: DateTime<Utc>,
}

/// The hold expiry recorded by `BookingPlaced` among `events`.
pub(crate) fn placed_expiry<'a>(
    events: impl IntoIterator<Item = &'a BookingEvent>,
) -> Result<DateTime<Utc>, CommandError> {
    events
        .into_iter()
        .find_map(|e| match e {
            BookingEvent::BookingPlaced {
                hold_expires_at, ..
            } => Some(*hold_expires_at),
            _ => None,
        })
        .ok_or_else(|| CommandError::Codec("a placement without BookingPlaced".into()))
}

/// [`place_booking`], deciding first on the slot and listing states in `cache` (the hot path of
/// a busy slot: no reads at all). That attempt is optimistic: its append is guarded by the
/// cached versions of the slot and the listing, and a new booking stream. If anything fails
/// (a stream moved, a retried command, a refusal decided on a stale state), the command is
/// decided again on what the store holds, exactly as without a cache.
pub async fn place_booking_cached(
    store: &dyn EventStore,
    cache: Option<&AggregateCache>,
    config: &BookingConfig,
    request: &PlaceBooking,
    ctx: &CommandContext,
) -> Result<Placed, CommandError> {
    let booking_stream = stream_of::<BookingAggregate>(request.booking_id);
    let slot_stream = stream_of::<SlotAggregate>(request.slot_id);
    let mut optimistic = cache.is_some();
    for _ in 0..MAX_ATTEMPTS {
        let decided = decide_placement(
            store,
            cache,
            optimistic,
            config,
            request,
            ctx,
            &booking_stream,
            &slot_stream,
        )
        .await;
        let (writes, slot, slot_events, hold_expires_at) = match decided {
            Ok(Placement::Replayed(executed, hold_expires_at)) => {
                return Ok(Placed {
                    executed,
                    hold_expires_at,
                });
            }
            Ok(Placement::Append {
                writes,
                slot,
                slot_events,
                hold_expires_at,
            }) => (writes, slot, slot_events, hold_expires_at),
            // A refusal may come from a stale cached state: only the store's state decides.
            Err(_) if optimistic => {
                optimistic = false;
                continue;
            }
            Err(e) => return Err(e),
        };
        match store.append(writes).await {
            Ok(result) => {
                if let Some(cache) = cache {
                    cache.advance(&slot, &slot_events, &result);
                }
                return Ok(Placed {
                    executed: Executed {
                        position: result.last_position,
                        replayed: false,
                    },
                    hold_expires_at,
                });
            }
            Err(e) if e.is_conflict() => {
                if let Some(cache) = cache {
                    cache.forget(&slot_stream);
                }
                optimistic = false;
            }
            // An optimistic attempt may also be a retry of an earlier one that did write: the
            // store refuses the same event ids with other content; the store's state decides.
            Err(_) if optimistic => optimistic = false,
            Err(e) => return Err(e.into()),
        }
    }
    Err(CommandError::Contention {
        attempts: MAX_ATTEMPTS,
    })
}

/// What one placement attempt decided.
enum Placement {
    Replayed(Executed, DateTime<Utc>),
    Append {
        writes: Vec<StreamWrite>,
        slot: Box<Loaded<SlotAggregate>>,
        slot_events: Vec<SlotEvent>,
        hold_expires_at: DateTime<Utc>,
    },
}

#[allow(clippy::too_many_arguments)] // One attempt of `place_booking_cached`, split out to read.
async fn decide_placement(
    store: &dyn EventStore,
    cache: Option<&AggregateCache>,
    optimistic: bool,
    config: &BookingConfig,
    request: &PlaceBooking,
    ctx: &CommandContext,
    booking_stream: &StreamId,
    slot_stream: &StreamId,
) -> Result<Placement, CommandError> {
    // Optimistically the booking is new (its id derives from a fresh command id); a retry
    // whose first attempt wrote it fails the append's no-stream check.
    let booking = if optimistic {
        Loaded::<BookingAggregate>::new_stream(booking_stream.clone())
    } else {
        load::<BookingAggregate>(store, booking_stream.clone(), ctx.command_id).await?
    };
    let slot = load_via::<SlotAggregate>(
        store,
        cache,
        optimistic,
        slot_stream.clone(),
        ctx.command_id,
    )
    .await?;
    let retried = !booking.caused_by_command.is_empty();
    let slot = whole_if_retried(store, slot, retried, ctx.command_id).await?;
    if let Some(done) = replayed(&[&booking.caused_by_command, &slot.caused_by_command]) {
        let placed = booking
            .caused_by_command
            .iter()
            .map(|e| codec::decode::<BookingEvent>(&e.event_type, e.schema_version, &e.data))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CommandError::Codec(e.to_string()))?;
        return Ok(Placement::Replayed(done, placed_expiry(&placed)?));
    }
    let SlotState::Scheduled(s) = &slot.state else {
        return Err(CommandError::NotFound {
            what: "slot",
            id: request.slot_id.to_string(),
        });
    };
    let listing = load_via::<ListingAggregate>(
        store,
        cache,
        optimistic,
        stream_of::<ListingAggregate>(s.listing_id),
        ctx.command_id,
    )
    .await?;
    let ListingState::Published(l) = &listing.state else {
        return Err(CommandError::NotFound {
            what: "listing",
            id: s.listing_id.to_string(),
        });
    };
    if l.retired {
        return Err(ListingError::Retired.into());
    }
    let commission_bp = provider_commission(store, cache, s.provider_id).await?;
    let (booking_events, slot_events) = decide_hold(
        &booking.state,
        &slot.state,
        s,
        l,
        commission_bp,
        request,
        ctx.now,
        config.hold_ttl,
    )?;
    let hold_expires_at = placed_expiry(&booking_events)?;
    Ok(Placement::Append {
        hold_expires_at,
        writes: vec![
            write_for(&booking, &booking_events, ctx)?,
            write_for(&slot, &slot_events, ctx)?,
            // The listing decided too (published, not retired, its policy): a hold never
            // commits against a listing that changed in between.
            listing.guard(),
        ],
        slot: Box::new(slot),
        slot_events,
    })
}

/// The booking's and the slot's events of placing `request` on `slot_state` (the slot `s` of the
/// published listing `l`, whose provider takes `commission_bp`): one decision, shared by the
/// handler and the on-sale batches.
#[allow(clippy::too_many_arguments)] // The decision's inputs, each loaded by its caller.
pub(crate) fn decide_hold(
    booking_state: &<BookingAggregate as Aggregate>::State,
    slot_state: &SlotState,
    s: &tessera_domain::slot::Slot,
    l: &tessera_domain::listing::Listing,
    commission_bp: u32,
    request: &PlaceBooking,
    now: DateTime<Utc>,
    hold_ttl: TimeDelta,
) -> Result<(Vec<BookingEvent>, Vec<SlotEvent>), CommandError> {
    let booking_events = BookingAggregate::decide(
        booking_state,
        &BookingCommand::Place {
            id: request.booking_id,
            customer_id: request.customer_id,
            listing_id: s.listing_id,
            slot_id: request.slot_id,
            provider_id: s.provider_id,
            commission_bp,
            tax_rate_bp: l.details.tax_rate_bp,
            seats: request.seats,
            price_per_seat: s.price_per_seat,
            policy: l.policy.clone(),
            slot_starts_at: s.starts_at,
            slot_ends_at: s.ends_at,
            now,
            hold_ttl,
        },
    )?;
    let slot_events = SlotAggregate::decide(
        slot_state,
        &SlotCommand::HoldSeats {
            booking_id: request.booking_id,
            seats: request.seats,
            now,
            allow_overbook: false,
        },
    )?;
    Ok((booking_events, slot_events))
}

/// The commission a booking of `provider`'s placed now snapshots: the provider's stream caught
/// up (a rate set a moment ago applies to the next placement, in any process).
pub(crate) async fn provider_commission(
    store: &dyn EventStore,
    cache: Option<&AggregateCache>,
    provider: tessera_domain::values::UserId,
) -> Result<u32, CommandError> {
    let provider = load_caught_up::<tessera_domain::provider::ProviderAggregate>(
        store,
        cache,
        stream_of::<tessera_domain::provider::ProviderAggregate>(provider),
        uuid::Uuid::nil(),
    )
    .await?;
    Ok(provider.state.commission_bp())
}

/// What cancelling now would refund, without cancelling.
pub async fn cancellation_quote(
    store: &dyn EventStore,
    booking_id: BookingId,
    by: Canceller,
    waive_fee: bool,
    ctx: &CommandContext,
) -> Result<Money, CommandError> {
    let (_, b) = load_booking(store, booking_id, ctx.command_id).await?;
    Ok(b.cancellation_quote(by, ctx.now, waive_fee)?)
}

/// Cancels a booking (customer, provider or admin) and gives its seats back.
pub async fn cancel_booking(
    store: &dyn EventStore,
    booking_id: BookingId,
    by: Canceller,
    waive_fee: bool,
    ctx: &CommandContext,
) -> Result<Executed, CommandError> {
    cancel_booking_cached(store, None, booking_id, by, waive_fee, ctx).await
}

/// [`cancel_booking`], with the slot's state caught up from `cache` (see [`load_caught_up`]).
pub async fn cancel_booking_cached(
    store: &dyn EventStore,
    cache: Option<&AggregateCache>,
    booking_id: BookingId,
    by: Canceller,
    waive_fee: bool,
    ctx: &CommandContext,
) -> Result<Executed, CommandError> {
    let command = BookingCommand::Cancel {
        by,
        now: ctx.now,
        reason: ctx.reason.clone(),
        waive_fee,
    };
    change_and_release(store, cache, booking_id, &command, ctx).await
}

/// Expires a booking whose hold lapsed and gives its seats back.
pub async fn expire_booking(
    store: &dyn EventStore,
    booking_id: BookingId,
    ctx: &CommandContext,
) -> Result<Executed, CommandError> {
    expire_booking_cached(store, None, booking_id, ctx).await
}

/// [`expire_booking`], with the slot's state caught up from `cache` (see [`load_caught_up`]).
pub async fn expire_booking_cached(
    store: &dyn EventStore,
    cache: Option<&AggregateCache>,
    booking_id: BookingId,
    ctx: &CommandContext,
) -> Result<Executed, CommandError> {
    change_and_release(
        store,
        cache,
        booking_id,
        &BookingCommand::Expire { now: ctx.now },
        ctx,
    )
    .await
}

/// A booking's current state (replayed from its stream) and the log position of its last event.
pub async fn current_booking(
    store: &dyn EventStore,
    booking_id: BookingId,
) -> Result<(Booking, tessera_log::store::Position), CommandError> {
    let (loaded, booking) = load_booking(store, booking_id, uuid::Uuid::nil()).await?;
    Ok((booking, loaded.last_position))
}

/// Loads a booking that must exist (else `NotFound`), with its current state.
pub(crate) async fn load_booking(
    store: &dyn EventStore,
    booking_id: BookingId,
    command_id: uuid::Uuid,
) -> Result<(Loaded<BookingAggregate>, Booking), CommandError> {
    let loaded =
        load::<BookingAggregate>(store, stream_of::<BookingAggregate>(booking_id), command_id)
            .await?;
    let booking = loaded
        .state
        .booking()
        .cloned()
        .ok_or_else(|| not_found(booking_id))?;
    Ok((loaded, booking))
}

fn not_found(booking_id: BookingId) -> CommandError {
    CommandError::NotFound {
        what: "booking",
        id: booking_id.to_string(),
    }
}

/// Applies a booking command that ends its claim on seats, and releases them on the slot in the
/// same append. A slot that no longer holds them (its cancellation released them) adds nothing.
///
/// The booking's stream is loaded whole, so a retried command is recognised there (the command
/// writes the booking's event in every case); the slot's is caught up from `cache`.
async fn change_and_release(
    store: &dyn EventStore,
    cache: Option<&AggregateCache>,
    booking_id: BookingId,
    command: &BookingCommand,
    ctx: &CommandContext,
) -> Result<Executed, CommandError> {
    let booking_stream = stream_of::<BookingAggregate>(booking_id);
    // In the slot's turn: releases queue with the holds and payments on the slot (FIFO). The
    // booking read to find its slot serves the first attempt (its version guards the append).
    let mut preloaded = None;
    let _turn = match cache {
        Some(cache) => {
            let (loaded, b) = load_booking(store, booking_id, ctx.command_id).await?;
            preloaded = Some(loaded);
            Some(cache.turn(&stream_of::<SlotAggregate>(b.slot_id)).await)
        }
        None => None,
    };
    decide_and_append(store, || {
        let booking_stream = booking_stream.clone();
        let preloaded = preloaded.take();
        async move {
            let booking = match preloaded {
                Some(booking) => booking,
                None => load::<BookingAggregate>(store, booking_stream, ctx.command_id).await?,
            };
            let b = booking
                .state
                .booking()
                .ok_or_else(|| not_found(booking_id))?;
            let slot = load_caught_up::<SlotAggregate>(
                store,
                cache,
                stream_of::<SlotAggregate>(b.slot_id),
                ctx.command_id,
            )
            .await?;
            let retried = !booking.caused_by_command.is_empty();
            let slot = whole_if_retried(store, slot, retried, ctx.command_id).await?;
            if let Some(done) = replayed(&[&booking.caused_by_command, &slot.caused_by_command]) {
                return Ok(Attempt::Replayed(done));
            }
            let holds_seats = matches!(
                b.status,
                BookingStatus::Held | BookingStatus::PaymentPending | BookingStatus::Confirmed
            );
            let events = BookingAggregate::decide(&booking.state, command)?;
            let mut writes: Vec<StreamWrite> = vec![write_for(&booking, &events, ctx)?];
            if holds_seats {
                writes.extend(release_if_held(&slot, booking_id, ctx)?);
            }
            // A move waiting for its top-up ends with the booking: its new seats go back too.
            if let Some(m) = b.pending_move {
                let to = load::<SlotAggregate>(
                    store,
                    stream_of::<SlotAggregate>(m.to_slot),
                    ctx.command_id,
                )
                .await?;
                writes.extend(release_if_held(&to, booking_id, ctx)?);
            }
            Ok(Attempt::Append(writes))
        }
    })
    .await
}

/// Completes a confirmed booking once its slot has ended.
pub async fn complete_booking(
    store: &dyn EventStore,
    booking_id: BookingId,
    ctx: &CommandContext,
) -> Result<Executed, CommandError> {
    // Where tickets are scanned, a confirmed booking none of whose tickets was checked in is
    // a no-show: no completion points, no review invitation.
    let (_, b) = load_booking(store, booking_id, ctx.command_id).await?;
    let listing = load::<ListingAggregate>(
        store,
        stream_of::<ListingAggregate>(b.listing_id),
        uuid::Uuid::nil(),
    )
    .await?;
    let scans = match &listing.state {
        ListingState::Published(l) => l.scans_tickets,
        ListingState::New => false,
    };
    let command = if scans && b.status == BookingStatus::Confirmed && b.checked_in.is_empty() {
        BookingCommand::MarkNoShow { now: ctx.now }
    } else {
        BookingCommand::Complete { now: ctx.now }
    };
    crate::handler::execute::<BookingAggregate>(
        store,
        stream_of::<BookingAggregate>(booking_id),
        &command,
        ctx,
    )
    .await
}

/// A customer reviews their completed booking (one review per booking).
pub async fn write_review(
    store: &dyn EventStore,
    booking_id: BookingId,
    author_id: UserId,
    rating: u8,
    text: &str,
    ctx: &CommandContext,
) -> Result<Executed, CommandError> {
    use tessera_domain::review::{Review, ReviewAggregate, ReviewCommand};
    let (_, b) = load_booking(store, booking_id, ctx.command_id).await?;
    if b.customer_id != author_id {
        return Err(not_found(booking_id));
    }
    if b.status != BookingStatus::Completed {
        return Err(tessera_domain::booking::BookingError::InvalidTransition {
            from: b.status,
            action: "be reviewed",
        }
        .into());
    }
    let review = Review {
        booking_id,
        listing_id: b.listing_id,
        author_id,
        rating,
        text: text.to_owned(),
    };
    crate::handler::execute::<ReviewAggregate>(
        store,
        stream_of::<ReviewAggregate>(booking_id),
        &ReviewCommand::Write(review),
        ctx,
    )
    .await
}

/// How a move to a dearer slot pays its difference: a top-up payment through `gateway`.
#[derive(Debug, Clone, Copy)]
pub struct TopUpPayer<'a> {
    pub gateway: &'a dyn PaymentGateway,
    /// Simulated gateway only (as for [`crate::payment::start_payment`]).
    pub card: Option<&'a str>,
    /// How long the new slot holds the seats while the top-up is paid.
    pub move_ttl: TimeDelta,
}

/// What a move did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Moved {
    /// The booking is on the new slot.
    Done(Executed),
    /// The new slot costs more: it holds the seats, and the move completes when the top-up
    /// payment succeeds (the payments' outcome handlers decide it).
    AwaitingPayment {
        started: StartedPayment,
        charge: Money,
        expires_at: DateTime<Utc>,
    },
}

/// Moves a confirmed booking to another slot of its listing in **one atomic append**: the
/// booking's `BookingRescheduled`, the old slot's `SeatsReleased` and the new slot's
/// `SeatsHeld` and `SeatsConfirmed`, each guarded by its stream's version (and the listing's),
/// so a move racing a placement for the new slot's last seat is decided once, on the slot.
/// A cheaper slot owes the difference back: the payments reactor refunds it.
///
/// A dearer slot needs `payer` (else `RescheduleCostsMore`): one append records
/// `BookingMoveRequested`, the new slot's `SeatsHeld` and the top-up's `PaymentIntentCreated`
/// (the intent is created at the gateway first, idempotently, keyed by the command). Its
/// success completes the move in one append ([`crate::payment::record_payment_succeeded`]);
/// its failure or the move's expiry ([`abandon_move`]) releases the held seats.
pub async fn reschedule_booking(
    store: &dyn EventStore,
    booking_id: BookingId,
    to_slot: SlotId,
    payer: Option<TopUpPayer<'_>>,
    ctx: &CommandContext,
) -> Result<Moved, CommandError> {
    let top_up = payer.map(|_| PaymentId(derived_id(ctx.command_id, b"top-up")));
    let intent: Mutex<Option<(Intent, Money, DateTime<Utc>)>> = Mutex::new(None);
    let intent_ref = &intent;
    let executed = decide_and_append(store, || async move {
        let (booking, b) = load_booking(store, booking_id, ctx.command_id).await?;
        let payment = match top_up {
            Some(id) => Some(
                load::<PaymentAggregate>(store, stream_of::<PaymentAggregate>(id), ctx.command_id)
                    .await?,
            ),
            None => None,
        };
        let mut caused: Vec<&[tessera_log::store::RecordedEvent]> =
            vec![&booking.caused_by_command];
        caused.extend(payment.iter().map(|p| p.caused_by_command.as_slice()));
        if let Some(done) = replayed(&caused) {
            // A retried dearer move answers with the intent it recorded.
            let p = payment.as_ref().and_then(|p| p.state.payment());
            if let (Some(p), Some(m)) = (p, b.pending_move.filter(|m| Some(m.payment_id) == top_up))
            {
                *lock(intent_ref) = Some((
                    Intent {
                        provider_ref: p.provider_ref.clone(),
                        client_secret: None,
                    },
                    m.charge,
                    m.expires_at,
                ));
            }
            return Ok(Attempt::Replayed(done));
        }
        let old =
            load::<SlotAggregate>(store, stream_of::<SlotAggregate>(b.slot_id), ctx.command_id)
                .await?;
        let new = load::<SlotAggregate>(store, stream_of::<SlotAggregate>(to_slot), ctx.command_id)
            .await?;
        let SlotState::Scheduled(s) = &new.state else {
            return Err(CommandError::NotFound {
                what: "slot",
                id: to_slot.to_string(),
            });
        };
        let events = BookingAggregate::decide(
            &booking.state,
            &BookingCommand::Reschedule {
                to_slot,
                to_listing: s.listing_id,
                slot_starts_at: s.starts_at,
                slot_ends_at: s.ends_at,
                price_per_seat: s.price_per_seat,
                now: ctx.now,
                top_up,
                move_ttl: payer.map_or(TimeDelta::zero(), |p| p.move_ttl),
            },
        )?;
        let listing = load::<ListingAggregate>(
            store,
            stream_of::<ListingAggregate>(b.listing_id),
            ctx.command_id,
        )
        .await?;
        if let ListingState::Published(l) = &listing.state
            && l.retired
        {
            return Err(ListingError::Retired.into());
        }
        let seats = Seats::new(b.seats).map_err(tessera_domain::booking::BookingError::from)?;
        let held = SlotAggregate::decide(
            &new.state,
            &SlotCommand::HoldSeats {
                booking_id,
                seats,
                now: ctx.now,
                allow_overbook: false,
            },
        )?;
        if let [
            BookingEvent::BookingMoveRequested {
                payment_id,
                charge,
                expires_at,
                ..
            },
        ] = events.as_slice()
            && let (Some(payer), Some(payment)) = (payer, &payment)
        {
            // Dearer: hold the new seats and start the top-up; nothing moves yet.
            crate::payment::require_confirmed_address(store, b.customer_id).await?;
            let created = payer
                .gateway
                .create_intent(&IntentRequest {
                    payment_id: *payment_id,
                    booking_id,
                    amount: *charge,
                    card: payer.card.map(str::to_owned),
                    idempotency_key: format!("{}:top-up", ctx.command_id),
                })
                .await?;
            let payment_events = PaymentAggregate::decide(
                &payment.state,
                &PaymentCommand::CreateIntent {
                    id: *payment_id,
                    booking_id,
                    customer_id: b.customer_id,
                    amount: *charge,
                    provider: payer.gateway.name().to_owned(),
                    provider_ref: created.provider_ref.clone(),
                },
            )?;
            *lock(intent_ref) = Some((created, *charge, *expires_at));
            return Ok(Attempt::Append(vec![
                write_for(&booking, &events, ctx)?,
                write_for(&new, &held, ctx)?,
                write_for(payment, &payment_events, ctx)?,
                listing.guard(),
            ]));
        }
        let holding = held.iter().fold(new.state.clone(), SlotAggregate::evolve);
        let mut new_events = held;
        new_events.extend(SlotAggregate::decide(
            &holding,
            &SlotCommand::ConfirmSeats { booking_id },
        )?);
        let mut writes = vec![
            write_for(&booking, &events, ctx)?,
            write_for(&new, &new_events, ctx)?,
            listing.guard(),
        ];
        // A slot cancelled since released its seats already: nothing to give back there.
        writes.extend(release_if_held(&old, booking_id, ctx)?);
        Ok(Attempt::Append(writes))
    })
    .await?;
    Ok(match lock(&intent).take() {
        Some((intent, charge, expires_at)) => Moved::AwaitingPayment {
            started: StartedPayment {
                payment_id: top_up.ok_or(CommandError::Payment(PaymentError::NotCreated))?,
                provider_ref: intent.provider_ref,
                client_secret: intent.client_secret,
                executed,
            },
            charge,
            expires_at,
        },
        None => Moved::Done(executed),
    })
}

/// Ends a pending move without moving (`why`: its top-up failed, or it expired), and releases
/// the seats the new slot held for it, in one append. A top-up that succeeds afterwards is
/// refunded in full (see [`crate::payment::record_payment_succeeded`]).
pub async fn abandon_move(
    store: &dyn EventStore,
    booking_id: BookingId,
    payment_id: Option<PaymentId>,
    why: MoveAbandoned,
    ctx: &CommandContext,
) -> Result<Executed, CommandError> {
    decide_and_append(store, || async move {
        let (booking, b) = load_booking(store, booking_id, ctx.command_id).await?;
        if let Some(done) = replayed(&[&booking.caused_by_command]) {
            return Ok(Attempt::Replayed(done));
        }
        let m = b
            .pending_move
            .filter(|m| payment_id.is_none_or(|p| p == m.payment_id))
            .ok_or(tessera_domain::booking::BookingError::NoPendingMove)?;
        let events = BookingAggregate::decide(
            &booking.state,
            &BookingCommand::AbandonMove {
                payment_id: m.payment_id,
                why,
                now: ctx.now,
            },
        )?;
        let slot =
            load::<SlotAggregate>(store, stream_of::<SlotAggregate>(m.to_slot), ctx.command_id)
                .await?;
        let mut writes = vec![write_for(&booking, &events, ctx)?];
        writes.extend(release_if_held(&slot, booking_id, ctx)?);
        Ok(Attempt::Append(writes))
    })
    .await
}

/// The slot's `SeatsReleased` for the booking, if the slot still holds its seats (a cancelled
/// slot released them already).
pub(crate) fn release_if_held(
    slot: &Loaded<SlotAggregate>,
    booking_id: BookingId,
    ctx: &CommandContext,
) -> Result<Option<StreamWrite>, CommandError> {
    match SlotAggregate::decide(&slot.state, &SlotCommand::ReleaseSeats { booking_id }) {
        Ok(released) => Ok(Some(write_for(slot, &released, ctx)?)),
        Err(SlotError::NotHolding(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
