//! Money to providers: payout accounts, commission rates, the release of a provider's share
//! once the slot ended and the dispute window passed, and the transfers and reversals that
//! follow (ADR 0015, `docs/money.md`).
//!
//! Every gateway call is decided on the log first (`TransferStarted`, `ReversalStarted`), then
//! sent with an idempotency key derived from that decision, then its answer recorded. A crash in
//! between leaves the decision on the log; whoever settles the payment next re-sends the same
//! request (the gateway answers with the same object) and records it. Step command ids derive
//! from the payment and its stream version, so two settlements racing on one payment decide the
//! same thing and one of them is a replay.

use tessera_domain::booking::BookingStatus;
use tessera_domain::payment::{PaymentAggregate, PaymentCommand, PaymentError, PaymentState};
use tessera_domain::provider::{ProviderAggregate, ProviderCommand, ProviderError, ProviderState};
use tessera_domain::values::{BookingId, PaymentId, UserId, derived_id};

use crate::error::CommandError;
use crate::gateway::{GatewayError, PaymentGateway, ReversalRequest, TransferRequest};
use crate::handler::{CommandContext, Executed, execute, load, stream_of};
use tessera_log::store::EventStore;

/// A provider's payout account as the provider sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PayoutAccountView {
    pub provider: ProviderState,
    /// Where to finish onboarding, while it is not finished.
    pub onboarding_url: Option<String>,
}

/// The provider's terms and account, as the log has them.
pub async fn provider_state(
    store: &dyn EventStore,
    provider_id: UserId,
) -> Result<ProviderState, CommandError> {
    Ok(load::<ProviderAggregate>(
        store,
        stream_of::<ProviderAggregate>(provider_id),
        uuid::Uuid::nil(),
    )
    .await?
    .state)
}

/// Opens the provider's payout account at the gateway (once: the gateway request is keyed by
/// the provider, the log refuses a second account) and returns where to onboard. Asked again,
/// it returns the account with a fresh onboarding link.
pub async fn open_payout_account(
    store: &dyn EventStore,
    gateway: &dyn PaymentGateway,
    provider_id: UserId,
    email: &str,
    ctx: &CommandContext,
) -> Result<PayoutAccountView, CommandError> {
    let state = provider_state(store, provider_id).await?;
    if let Some(a) = state.provider().and_then(|p| p.account.as_ref()) {
        let onboarding_url = if state.can_receive_transfers() {
            None
        } else {
            gateway.onboarding_link(&a.account_ref).await?
        };
        return Ok(PayoutAccountView {
            provider: state,
            onboarding_url,
        });
    }
    let account = gateway
        .open_account(provider_id, email, &format!("account-{provider_id}"))
        .await?;
    let stream = stream_of::<ProviderAggregate>(provider_id);
    match execute::<ProviderAggregate>(
        store,
        stream.clone(),
        &ProviderCommand::StartOnboarding {
            provider_id,
            gateway: gateway.name().to_owned(),
            account_ref: account.account_ref.clone(),
        },
        ctx,
    )
    .await
    {
        Ok(_) | Err(CommandError::Provider(ProviderError::AccountExists)) => {}
        Err(e) => return Err(e),
    }
    if account.active {
        let ctx = step(ctx, "activate");
        account_updated(store, provider_id, &account.account_ref, true, None, &ctx).await?;
    }
    Ok(PayoutAccountView {
        provider: provider_state(store, provider_id).await?,
        onboarding_url: account.onboarding_url.filter(|_| !account.active),
    })
}

