//! Payment commands: start a payment for a held booking, record what the provider reports, and
//! carry refunds to the provider.
//!
//! Outcomes (all appended atomically across the payment, booking and slot streams):
//! - succeeded, booking awaiting it → payment succeeded, booking confirmed, seats confirmed;
//! - succeeded after the hold expired → confirmed if the slot can still take the seats
//!   (re-held and confirmed), otherwise the whole amount is refunded;
//! - succeeded for a booking that was cancelled or is paid already → refunded in full;
//! - failed → payment failed, booking payable again until its hold lapses.

use std::sync::Mutex;
use tessera_domain::Aggregate;
use tessera_domain::booking::{BookingAggregate, BookingCommand, BookingStatus};
use tessera_domain::payment::{
    Payment, PaymentAggregate, PaymentCommand, PaymentError, PaymentState, RefundStatus,
};
use tessera_domain::slot::{SlotAggregate, SlotCommand, SlotState};
use tessera_domain::values::{BookingId, PaymentId, Seats, derived_id};

use uuid::Uuid;

use crate::booking::load_booking;
use crate::error::CommandError;
use crate::gateway::{GatewayError, Intent, IntentRequest, PaymentGateway, RefundRequest};
use crate::handler::{
    AggregateCache, Attempt, CommandContext, Executed, Loaded, decide_and_append, load,
    load_caught_up, replayed, stream_of, whole_if_retried, write_for,
};
use tessera_log::store::{EventStore, StreamWrite};

impl From<GatewayError> for CommandError {
    fn from(e: GatewayError) -> Self {
        match e {
            GatewayError::Refused(m) => CommandError::PaymentRefused(m),
            other => CommandError::GatewayUnavailable(other.to_string()),
        }
    }
}

/// A payment that was started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedPayment {
    pub payment_id: PaymentId,
    pub provider_ref: String,
    /// For Stripe: what the browser needs to confirm the payment.
    pub client_secret: Option<String>,
    pub executed: Executed,
}

/// Starts paying a held booking: creates the intent at the provider (idempotently: the command
/// id is the provider's idempotency key) and records it with the booking's move to
/// `PaymentPending`.
pub async fn start_payment(
    store: &dyn EventStore,
    gateway: &dyn PaymentGateway,
    booking_id: BookingId,
    card: Option<String>,
    ctx: &CommandContext,
) -> Result<StartedPayment, CommandError> {
    // The payment id derives from the command, so a retried command reuses it.
    let payment_id = PaymentId(derived_id(ctx.command_id, b"payment"));
    let intent: Mutex<Option<Intent>> = Mutex::new(None);
    let (card, intent_ref) = (&card, &intent);
    let executed = decide_and_append(store, || async move {
        let booking = load::<BookingAggregate>(
            store,
            stream_of::<BookingAggregate>(booking_id),
            ctx.command_id,
        )
        .await?;
        let payment = load::<PaymentAggregate>(
            store,
            stream_of::<PaymentAggregate>(payment_id),
            ctx.command_id,
        )
        .await?;
        let b = booking
            .state
            .booking()
            .ok_or_else(|| CommandError::NotFound {
                what: "booking",
                id: booking_id.to_string(),
            })?;
        if let Some(done) = replayed(&[&booking.caused_by_command, &payment.caused_by_command]) {
            let p = payment
                .state
                .payment()
                .ok_or(CommandError::Payment(PaymentError::NotCreated))?;
            *lock(intent_ref) = Some(Intent {
                provider_ref: p.provider_ref.clone(),
                client_secret: None,
            });
            return Ok(Attempt::Replayed(done));
        }
        require_confirmed_address(store, b.customer_id).await?;
        let booking_events = BookingAggregate::decide(
            &booking.state,
            &BookingCommand::StartPayment {
                payment_id,
                now: ctx.now,
            },
        )?;
        // Idempotent at the provider: the command id is the idempotency key.
        let created = gateway
            .create_intent(&IntentRequest {
                payment_id,
                booking_id,
                amount: b.total,
                card: card.clone(),
                idempotency_key: ctx.command_id.to_string(),
            })
            .await?;
        let payment_events = PaymentAggregate::decide(
            &payment.state,
            &PaymentCommand::CreateIntent {
                id: payment_id,
                booking_id,
                customer_id: b.customer_id,
                amount: b.total,
                provider: gateway.name().to_owned(),
                provider_ref: created.provider_ref.clone(),
            },
        )?;
        *lock(intent_ref) = Some(created);
        Ok(Attempt::Append(vec![
            write_for(&booking, &booking_events, ctx)?,
            write_for(&payment, &payment_events, ctx)?,
        ]))
    })
    .await?;
    let intent = lock(&intent)
        .take()
        .ok_or(CommandError::Payment(PaymentError::NotCreated))?;
    Ok(StartedPayment {
        payment_id,
        provider_ref: intent.provider_ref,
        client_secret: intent.client_secret,
        executed,
    })
}

