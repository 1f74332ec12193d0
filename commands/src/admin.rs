//! Compensating commands for admins. Each requires a reason and records the admin as the actor;
//! each is visible in the booking's history like any other event.

use tessera_domain::Aggregate;
use tessera_domain::booking::{BookingAggregate, BookingCommand, Canceller};
use tessera_domain::loyalty::{LoyaltyAggregate, LoyaltyCommand};
use tessera_domain::slot::{SlotAggregate, SlotCommand};
use tessera_domain::values::{BookingId, Money, Seats, UserId};

use crate::booking::load_booking;
use crate::booking::{BookingConfig, cancel_booking};
use crate::error::CommandError;
use crate::handler::{
    Attempt, CommandContext, Executed, decide_and_append, execute, load, replayed, stream_of,
    write_for,
};
use tessera_log::store::EventStore;

fn require_reason(ctx: &CommandContext) -> Result<(), CommandError> {
    match ctx.reason.as_deref().map(str::trim) {
        Some(r) if !r.is_empty() => Ok(()),
        _ => Err(CommandError::ReasonRequired),
    }
}

/// Refunds any amount up to what was paid (minus refunds already made or under way).
pub async fn refund(
    store: &dyn EventStore,
    booking_id: BookingId,
    amount: Money,
    ctx: &CommandContext,
) -> Result<Executed, CommandError> {
    require_reason(ctx)?;
    crate::payment::request_refund(store, booking_id, amount, ctx).await
}

/// Cancels a booking; with `waive_fee` the customer gets everything back, otherwise the
/// booking's policy applies.
pub async fn force_cancel(
    store: &dyn EventStore,
    booking_id: BookingId,
    admin: UserId,
    waive_fee: bool,
    ctx: &CommandContext,
) -> Result<Executed, CommandError> {
    require_reason(ctx)?;
    cancel_booking(store, booking_id, Canceller::Admin(admin), waive_fee, ctx).await
}

/// Moves a booking to another slot of its listing on the customer's behalf, under the same
/// rules as the customer's own move (see [`crate::booking::reschedule_booking`]).
pub async fn reschedule(
    store: &dyn EventStore,
    booking_id: BookingId,
    to: tessera_domain::values::SlotId,
    ctx: &CommandContext,
) -> Result<Executed, CommandError> {
    require_reason(ctx)?;
    // No one is there to pay a top-up: a dearer slot is refused (`RescheduleCostsMore`).
    match crate::booking::reschedule_booking(store, booking_id, to, None, ctx).await? {
        crate::booking::Moved::Done(executed) => Ok(executed),
        crate::booking::Moved::AwaitingPayment { .. } => Err(CommandError::Payment(
            tessera_domain::payment::PaymentError::NotCreated,
        )),
    }
}

/// Adds or removes points (never below zero).
pub async fn adjust_points(
    store: &dyn EventStore,
    user: UserId,
    delta: i64,
    ctx: &CommandContext,
) -> Result<Executed, CommandError> {
    require_reason(ctx)?;
    execute::<LoyaltyAggregate>(
        store,
        stream_of::<LoyaltyAggregate>(user),
        &LoyaltyCommand::Adjust { delta },
        ctx,
    )
    .await
}

/// Brings an expired booking back to `Held`, holding its seats again: only when the slot has
/// room, unless `allow_overbook` — an explicit decision recorded on the slot's event.
pub async fn reinstate(
    store: &dyn EventStore,
    config: &BookingConfig,
    booking_id: BookingId,
    allow_overbook: bool,
    ctx: &CommandContext,
) -> Result<Executed, CommandError> {
    require_reason(ctx)?;
    decide_and_append(store, || async move {
        let (booking, b) = load_booking(store, booking_id, ctx.command_id).await?;
        let slot =
            load::<SlotAggregate>(store, stream_of::<SlotAggregate>(b.slot_id), ctx.command_id)
                .await?;
        if let Some(done) = replayed(&[&booking.caused_by_command, &slot.caused_by_command]) {
            return Ok(Attempt::Replayed(done));
        }
        let booking_events = BookingAggregate::decide(
            &booking.state,
            &BookingCommand::Reinstate {
                now: ctx.now,
                hold_ttl: config.hold_ttl,
                allow_overbook,
            },
        )?;
        let seats = Seats::new(b.seats).map_err(|e| CommandError::Codec(e.to_string()))?;
        let slot_events = SlotAggregate::decide(
            &slot.state,
            &SlotCommand::HoldSeats {
                booking_id,
                seats,
                now: ctx.now,
                allow_overbook,
            },
        )?;
        Ok(Attempt::Append(vec![
            write_for(&booking, &booking_events, ctx)?,
            write_for(&slot, &slot_events, ctx)?,
        ]))
    })
    .await
}

/// GDPR erasure: records `UserErased` (with the admin and reason), then destroys the person's
/// data key, after which their e-mail, names and review texts read as placeholders everywhere.
/// Safe to retry: a second call finds the event already there and the key already gone.
pub async fn erase_user(
    store: &dyn EventStore,
    vault: &tessera_log::pii::Vault,
    user: UserId,
    ctx: &CommandContext,
) -> Result<Executed, CommandError> {
    require_reason(ctx)?;
    let executed = match crate::users::execute_keeping_an_admin(
        store,
        user,
        &tessera_domain::user::UserCommand::Erase,
        ctx,
    )
    .await
    {
        Ok(executed) => executed,
        // Erased before (perhaps by a call that failed before destroying the key): finish it.
        Err(CommandError::User(tessera_domain::user::UserError::Erased)) => {
            vault.shred(user.0, &ctx.actor).await?;
            return Err(CommandError::User(tessera_domain::user::UserError::Erased));
        }
        Err(e) => return Err(e),
    };
    vault.shred(user.0, &ctx.actor).await?;
    Ok(executed)
}