/// The gateway reports a connected account's state; a repeated report changes nothing.
pub async fn account_updated(
    store: &dyn EventStore,
    provider_id: UserId,
    account_ref: &str,
    active: bool,
    reason: Option<String>,
    ctx: &CommandContext,
) -> Result<(), CommandError> {
    let command = if active {
        ProviderCommand::Activate {
            account_ref: account_ref.to_owned(),
        }
    } else {
        ProviderCommand::Restrict {
            account_ref: account_ref.to_owned(),
            reason: reason.unwrap_or_else(|| "restricted by the gateway".into()),
        }
    };
    match execute::<ProviderAggregate>(
        store,
        stream_of::<ProviderAggregate>(provider_id),
        &command,
        ctx,
    )
    .await
    {
        Ok(_) | Err(CommandError::Provider(ProviderError::StatusUnchanged(_))) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Records what the gateway reports of a payout from the provider's connected account to its
/// bank. Reports arrive twice and out of order: the domain keeps the one that decides (a
/// failure is final, a repeat changes nothing).
pub async fn record_payout(
    store: &dyn EventStore,
    provider_id: UserId,
    account_ref: &str,
    payout_ref: &str,
    amount: tessera_domain::values::Money,
    failure: Option<String>,
    ctx: &CommandContext,
) -> Result<(), CommandError> {
    let outcome = match failure {
        None => tessera_domain::provider::PayoutOutcome::Paid,
        Some(reason) => tessera_domain::provider::PayoutOutcome::Failed { reason },
    };
    execute::<ProviderAggregate>(
        store,
        stream_of::<ProviderAggregate>(provider_id),
        &ProviderCommand::RecordPayout {
            account_ref: account_ref.to_owned(),
            payout_ref: payout_ref.to_owned(),
            amount,
            outcome,
        },
        ctx,
    )
    .await?;
    Ok(())
}

/// Sets a provider's commission for bookings placed from now on (an admin's decision, with a
/// reason; placed bookings keep theirs).
pub async fn set_commission(
    store: &dyn EventStore,
    provider_id: UserId,
    commission_bp: u32,
    ctx: &CommandContext,
) -> Result<Executed, CommandError> {
    let reason = ctx
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .ok_or(CommandError::ReasonRequired)?
        .to_owned();
    execute::<ProviderAggregate>(
        store,
        stream_of::<ProviderAggregate>(provider_id),
        &ProviderCommand::SetCommission {
            provider_id,
            commission_bp,
            reason,
        },
        ctx,
    )
    .await
}

/// Releases the provider's share of a delivered booking's payment (the slot ended and the
/// dispute window passed): completed bookings (no-shows included: the seats were kept for
/// them), and cancelled ones that kept a fee.
pub async fn release_funds(
    store: &dyn EventStore,
    booking_id: BookingId,
    ctx: &CommandContext,
) -> Result<Executed, CommandError> {
    let (_, b) = crate::booking::load_booking(store, booking_id, ctx.command_id).await?;
    if !matches!(
        b.status,
        BookingStatus::Completed
            | BookingStatus::NoShow
            | BookingStatus::Cancelled
            | BookingStatus::Refunded
    ) {
        return Err(tessera_domain::booking::BookingError::InvalidTransition {
            from: b.status,
            action: "release its provider's share",
        }
        .into());
    }
    let payments = b.payments();
    if payments.is_empty() {
        return Err(CommandError::Payment(PaymentError::NotSucceeded));
    }
    let provider_id = match b.provider_id {
        Some(p) => p,
        // Bookings placed before v2 of `BookingPlaced` name no provider: the slot does.
        None => {
            let slot = load::<tessera_domain::slot::SlotAggregate>(
                store,
                stream_of::<tessera_domain::slot::SlotAggregate>(b.slot_id),
                uuid::Uuid::nil(),
            )
            .await?;
            match &slot.state {
                tessera_domain::slot::SlotState::Scheduled(s) => s.provider_id,
                tessera_domain::slot::SlotState::New => {
                    return Err(CommandError::NotFound {
                        what: "slot",
                        id: b.slot_id.to_string(),
                    });
                }
            }
        }
    };
    // Each payment is released on its own stream: the first under the command's id, a
    // move's top-up under one derived from it (each a replay when run again).
    let mut last: Option<Result<Executed, CommandError>> = None;
    for (i, payment_id) in payments.into_iter().enumerate() {
        let step = if i == 0 {
            ctx.clone()
        } else {
            step(ctx, &format!("release:{}", payment_id.0))
        };
        let executed = execute::<PaymentAggregate>(
            store,
            stream_of::<PaymentAggregate>(payment_id),
            &PaymentCommand::Release {
                provider_id,
                commission_bp: b.commission_bp,
            },
            &step,
        )
        .await;
        match executed {
            Ok(e) => last = Some(Ok(e)),
            // A payment refunded in full has nothing to release; the others still may.
            Err(
                e @ CommandError::Payment(
                    PaymentError::NothingToRelease | PaymentError::AlreadyReleased,
                ),
            ) => {
                if last.is_none() {
                    last = Some(Err(e));
                }
            }
            Err(e) => return Err(e),
        }
    }
    last.unwrap_or(Err(CommandError::Payment(PaymentError::NotSucceeded)))
}

/// What [`settle`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settled {
    pub transfers: u32,
    pub reversals: u32,
    /// The provider cannot receive transfers yet: the payment waits for its account.
    pub awaiting_account: bool,
}

/// Brings a released payment's transfers in line with the provider's share: finishes what is
/// under way, takes back what a refund removed (before the refund goes out), and sends what is
/// due if the provider's account can receive it (otherwise the payment waits on the
/// provider's stream). Safe to call any number of times, from any process.
pub async fn settle(
    store: &dyn EventStore,
    gateway: &dyn PaymentGateway,
    payment_id: PaymentId,
    ctx: &CommandContext,
) -> Result<Settled, CommandError> {
    let mut done = Settled::default();
    let stream = stream_of::<PaymentAggregate>(payment_id);
    // Each round moves the payment one step; a handful covers any history.
    for _ in 0..16 {
        let loaded = load::<PaymentAggregate>(store, stream.clone(), uuid::Uuid::nil()).await?;
        let PaymentState::Created(p) = &loaded.state else {
            return Err(CommandError::NotFound {
                what: "payment",
                id: payment_id.to_string(),
            });
        };
        let Some(escrow) = &p.escrow else {
            return Ok(done);
        };
        // Ids of this step: the same for whoever settles this payment at this version.
        let step_id = |what: &str| {
            derived_id(
                payment_id.0,
                format!("{what}@{}", loaded.version).as_bytes(),
            )
        };
        let step_ctx = |what: &str| {
            let mut c = ctx.clone();
            c.command_id = step_id(what);
            c
        };
        let run = |command: PaymentCommand, what: &'static str| {
            let c = step_ctx(what);
            let stream = stream.clone();
            async move { execute::<PaymentAggregate>(store, stream, &command, &c).await }
        };
        if let Some((transfer_id, amount)) = escrow.pending_transfer {
            let destination = destination(store, escrow.provider_id).await?;
            let outcome = match destination {
                Some(destination) => {
                    gateway
                        .transfer(&TransferRequest {
                            payment_ref: p.provider_ref.clone(),
                            destination,
                            booking_id: p.booking_id,
                            transfer_id,
                            amount: tessera_domain::values::Money {
                                minor: amount,
                                currency: p.amount.currency,
                            },
                            idempotency_key: format!("transfer-{transfer_id}"),
                        })
                        .await
                }
                None => Err(GatewayError::Refused(
                    "the provider has no payout account".into(),
                )),
            };
            match outcome {
                Ok(transfer_ref) => {
                    run(
                        PaymentCommand::CompleteTransfer {
                            transfer_id,
                            transfer_ref,
                        },
                        "complete-transfer",
                    )
                    .await?;
                    done.transfers += 1;
                }
                Err(GatewayError::Refused(reason)) => {
                    tracing::warn!(%payment_id, %reason, "the gateway refused a transfer; it waits for the provider's account");
                    run(
                        PaymentCommand::FailTransfer {
                            transfer_id,
                            reason,
                        },
                        "fail-transfer",
                    )
                    .await?;
                    await_account(store, escrow.provider_id, payment_id, &step_ctx("await"))
                        .await?;
                    done.awaiting_account = true;
                    return Ok(done);
                }
                Err(other) => return Err(other.into()),
            }
            continue;
        }
        if let Some((reversal_id, transfer_id, amount)) = escrow.pending_reversal {
            let transfer_ref = escrow
                .transfers
                .iter()
                .find(|t| t.transfer_id == transfer_id)
                .map(|t| t.transfer_ref.clone())
                .unwrap_or_default();
            match gateway
                .reverse_transfer(&ReversalRequest {
                    transfer_ref,
                    reversal_id,
                    amount: tessera_domain::values::Money {
                        minor: amount,
                        currency: p.amount.currency,
                    },
                    idempotency_key: format!("reversal-{reversal_id}"),
                })
                .await
            {
                Ok(reversal_ref) => {
                    run(
                        PaymentCommand::CompleteReversal {
                            reversal_id,
                            reversal_ref,
                        },
                        "complete-reversal",
                    )
                    .await?;
                    done.reversals += 1;
                }
                Err(GatewayError::Refused(reason)) => {
                    // The refund still goes out; the ledger check then shows what the
                    // provider owes (its payable below zero) until an admin settles it.
                    tracing::error!(%payment_id, %reason, "the gateway refused a transfer reversal");
                    run(
                        PaymentCommand::FailReversal {
                            reversal_id,
                            reason,
                        },
                        "fail-reversal",
                    )
                    .await?;
                    return Ok(done);
                }
                Err(other) => return Err(other.into()),
            }
            continue;
        }
        if p.reversal_due() > 0 {
            let reversal_id = step_id("reversal");
            run(
                PaymentCommand::StartReversal { reversal_id },
                "start-reversal",
            )
            .await?;
            continue;
        }
        if p.transfer_due() > 0 {
            if p.provider != gateway.name() {
                // Paid through another gateway (a platform that moved from the simulated one to
                // Stripe): its money is not at this gateway to be transferred.
                tracing::warn!(%payment_id, paid_through = %p.provider, gateway = gateway.name(), "a released payment cannot be transferred through this gateway");
                return Ok(done);
            }
            let provider = provider_state(store, escrow.provider_id).await?;
            if !provider.can_receive_transfers() {
                await_account(store, escrow.provider_id, payment_id, &step_ctx("await")).await?;
                done.awaiting_account = true;
                return Ok(done);
            }
            let transfer_id = step_id("transfer");
            run(
                PaymentCommand::StartTransfer { transfer_id },
                "start-transfer",
            )
            .await?;
            continue;
        }
        return Ok(done);
    }
    Err(CommandError::Contention { attempts: 16 })
}