/// Paying needs a confirmed address (accounts the platform trusts are born confirmed).
pub(crate) async fn require_confirmed_address(
    store: &dyn EventStore,
    customer_id: tessera_domain::values::UserId,
) -> Result<(), CommandError> {
    let customer = load::<tessera_domain::user::UserAggregate>(
        store,
        stream_of::<tessera_domain::user::UserAggregate>(customer_id),
        Uuid::nil(),
    )
    .await?;
    if let tessera_domain::user::UserState::Registered(u) = &customer.state
        && !u.email_verified
    {
        return Err(tessera_domain::user::UserError::EmailUnverified.into());
    }
    Ok(())
}

/// Records that the provider collected the payment, and what follows for the booking.
/// Run it with a command id derived from the provider's event id: a redelivered webhook is then
/// a replay.
pub async fn record_payment_succeeded(
    store: &dyn EventStore,
    payment_id: PaymentId,
    ctx: &CommandContext,
) -> Result<Executed, CommandError> {
    record_payment_succeeded_cached(store, None, payment_id, ctx).await
}

/// [`record_payment_succeeded`] in the slot's turn, with its state caught up from `cache`: a
/// confirmation on a slot that is selling out queues with the holds instead of racing them,
/// and reads only the slot's events since it was last decided on.
pub async fn record_payment_succeeded_cached(
    store: &dyn EventStore,
    cache: Option<&AggregateCache>,
    payment_id: PaymentId,
    ctx: &CommandContext,
) -> Result<Executed, CommandError> {
    // In the slot's turn; what was read to find the slot serves the first attempt (the
    // streams' versions guard its append).
    let mut preloaded = None;
    let _turn = match cache {
        Some(cache) => {
            let payment = load_payment(store, payment_id, ctx).await?;
            let booking = load_booking(store, payment.1.booking_id, ctx.command_id).await?;
            let slot = stream_of::<SlotAggregate>(booking.1.slot_id);
            preloaded = Some((payment, booking));
            Some(cache.turn(&slot).await)
        }
        None => None,
    };
    decide_and_append(store, || {
        let preloaded = preloaded.take();
        async move {
            let ((payment, p), (booking, b)) = match preloaded {
                Some(loaded) => loaded,
                None => {
                    let payment = load_payment(store, payment_id, ctx).await?;
                    let booking = load_booking(store, payment.1.booking_id, ctx.command_id).await?;
                    (payment, booking)
                }
            };
            let slot = load_caught_up::<SlotAggregate>(
                store,
                cache,
                stream_of::<SlotAggregate>(b.slot_id),
                ctx.command_id,
            )
            .await?;
            let retried =
                !payment.caused_by_command.is_empty() || !booking.caused_by_command.is_empty();
            let slot = whole_if_retried(store, slot, retried, ctx.command_id).await?;
            if let Some(done) = replayed(&[
                &payment.caused_by_command,
                &booking.caused_by_command,
                &slot.caused_by_command,
            ]) {
                return Ok(Attempt::Replayed(done));
            }
            let mut state = payment.state.clone();
            let mut payment_events =
                PaymentAggregate::decide(&state, &PaymentCommand::MarkSucceeded)?;
            for e in &payment_events {
                state = PaymentAggregate::evolve(state, e);
            }
            let mut writes = Vec::new();
            let ours = b.payment_id == Some(payment_id);
            let confirmed = match b.status {
                BookingStatus::PaymentPending if ours => {
                    let booking_events = BookingAggregate::decide(
                        &booking.state,
                        &BookingCommand::ConfirmPayment {
                            payment_id,
                            amount: p.amount,
                        },
                    )?;
                    let slot_events = SlotAggregate::decide(
                        &slot.state,
                        &SlotCommand::ConfirmSeats { booking_id: b.id },
                    )?;
                    writes.push(write_for(&booking, &booking_events, ctx)?);
                    writes.push(write_for(&slot, &slot_events, ctx)?);
                    true
                }
                // The top-up of a move to a dearer slot: the move happens, in this append.
                BookingStatus::Confirmed
                    if b.pending_move.is_some_and(|m| m.payment_id == payment_id) =>
                {
                    match complete_move(store, &booking, &b, &slot, payment_id, p.amount, ctx)
                        .await?
                    {
                        Some(moved) => {
                            writes.extend(moved);
                            true
                        }
                        None => false,
                    }
                }
                BookingStatus::Expired if ours => match late_seats(&slot, b.id, b.seats, ctx)? {
                    Some(slot_events) => {
                        let booking_events = BookingAggregate::decide(
                            &booking.state,
                            &BookingCommand::AcceptLatePayment {
                                payment_id,
                                amount: p.amount,
                            },
                        )?;
                        writes.push(write_for(&booking, &booking_events, ctx)?);
                        writes.push(write_for(&slot, &slot_events, ctx)?);
                        true
                    }
                    None => false,
                },
                _ => false,
            };
            if !confirmed {
                // Nothing to confirm: the customer gets the whole amount back.
                let refund_id = derived_id(ctx.command_id, b"refund");
                payment_events.extend(PaymentAggregate::decide(
                    &state,
                    &PaymentCommand::RequestRefund {
                        refund_id,
                        amount: p.amount,
                    },
                )?);
            }
            writes.insert(0, write_for(&payment, &payment_events, ctx)?);
            Ok(Attempt::Append(writes))
        }
    })
    .await
}