/// Settles every payment that waited for the provider's account (it just became active).
pub async fn settle_awaiting(
    store: &dyn EventStore,
    gateway: &dyn PaymentGateway,
    provider_id: UserId,
    ctx: &CommandContext,
) -> Result<Settled, CommandError> {
    let state = provider_state(store, provider_id).await?;
    let mut total = Settled::default();
    let Some(p) = state.provider() else {
        return Ok(total);
    };
    for payment_id in &p.waiting {
        let s = settle(store, gateway, *payment_id, ctx).await?;
        total.transfers += s.transfers;
        total.reversals += s.reversals;
        total.awaiting_account |= s.awaiting_account;
    }
    Ok(total)
}

/// The provider's connected account, if it can receive transfers.
async fn destination(
    store: &dyn EventStore,
    provider_id: UserId,
) -> Result<Option<String>, CommandError> {
    let state = provider_state(store, provider_id).await?;
    Ok(state
        .provider()
        .filter(|p| p.can_receive_transfers())
        .and_then(|p| p.account.as_ref())
        .map(|a| a.account_ref.clone()))
}

async fn await_account(
    store: &dyn EventStore,
    provider_id: UserId,
    payment_id: PaymentId,
    ctx: &CommandContext,
) -> Result<(), CommandError> {
    execute::<ProviderAggregate>(
        store,
        stream_of::<ProviderAggregate>(provider_id),
        &ProviderCommand::AwaitAccount {
            provider_id,
            payment_id,
        },
        ctx,
    )
    .await
    .map(|_| ())
}

/// A sub-step of `ctx`'s command: its own id, the same actor, correlation and cause.
fn step(ctx: &CommandContext, what: &str) -> CommandContext {
    let mut c = ctx.clone();
    c.command_id = derived_id(ctx.command_id, what.as_bytes());
    c
}