/// The writes that complete a pending move whose top-up succeeded: the booking's
/// `BookingRescheduled`, the new slot's `SeatsConfirmed` and the old slot's `SeatsReleased`.
/// `None` when the move can no longer happen (a slot started, or the new slot was cancelled
/// and released the seats): the top-up is then refunded.
async fn complete_move(
    store: &dyn EventStore,
    booking: &Loaded<BookingAggregate>,
    b: &tessera_domain::booking::Booking,
    old: &Loaded<SlotAggregate>,
    payment_id: PaymentId,
    amount: tessera_domain::values::Money,
    ctx: &CommandContext,
) -> Result<Option<Vec<StreamWrite>>, CommandError> {
    let Some(m) = b.pending_move else {
        return Ok(None);
    };
    let Ok(booking_events) = BookingAggregate::decide(
        &booking.state,
        &BookingCommand::CompleteMove {
            payment_id,
            amount,
            now: ctx.now,
        },
    ) else {
        return Ok(None);
    };
    let to =
        load::<SlotAggregate>(store, stream_of::<SlotAggregate>(m.to_slot), ctx.command_id).await?;
    let Ok(confirmed) =
        SlotAggregate::decide(&to.state, &SlotCommand::ConfirmSeats { booking_id: b.id })
    else {
        return Ok(None);
    };
    let mut writes = vec![
        write_for(booking, &booking_events, ctx)?,
        write_for(&to, &confirmed, ctx)?,
    ];
    writes.extend(crate::booking::release_if_held(old, b.id, ctx)?);
    Ok(Some(writes))
}

/// The slot events that re-hold and confirm a late-paid booking's seats, if they are still free.
fn late_seats(
    slot: &Loaded<SlotAggregate>,
    booking_id: BookingId,
    seats: u32,
    ctx: &CommandContext,
) -> Result<Option<Vec<tessera_domain::slot::SlotEvent>>, CommandError> {
    let SlotState::Scheduled(_) = &slot.state else {
        return Ok(None);
    };
    let seats = Seats::new(seats).map_err(|e| CommandError::Codec(e.to_string()))?;
    let Ok(held) = SlotAggregate::decide(
        &slot.state,
        &SlotCommand::HoldSeats {
            booking_id,
            seats,
            now: ctx.now,
            allow_overbook: false,
        },
    ) else {
        return Ok(None);
    };
    let after = held.iter().fold(slot.state.clone(), SlotAggregate::evolve);
    let mut events = held;
    events.extend(SlotAggregate::decide(
        &after,
        &SlotCommand::ConfirmSeats { booking_id },
    )?);
    Ok(Some(events))
}

/// Records that the provider could not collect the payment: the booking is payable again.
pub async fn record_payment_failed(
    store: &dyn EventStore,
    payment_id: PaymentId,
    reason: &str,
    ctx: &CommandContext,
) -> Result<Executed, CommandError> {
    decide_and_append(store, || async move {
        let (payment, p) = load_payment(store, payment_id, ctx).await?;
        let booking = load::<BookingAggregate>(
            store,
            stream_of::<BookingAggregate>(p.booking_id),
            ctx.command_id,
        )
        .await?;
        if let Some(done) = replayed(&[&payment.caused_by_command, &booking.caused_by_command]) {
            return Ok(Attempt::Replayed(done));
        }
        let payment_events = PaymentAggregate::decide(
            &payment.state,
            &PaymentCommand::MarkFailed {
                reason: reason.to_owned(),
            },
        )?;
        let mut writes: Vec<StreamWrite> = vec![write_for(&payment, &payment_events, ctx)?];
        // A failed top-up ends its move, and the new slot's seats go back.
        if let Some(m) = booking
            .state
            .booking()
            .and_then(|b| b.pending_move)
            .filter(|m| m.payment_id == payment_id)
        {
            let booking_events = BookingAggregate::decide(
                &booking.state,
                &BookingCommand::AbandonMove {
                    payment_id,
                    why: tessera_domain::booking::MoveAbandoned::PaymentFailed,
                    now: ctx.now,
                },
            )?;
            writes.push(write_for(&booking, &booking_events, ctx)?);
            let to =
                load::<SlotAggregate>(store, stream_of::<SlotAggregate>(m.to_slot), ctx.command_id)
                    .await?;
            writes.extend(crate::booking::release_if_held(&to, p.booking_id, ctx)?);
            return Ok(Attempt::Append(writes));
        }
        let pending = booking.state.booking().is_some_and(|b| {
            b.status == BookingStatus::PaymentPending && b.payment_id == Some(payment_id)
        });
        if pending {
            let booking_events = BookingAggregate::decide(
                &booking.state,
                &BookingCommand::FailPayment { payment_id },
            )?;
            writes.push(write_for(&booking, &booking_events, ctx)?);
        }
        Ok(Attempt::Append(writes))
    })
    .await
}

/// Asks for a refund of `amount` of a booking's payments (a paid cancellation, an admin's
/// compensation). The refund itself is carried to the provider by [`send_refund`].
///
/// A booking moved to a dearer slot has more than one payment: the refund comes from the
/// newest first (a top-up, then the first payment), each part a `RefundRequested` on its own
/// payment, all in one append. More than the payments allow is refused.
pub async fn request_refund(
    store: &dyn EventStore,
    booking_id: BookingId,
    amount: tessera_domain::values::Money,
    ctx: &CommandContext,
) -> Result<Executed, CommandError> {
    refund_from_payments(store, booking_id, amount, false, ctx)
        .await?
        .ok_or(CommandError::Payment(PaymentError::InvalidRefund))
}

/// [`request_refund`] of what is owed back, up to what the payments still allow: refunds the
/// platform owes (a cancellation's, a cheaper move's) never fail for an admin's goodwill refund
/// still under way. Nothing is requested when nothing is left.
pub async fn request_owed_refund(
    store: &dyn EventStore,
    booking_id: BookingId,
    owed: tessera_domain::values::Money,
    ctx: &CommandContext,
) -> Result<Option<Executed>, CommandError> {
    refund_from_payments(store, booking_id, owed, true, ctx).await
}

/// Splits `amount` over the booking's payments, newest first, by what each still allows
/// (`capped`: up to what they allow in all; otherwise the first payment is asked for the rest,
/// and refuses what exceeds it). `None` when nothing is left to request.
async fn refund_from_payments(
    store: &dyn EventStore,
    booking_id: BookingId,
    amount: tessera_domain::values::Money,
    capped: bool,
    ctx: &CommandContext,
) -> Result<Option<Executed>, CommandError> {
    let (_, b) = load_booking(store, booking_id, ctx.command_id).await?;
    let payments = b.payments();
    let Some(&first) = payments.first() else {
        return Err(CommandError::Payment(PaymentError::NotSucceeded));
    };
    let nothing_left = std::sync::atomic::AtomicBool::new(false);
    let nothing_left_ref = &nothing_left;
    let payments_ref = &payments;
    let executed = decide_and_append(store, || async move {
        let mut loaded = Vec::with_capacity(payments_ref.len());
        for id in payments_ref {
            loaded.push(
                load::<PaymentAggregate>(store, stream_of::<PaymentAggregate>(*id), ctx.command_id)
                    .await?,
            );
        }
        let caused: Vec<&[tessera_log::store::RecordedEvent]> = loaded
            .iter()
            .map(|l| l.caused_by_command.as_slice())
            .collect();
        if let Some(done) = replayed(&caused) {
            return Ok(Attempt::Replayed(done));
        }
        let mut left = amount.minor;
        let mut writes = Vec::new();
        for (id, payment) in payments_ref.iter().zip(&loaded).rev() {
            let room = payment
                .state
                .payment()
                .map_or(0, |p| (p.amount.minor - p.committed_refunds()).max(0));
            let take = if *id == first && !capped {
                left
            } else {
                left.min(room)
            };
            if take == 0 {
                continue;
            }
            // The first payment's refund keeps the id it always had.
            let refund_id = if *id == first {
                derived_id(ctx.command_id, b"refund")
            } else {
                derived_id(ctx.command_id, format!("refund:{}", id.0).as_bytes())
            };
            let events = PaymentAggregate::decide(
                &payment.state,
                &PaymentCommand::RequestRefund {
                    refund_id,
                    amount: tessera_domain::values::Money {
                        minor: take,
                        ..amount
                    },
                },
            )?;
            writes.push(write_for(payment, &events, ctx)?);
            left -= take;
        }
        if writes.is_empty() {
            nothing_left_ref.store(true, std::sync::atomic::Ordering::Relaxed);
            return Err(CommandError::Payment(PaymentError::InvalidRefund));
        }
        Ok(Attempt::Append(writes))
    })
    .await;
    match executed {
        Err(_) if nothing_left.load(std::sync::atomic::Ordering::Relaxed) => Ok(None),
        other => other.map(Some),
    }
}

/// Cancels at the gateway the top-up of a move that ended without it (expired, withdrawn, its
/// slot cancelled), so nobody can pay it any more, and records it failed. A top-up the gateway
/// has already decided is left to its outcome: a success is refunded in full.
pub async fn cancel_top_up(
    store: &dyn EventStore,
    gateway: &dyn PaymentGateway,
    payment_id: PaymentId,
    ctx: &CommandContext,
) -> Result<Option<Executed>, CommandError> {
    let (_, p) = load_payment(store, payment_id, ctx).await?;
    if p.status != tessera_domain::payment::PaymentStatus::Pending {
        return Ok(None);
    }
    match gateway.cancel_intent(&p.provider_ref).await {
        Ok(()) => {}
        Err(GatewayError::Refused(reason)) => {
            tracing::info!(%payment_id, %reason, "the gateway keeps a top-up it has decided");
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    }
    match record_payment_failed(store, payment_id, "canceled: the move ended", ctx).await {
        Ok(executed) => Ok(Some(executed)),
        // Its outcome was recorded meanwhile.
        Err(CommandError::Payment(PaymentError::NotPending(_))) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Sends a requested refund to the provider and records the outcome; a succeeded refund is also
/// recorded on the booking (which becomes `Refunded` once a paid cancellation is refunded).
pub async fn send_refund(
    store: &dyn EventStore,
    gateway: &dyn PaymentGateway,
    payment_id: PaymentId,
    refund_id: Uuid,
    ctx: &CommandContext,
) -> Result<Executed, CommandError> {
    decide_and_append(store, || async move {
        let (payment, p) = load_payment(store, payment_id, ctx).await?;
        let booking = load::<BookingAggregate>(
            store,
            stream_of::<BookingAggregate>(p.booking_id),
            ctx.command_id,
        )
        .await?;
        if let Some(done) = replayed(&[&payment.caused_by_command, &booking.caused_by_command]) {
            return Ok(Attempt::Replayed(done));
        }
        let refund =
            p.refunds
                .iter()
                .find(|r| r.refund_id == refund_id)
                .ok_or(CommandError::Payment(PaymentError::UnknownRefund(
                    refund_id,
                )))?;
        if refund.status != RefundStatus::Requested {
            return Err(CommandError::Payment(PaymentError::RefundFinished(
                refund_id,
            )));
        }
        let outcome = gateway
            .refund(&RefundRequest {
                provider_ref: p.provider_ref.clone(),
                refund_id,
                amount: refund.amount,
                idempotency_key: format!("refund-{refund_id}"),
            })
            .await;
        let mut writes = Vec::new();
        match outcome {
            Ok(_) => {
                let events = PaymentAggregate::decide(
                    &payment.state,
                    &PaymentCommand::RefundSucceeded { refund_id },
                )?;
                writes.push(write_for(&payment, &events, ctx)?);
                // Only the booking's own payments count on it: a payment that confirmed nothing
                // (a duplicate, a late one, a move's top-up after the move lapsed) is returned
                // whole and leaves the booking's books alone.
                if booking
                    .state
                    .booking()
                    .is_some_and(|b| b.payments().contains(&payment_id))
                {
                    let events = BookingAggregate::decide(
                        &booking.state,
                        &BookingCommand::RecordRefund {
                            amount: refund.amount,
                        },
                    )?;
                    writes.push(write_for(&booking, &events, ctx)?);
                }
            }
            Err(GatewayError::Refused(reason)) => {
                let events = PaymentAggregate::decide(
                    &payment.state,
                    &PaymentCommand::RefundFailed { refund_id, reason },
                )?;
                writes.push(write_for(&payment, &events, ctx)?);
            }
            Err(other) => return Err(other.into()),
        }
        Ok(Attempt::Append(writes))
    })
    .await
}

/// A payment stream that must exist, with its state.
async fn load_payment(
    store: &dyn EventStore,
    payment_id: PaymentId,
    ctx: &CommandContext,
) -> Result<(Loaded<PaymentAggregate>, Payment), CommandError> {
    let payment = load::<PaymentAggregate>(
        store,
        stream_of::<PaymentAggregate>(payment_id),
        ctx.command_id,
    )
    .await?;
    match &payment.state {
        PaymentState::Created(p) => {
            let p = p.clone();
            Ok((payment, p))
        }
        PaymentState::New => Err(CommandError::NotFound {
            what: "payment",
            id: payment_id.to_string(),
        }),
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
